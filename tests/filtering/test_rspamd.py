"""``rspamd`` through the chain against Debian's rspamd, started by the test on loopback with a
minimal configuration (no Redis, no stock rules: a few Lua rules of ours that give each action
on demand), smtplib against the MX. Skipped, with the reason, when rspamd is not installed or
does not start in time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from twisted.trial import unittest

from haitatsu.config.model import FilterSpec
from haitatsu.filtering.registry import builtin_package
from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec

builtin_package()  # haitatsu.filters, from filters/ in a checkout
from haitatsu.filters.rspamd import RspamdError  # noqa: E402

#: How long rspamd may take to answer /ping after it is started.
START_SECONDS = 60.0

RULES = r"""
local function subject(task) return task:get_subject() or '' end

-- "score=N" in the Subject: N points (the actions' thresholds are below).
rspamd_config:register_symbol{
  name = 'HAITATSU_SCORE', score = 1.0,
  callback = function(task)
    local n = subject(task):match('score=(%d+)')
    if n then return true, tonumber(n), 'subject' end
    return false
  end
}

-- "softreject" in the Subject: rspamd's soft reject with a message for the client.
rspamd_config:register_symbol{
  name = 'HAITATSU_SOFT', score = 0.0, type = 'prefilter', priority = 10,
  callback = function(task)
    if subject(task):find('softreject') then
      task:set_pre_result('soft reject', 'come back later please', 'haitatsu')
    end
  end
}

-- "milter" in the Subject: ask the MTA to add a header field.
rspamd_config:register_symbol{
  name = 'HAITATSU_MILTER', score = 0.0,
  callback = function(task)
    if subject(task):find('milter') then
      task:set_milter_reply({add_headers = {['X-Rspamd-Test'] = 'added'}})
      return true
    end
    return false
  end
}

-- Fires when the request headers carried the envelope: client, HELO, MAIL FROM, RCPTs.
rspamd_config:register_symbol{
  name = 'HAITATSU_ENVELOPE', score = 0.0,
  callback = function(task)
    local ip = task:get_from_ip()
    local from = task:get_from('smtp')
    local rcpts = task:get_recipients('smtp') or {}
    local seen = {}
    for _, r in ipairs(rcpts) do seen[r.addr] = true end
    if ip and tostring(ip) == '127.0.0.1'
        and task:get_helo() == 'client.test'
        and from and from[1] and from[1].addr == 'alice@example.org'
        and seen['bob@example.com']
        and #(task:get_queue_id() or '') == 26 then
      return true
    end
    return false
  end
}
"""

CONFIG = """
options {{
  pidfile = "{dir}/rspamd.pid";
  filters = "";
  url_tld = "{dir}/tld.dat";
  dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 0.2s; retransmits = 1; }}
  control_socket = "";
  history_file = "{dir}/history";
  cache_file = "{dir}/symbols.cache";
  tempdir = "{dir}";
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "error"; }}
lua = "{dir}/rules.lua";
actions {{
  reject = 15;
  rewrite_subject = 8;
  add_header = 6;
  greylist = 4;
  subject = "[SPAM] %s";
}}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; mime = true; }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rspamd:
    """A throwaway rspamd: its own directory, config, rules and loopback port."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="haitatsu-rspamd-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        # A short public suffix list: the full one takes rspamd a minute to compile.
        with open(os.path.join(self.dir, "tld.dat"), "w") as f:
            f.write("com\norg\nnet\ntest\nexample\n")
        with open(os.path.join(self.dir, "rules.lua"), "w") as f:
            f.write(RULES)
        config = os.path.join(self.dir, "rspamd.conf")
        with open(config, "w") as f:
            f.write(CONFIG.format(dir=self.dir, port=self.port, dns_port=free_port()))
        command = ["rspamd", "-f", "-c", config]
        if os.geteuid() == 0:
            command.append("-i")  # run the workers as root (a throwaway test instance)
        self.log = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise unittest.SkipTest(f"rspamd exited at start: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as answer:
                    if answer.read().strip() == b"pong":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise unittest.SkipTest(f"rspamd did not answer within {START_SECONDS:g} s")

    def log_tail(self) -> str:
        out = []
        for name in ("stdout.log", "rspamd.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                out.append(open(path, errors="replace").read()[-1500:])
        return " | ".join(out)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        if self.proc is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def subject(text: str) -> bytes:
    return MESSAGE.replace(b"Subject: hi", b"Subject: " + text.encode())


class RspamdTests(LoopbackMX):
    rspamd: Rspamd | None = None

    @classmethod
    def setUpClass(cls):
        if shutil.which("rspamd") is None:
            raise unittest.SkipTest("rspamd is not installed (Debian: apt-get install rspamd)")
        cls.rspamd = Rspamd()
        try:
            cls.rspamd.start()
        except BaseException:
            cls.rspamd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.rspamd is not None:
            cls.rspamd.stop()

    async def serve_rspamd(self, on_error="tempfail", **options):
        options.setdefault("url", self.rspamd.url)
        await self.serve(FilterSpec("rspamd", on_error=on_error, options=options))
        self.addCleanup(lambda: self.filtering.current.close())

    async def test_actions(self):
        await self.serve_rspamd()
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        [info] = await self.folder(self.bob)
        found = info.auth_results["rspamd"]
        self.assertEqual((found["action"], found["score"]), ("no action", 0.0))
        self.assertEqual(found["required_score"], 15.0)
        # The envelope reached rspamd in its request headers.
        self.assertIn("HAITATSU_ENVELOPE", found["symbols"])
        self.assertEqual(info.auth_results["spam_reasons"], [])

        self.assertEqual(await self.sendmail(message=subject("score=7")), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.auth_results["rspamd"]["action"], "add header")
        self.assertEqual(info.auth_results["rspamd"]["score"], 7.0)
        self.assertIn("HAITATSU_SCORE", info.auth_results["rspamd"]["symbols"])
        self.assertEqual(info.auth_results["spam_reasons"], ["rspamd:add_header"])
        self.assertEqual(info.spam_score, 0)  # recorded, not added (score_weight 0)

        self.assertEqual(await self.sendmail(message=subject("score=9")), {})
        self.assertEqual(len(await self.folder(self.bob, "Junk")), 2)  # rewrite subject

        self.assertEqual(
            await self.sendmail(message=subject("score=20")),
            (550, b"5.7.1 message rejected by policy"),
        )
        self.assertEqual(
            await self.sendmail(message=subject("score=5")),
            (451, b"4.7.1 greylisted, please try again later"),
        )
        self.assertEqual(
            await self.sendmail(message=subject("softreject")),
            (451, b"4.7.1 come back later please"),
        )
        self.assertEqual(len(await self.folder(self.bob)), 1)
        self.assertEqual(len(await self.folder(self.bob, "Junk")), 2)

    async def test_milter_headers(self):
        await self.serve_rspamd()
        self.assertEqual(await self.sendmail(message=subject("milter")), {})
        [info] = await self.folder(self.bob)
        raw = await self.store.read_message(info)
        self.assertIn(b"\r\nX-Rspamd-Test: added\r\n", raw)
        await self.serve_rspamd(milter_headers=False)
        self.assertEqual(await self.sendmail(message=subject("milter")), {})
        [_, info] = await self.folder(self.bob)
        self.assertNotIn(b"X-Rspamd-Test", await self.store.read_message(info))

    async def test_actions_remapped_and_score_added(self):
        await self.serve_rspamd(
            actions={"add_header": "continue", "reject": "quarantine"}, score_weight=0.5
        )
        self.assertEqual(await self.sendmail(message=subject("score=7")), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 3.5)
        self.assertEqual(await self.sendmail(message=subject("score=20")), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 10)

    async def test_too_big_is_not_sent(self):
        await self.serve_rspamd(max_bytes=100)
        self.assertEqual(await self.sendmail(message=subject("score=20")), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["rspamd"], {"action": "skipped"})


class RspamdDownTests(LoopbackMX):
    """No rspamd listening (no rspamd needed): the filter's on_error decides."""

    async def test_unreachable_follows_on_error(self):
        url = f"http://127.0.0.1:{free_port()}"
        await self.serve(spec("rspamd", url=url))
        self.addCleanup(lambda: self.filtering.current.close())
        self.assertEqual(await self.sendmail(), (451, b"4.3.0 temporary local problem"))
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        await self.serve(FilterSpec("rspamd", on_error="continue", options={"url": url}))
        self.addCleanup(lambda: self.filtering.current.close())
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(
            info.auth_results["filters"],
            [
                {
                    "name": "rspamd",
                    "stage": "data",
                    "action": "continue",
                    "reason": "filter_error:rspamd",
                }
            ],
        )
        self.flushLoggedErrors()

    async def test_bad_answers(self):
        """A server that is not rspamd: its answers are failures, never a pass."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web import resource, server

        answers = [b"not json", json.dumps({"action": "maybe"}).encode(), b'{"error": "x"}']

        class Fake(resource.Resource):
            isLeaf = True

            def render_POST(self, request):
                request.content.read()
                return answers.pop(0)

        site = server.Site(Fake())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        await self.serve(spec("rspamd", url=f"http://127.0.0.1:{port.getHost().port}"))
        self.addCleanup(lambda: self.filtering.current.close())
        for _ in range(3):
            self.assertEqual(await self.sendmail(), (451, b"4.3.0 temporary local problem"))
        errors = self.flushLoggedErrors(RspamdError)
        self.assertEqual(len(errors), 3)
        self.assertIn("answer is not JSON", str(errors[0].value))
        self.assertIn("no known action: 'maybe'", str(errors[1].value))
