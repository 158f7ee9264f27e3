"""``javascript`` through the chain: scripts in the QuickJS sandbox deciding about messages
sent with smtplib to the MX on loopback; runaway scripts stopped by the limits; broken
scripts refused when the configuration is loaded."""

from __future__ import annotations

import textwrap

from twisted.internet import task
from twisted.trial import unittest

from haitatsu.config.model import Config, ConfigError, FilterSpec
from haitatsu.filtering import FilterConfigError, FilterEnvironment
from haitatsu.filtering.registry import Filtering, build_chain, builtin_package, discover
from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec

try:
    import quickjs
except ImportError:
    quickjs = None

builtin_package()  # haitatsu.filters, from filters/ in a checkout
from haitatsu.filters.javascript import JavaScriptError  # noqa: E402

SKIP = None if quickjs is not None else "the quickjs package is not installed"

SCRIPT = """
function check(m) {
  const subject = (m.message.headers.find(([k]) => k.toLowerCase() === "subject") || [])[1];
  if (m.envelope.mail_from.endsWith("@spam.example"))
    return {action: "reject", code: 554, enhanced: "5.7.1", text: "go away", reason: "js_sender"};
  if (subject === "junk me")
    return {action: "quarantine", score: 3, spam_reasons: ["js_subject"],
            headers: [["X-JS", "junked " + m.envelope.recipients.length]]};
  if (subject === "later") return {action: "tempfail"};
  if (subject === "loop") { while (true) {} }
  if (subject === "memory") { const a = []; while (true) a.push("x".repeat(4096)); }
  if (subject === "deep") { const f = (n) => f(n + 1) + 1; return f(0); }
  if (subject === "throw") throw new Error("no good");
  if (subject === "nonsense") return {action: "explode"};
  if (subject === "fields") return {fields: {js: {seen: m.stage, score: m.score}}};
  return null;
}
"""


def subject(text: str) -> bytes:
    return MESSAGE.replace(b"Subject: hi", b"Subject: " + text.encode())


class JavaScriptTests(LoopbackMX):
    skip = SKIP

    async def serve_script(self, script=SCRIPT, *before, **options):
        await self.serve(*before, spec("javascript", script=script, **options))

    async def test_verdicts(self):
        await self.serve_script()
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        self.assertEqual(await self.sendmail(sender="x@spam.example"), (554, b"5.7.1 go away"))
        self.assertEqual(
            await self.sendmail(["bob@example.com", "carol@example.com"], subject("junk me")),
            {},
        )
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 3)
        self.assertEqual(info.auth_results["spam_reasons"], ["js_subject"])
        self.assertIn(
            {"name": "javascript", "stage": "data", "action": "quarantine", "reason": "javascript"},
            info.auth_results["filters"],
        )
        self.assertIn(b"\r\nX-JS: junked 2\r\n", await self.store.read_message(info))
        self.assertEqual(
            await self.sendmail(message=subject("later")),
            (451, b"4.7.1 temporary policy failure, try again later"),
        )

    async def test_metadata_and_results_of_earlier_filters(self):
        await self.serve_script(SCRIPT, spec("header_validate"))
        message = subject("fields").replace(b"Message-ID: <m1@example.org>\r\n", b"")
        self.assertEqual(await self.sendmail(message=message), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["js"], {"seen": "data", "score": 1})

    async def test_infinite_loop_is_stopped(self):
        await self.serve_script(time_limit_ms=200)
        self.assertEqual(
            await self.sendmail(message=subject("loop")), (451, b"4.3.0 temporary local problem")
        )
        [error] = self.flushLoggedErrors(JavaScriptError)
        self.assertIn("InternalError: interrupted", str(error.value))
        # The next message gets a fresh context and goes through.
        self.assertEqual(await self.sendmail(), {})

    async def test_memory_bomb_is_stopped(self):
        await self.serve_script(memory_limit_bytes=8 * 1024 * 1024, time_limit_ms=5000)
        self.assertEqual(
            await self.sendmail(message=subject("memory")), (451, b"4.3.0 temporary local problem")
        )
        [error] = self.flushLoggedErrors(JavaScriptError)
        self.assertIn("out of memory", str(error.value))
        self.assertEqual(await self.sendmail(), {})

    async def test_runaway_recursion_and_exceptions_follow_on_error(self):
        await self.serve(
            FilterSpec("javascript", on_error="quarantine", options={"script": SCRIPT})
        )
        for text in ("deep", "throw", "nonsense"):
            self.assertEqual(await self.sendmail(message=subject(text)), {})
        self.assertEqual(len(await self.folder(self.bob, "Junk")), 3)
        errors = [str(e.value) for e in self.flushLoggedErrors(JavaScriptError)]
        self.assertEqual(len(errors), 3)
        self.assertIn("stack overflow", errors[0])
        self.assertIn("Error: no good", errors[1])
        self.assertIn("unknown action 'explode'", errors[2])

    async def test_other_stages(self):
        script = """
        function check(m) {
          if (m.stage === "rcpt" && m.recipient.address.startsWith("carol"))
            return {action: "reject", code: 550, enhanced: "5.1.1", text: "not carol"};
        }
        """
        await self.serve_script(script, stages=["rcpt"])
        self.assertEqual(
            await self.sendmail(["bob@example.com", "carol@example.com"]),
            {"carol@example.com": (550, b"5.1.1 not carol")},
        )
        self.assertEqual(len(await self.folder(self.bob)), 1)


class ScriptCheckTests(unittest.SynchronousTestCase):
    """A broken script is refused when the configuration is loaded, with a clear message."""

    skip = SKIP

    def build(self, **options):
        environment = FilterEnvironment(None, task.Clock(), None, Config())
        return build_chain([FilterSpec("javascript", options=options)], environment, discover())

    def refused(self, **options) -> str:
        with self.assertRaises(FilterConfigError) as caught:
            self.build(**options)
        return str(caught.exception)

    def test_syntax_error(self):
        script = textwrap.dedent(
            """
            function check(m) {
              return {action: "reject"
            }
            """
        )
        message = self.refused(script=script)
        self.assertTrue(message.startswith("filters[javascript].script: SyntaxError: "), message)
        self.assertRegex(message, r"\(line \d+\)\Z")

    def test_syntax_error_refuses_the_start(self):
        config = Config(filters=(FilterSpec("javascript", options={"script": "function ("}),))
        with self.assertRaises(ConfigError) as caught:
            Filtering(None, task.Clock(), config)
        self.assertIn("filters[javascript].script: SyntaxError", str(caught.exception))

    def test_no_check_function(self):
        self.assertEqual(
            self.refused(script="function chek(m) { return null }"),
            "filters[javascript].script: the script defines no function check(message)",
        )

    def test_top_level_errors_and_runaway_top_level_code(self):
        self.assertIn("ReferenceError", self.refused(script="nope();\nfunction check() {}"))
        self.assertIn(
            "InternalError: interrupted",
            self.refused(script="while (true) {}", time_limit_ms=50),
        )

    def test_options(self):
        self.assertEqual(self.refused(), "filters[javascript].script: required")
        self.assertIn("unknown stage 'data2'", self.refused(script=SCRIPT, stages=["data2"]))
        self.assertIn(
            "memory_limit_bytes: must be >=", self.refused(script=SCRIPT, memory_limit_bytes=10)
        )
        [entry] = self.build(script=SCRIPT, stages=["mail", "data"]).entries
        self.assertEqual(entry.filter.stages, ("mail", "data"))
