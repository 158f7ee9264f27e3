"""REST API read latency (issue 6): list and get messages on a mailbox of 100,000 messages.

    .venv/bin/python bench/rest.py [--messages 100000] [--duration 30] [--connections 50]
        [--threads 2] [--targets sqlite,postgres-s3] [--scenarios list,list-deep,get,raw]
        [--warmup 3] [--profile DIR] [--keep] [--workdir DIR]

For each target a fresh haitatsu is prepared in a temporary directory: its config is written,
``bench/corpus.py`` creates the mailbox and loads ``--messages`` generated messages through the
store's delivery path (in-process, before the server starts), then ``twistd -n haitatsu``
starts on that data. Debian's ``wrk`` (package ``wrk``) then runs each scenario for
``--duration`` seconds over ``--connections`` keep-alive connections (``--threads`` wrk
threads), after ``--warmup`` seconds of the same load that are not counted:

- ``list``: ``GET /api/v1/mailboxes/:id/messages?limit=50``, the newest page;
- ``list-deep``: the same with the ``cursor`` of the middle of the mailbox (keyset pagination:
  it must cost what the first page costs);
- ``get``: ``GET /api/v1/messages/:id`` of a random message of the mailbox each time;
- ``raw``: ``GET /api/v1/messages/:id/raw`` of a random message.

``bench/rest.lua`` adds the service token, picks the random ids and reports requests, latency
percentiles and errors. The table gives requests/s, p50 and p99 per scenario; the target of the
issue is p99 under 20 ms for a page of 50 with 50 concurrent clients.

Targets: ``sqlite`` (the embedded default: SQLite + blob directory) and ``postgres-s3``
(PostgreSQL from ``HAITATSU_BENCH_POSTGRES_DSN``, default the local server, and S3 from a
``moto_server`` on loopback, as in ``bench/smtp_delivery.py``).

``--profile DIR`` samples the server with py-spy (``pip install py-spy``) during each scenario
and writes ``DIR/<target>-<scenario>.txt`` (collapsed stacks, one line a stack); sampling
slows the server, so figures of a profiled run are not the benchmark's.

Method and latest figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from peers import ROOT, Haitatsu, ensure_debian_packages, remove  # noqa: E402

#: Issue 6: p99 under 20 ms for a page of 50.
TARGET_P99_MS = 20.0
SCENARIOS = ("list", "list-deep", "get", "raw")
ADDRESS = "box@bench.test"


def make_target(name: str, workdir: str) -> Haitatsu:
    if name == "sqlite":
        return Haitatsu(workdir, label="haitatsu sqlite+dir")
    if name == "postgres-s3":
        from peers import postgres_s3_config

        return Haitatsu(
            workdir, extra_config=postgres_s3_config(workdir), label="haitatsu postgres+s3"
        )
    raise SystemExit(f"unknown target {name!r}")


def load_corpus(target: Haitatsu, args) -> dict:
    """Fill the target's store before it starts (``bench/corpus.py`` in its own process)."""
    out = os.path.join(target.workdir, "corpus.json")
    command = [
        sys.executable,
        os.path.join(HERE, "corpus.py"),
        "--config",
        target.write_config(),
        "--address",
        ADDRESS,
        "--messages",
        str(args.messages),
        "--batch",
        str(args.batch),
        "--concurrency",
        str(args.load_concurrency),
        "--out",
        out,
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    subprocess.run(command, check=True, env=env, cwd=target.workdir)
    with open(out) as f:
        return json.load(f)


def reused_corpus(workdir: str, args) -> dict | None:
    """The corpus a previous run with ``--workdir`` loaded there, if it has as many messages."""
    path = os.path.join(workdir, "corpus.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        corpus = json.load(f)
    return corpus if corpus["messages"] == args.messages else None


def encode_cursor(created_at: int, row_id: str) -> str:
    sys.path.insert(0, ROOT)
    from haitatsu.api.conventions import encode_cursor as encode

    return encode(created_at, row_id)


def scenario_paths(target: Haitatsu, corpus: dict) -> dict[str, tuple[str, str | None]]:
    """Each scenario's ``(path or path template, ids file or None)``."""
    ids_file = os.path.join(target.workdir, "ids.txt")
    with open(ids_file, "w") as f:
        f.write("\n".join(corpus["ids"]) + "\n")
    middle = len(corpus["ids"]) // 2
    cursor = encode_cursor(corpus["created_at"][middle], corpus["ids"][middle])
    base = f"/api/v1/mailboxes/{corpus['mailbox_id']}/messages?limit=50"
    return {
        "list": (base, None),
        "list-deep": (f"{base}&cursor={urllib.parse.quote(cursor)}", None),
        "get": ("/api/v1/messages/%s", ids_file),
        "raw": ("/api/v1/messages/%s/raw", ids_file),
    }


def check_answers(target: Haitatsu, corpus: dict, paths: dict) -> None:
    """One request of each scenario, checked, so the load runs against real answers."""
    ids = corpus["ids"]
    status, body = target.http("GET", paths["list"][0])
    page = json.loads(body)
    if status != 200 or [v["mailbox_message"]["id"] for v in page["data"]] != ids[:50]:
        raise RuntimeError("the first page is not the 50 newest messages")
    status, body = target.http("GET", paths["list-deep"][0])
    middle = len(ids) // 2
    got = [v["mailbox_message"]["id"] for v in json.loads(body)["data"]]
    if status != 200 or got != ids[middle + 1 : middle + 51]:
        raise RuntimeError("the deep page is not the 50 messages after the cursor")
    status, body = target.http("GET", paths["get"][0] % ids[-1])
    if status != 200 or json.loads(body)["data"]["mailbox_message"]["id"] != ids[-1]:
        raise RuntimeError("get message answered something else")
    status, body = target.http("GET", paths["raw"][0] % ids[-1])
    if status != 200 or not body.startswith(b"Return-Path:"):
        raise RuntimeError("raw message answered something else")


def wrk(target: Haitatsu, path: str, ids_file: str | None, seconds: float, args) -> dict:
    env = dict(
        os.environ,
        BENCH_TOKEN=target.token,
        BENCH_PATH=path,
        BENCH_IDS=ids_file or "",
        BENCH_THINK_MS=str(args.think_ms),
    )
    command = [
        "wrk",
        "--latency",
        "--timeout",
        "10s",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "-s",
        os.path.join(HERE, "rest.lua"),
        f"http://127.0.0.1:{target.http_port}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.strip() or result.stdout.strip()}")
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            figures = json.loads(line.split(" ", 1)[1])
            if not figures["requests"]:
                raise RuntimeError(f"wrk completed no request: {result.stdout}")
            figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
            figures["errors"] = sum(
                v for k, v in figures.items() if k.endswith(("_errors", "timeouts"))
            )
            return figures
    raise RuntimeError(f"no result from wrk: {result.stdout}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profiled(target: Haitatsu, name: str, args):
    """Start py-spy on the server for this scenario (``DIR/<target>-<scenario>.txt``, collapsed
    stacks), or return None."""
    if not args.profile:
        return None
    os.makedirs(args.profile, exist_ok=True)
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    output = os.path.join(args.profile, f"{target.name.split()[-1]}-{name}.txt")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(target.proc.pid),
            "--duration",
            str(max(1, round(args.duration))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            output,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_target(name: str, args) -> list[tuple]:
    if args.workdir and name == "sqlite":
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix=f"bench-rest-{name}-")
    target = make_target(name, workdir)
    rows = []
    try:
        corpus = reused_corpus(workdir, args) if args.workdir and name == "sqlite" else None
        if corpus is None:
            started = time.monotonic()
            corpus = load_corpus(target, args)
            loaded = time.monotonic() - started
            print(
                f"{target.name}: loaded {corpus['messages']} messages in {loaded:.0f} s "
                f"({corpus['messages'] / corpus['seconds']:.0f} msg/s)",
                flush=True,
            )
        else:
            target.write_config()
            print(f"{target.name}: reusing {corpus['messages']} messages in {workdir}")
        target.mailbox_id = corpus["mailbox_id"]
        target.start()
        paths = scenario_paths(target, corpus)
        check_answers(target, corpus, paths)
        for scenario in args.scenarios.split(","):
            path, ids_file = paths[scenario]
            if args.warmup:
                wrk(target, path, ids_file, args.warmup, args)
            spy = profiled(target, scenario, args)
            cpu = cpu_seconds(target.proc.pid)
            figures = wrk(target, path, ids_file, args.duration, args)
            figures["cpu_ms"] = (cpu_seconds(target.proc.pid) - cpu) * 1000 / figures["requests"]
            if spy is not None:
                spy.wait(60)
            if target.proc.poll() is not None:
                raise RuntimeError(
                    f"haitatsu exited ({target.proc.returncode}) during {scenario}; "
                    "see the kernel log (dmesg) for a crash"
                )
            row = (target.name, scenario, figures)
            rows.append(row)
            print_row(row, args)
    except BaseException:
        log = os.path.join(workdir, "twistd.log")
        if os.path.exists(log):
            print(open(log, errors="replace").read()[-3000:], file=sys.stderr)
        raise
    finally:
        target.stop()
        if args.keep or (args.workdir and name == "sqlite"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            remove(workdir)
    return rows


def print_row(row, args) -> None:
    name, scenario, f = row
    met = ""
    if scenario.startswith("list"):
        met = "yes" if f["p99_us"] / 1000 < TARGET_P99_MS else "NO"
    print(
        f"{name:>22}  {scenario:<10} {f['rps']:8.1f} req/s  p50 {f['p50_us'] / 1000:7.2f} ms  "
        f"p99 {f['p99_us'] / 1000:7.2f} ms  max {f['max_us'] / 1000:7.1f} ms  "
        f"server CPU {f['cpu_ms']:5.2f} ms/req  errors {f['errors']:>4}  "
        f"{met and 'p99 < 20 ms: ' + met}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=30, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3, help="uncounted seconds first")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--think-ms",
        type=int,
        default=0,
        help="pause of each connection before each request (0: back to back, as the issue)",
    )
    parser.add_argument("--targets", default="sqlite")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--batch", type=int, default=250, help="messages per delivery batch")
    parser.add_argument("--load-concurrency", type=int, default=8, help="batches in flight")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each scenario into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument(
        "--workdir",
        help="sqlite target only: use (and keep) this directory; a later run with the same "
        "--messages reuses the messages loaded there",
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    ensure_debian_packages("wrk")
    rows = []
    for name in args.targets.split(","):
        rows += run_target(name, args)
    print()
    think = f", {args.think_ms} ms pause before each request" if args.think_ms else ""
    print(
        f"{args.messages} messages, {args.connections} connections{think}, {args.duration:g} s "
        f"per scenario; target (issue 6): p99 < {TARGET_P99_MS:g} ms for a page of 50"
    )
    print(
        "| target | scenario | req/s | p50 ms | p99 ms | server CPU ms/req | errors | p99 < 20 ms |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, scenario, f in rows:
        met = ("yes" if f["p99_us"] / 1000 < TARGET_P99_MS else "no") if "list" in scenario else ""
        print(
            f"| {name} | {scenario} | {f['rps']:.1f} | {f['p50_us'] / 1000:.2f} | "
            f"{f['p99_us'] / 1000:.2f} | {f['cpu_ms']:.2f} | {f['errors']} | {met} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
