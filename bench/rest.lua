-- wrk script of bench/rest.py: the service token on every request, a path that is either fixed
-- (BENCH_PATH) or a template with one %s filled by a random id from the file BENCH_IDS, one id
-- a line; BENCH_THINK_MS, when set, is a pause of each connection before each request. At the
-- end one line "BENCH_RESULT {json}" with the figures bench/rest.py reads.

local token = os.getenv("BENCH_TOKEN") or ""
local path = os.getenv("BENCH_PATH") or "/"
local ids_file = os.getenv("BENCH_IDS") or ""
local think_ms = tonumber(os.getenv("BENCH_THINK_MS") or "0") or 0

wrk.headers["Authorization"] = "Bearer " .. token

local ids = {}
if ids_file ~= "" then
  for line in io.lines(ids_file) do
    if line ~= "" then
      ids[#ids + 1] = line
    end
  end
end

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_number", counter)
end

function init(args)
  -- Each thread has its own Lua state: seed them apart, or they ask for the same ids.
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  if #ids > 0 then
    return wrk.format(nil, string.format(path, ids[math.random(#ids)]))
  end
  return wrk.format(nil, path)
end

if think_ms > 0 then
  -- Each connection waits this long before its next request: clients that read what they got.
  function delay()
    return think_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
