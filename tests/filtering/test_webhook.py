"""``webhook`` through the chain: smtplib against the MX, the filter POSTing to a real
twisted.web receiver on loopback that checks the signature and answers what the test says."""

from __future__ import annotations

import hashlib
import hmac
import json

import attrs
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest
from twisted.web import resource, server

from haitatsu.config.model import Config, FilterSpec, WebhooksConfig
from haitatsu.filtering import FilterConfigError, FilterEnvironment
from haitatsu.filtering.registry import build_chain, builtin_package, discover
from haitatsu.webhooks import go_json
from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec

builtin_package()  # haitatsu.filters, from filters/ in a checkout
from haitatsu.filters.webhook import WebhookError  # noqa: E402

SECRET = "hook-secret"


class Receiver(resource.Resource):
    """Records each request (headers, body) and answers from ``answers`` (one per request,
    the last repeated): ``(status, body)``, or None to never answer."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests: list[dict] = []
        self.answers: list = [(200, b"")]
        self.pending: list = []

    def render_POST(self, request):
        body = request.content.read()
        self.requests.append(
            {
                "path": request.path,
                "headers": {
                    k.decode().lower(): v[0].decode()
                    for k, v in request.requestHeaders.getAllRawHeaders()
                },
                "body": body,
            }
        )
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is None:
            self.pending.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET
        status, text = answer
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return text if isinstance(text, bytes) else json.dumps(text).encode()


class WebhookMX(LoopbackMX):
    async def setUp(self):
        await super().setUp()
        self.receiver = Receiver()
        site = server.Site(self.receiver)
        site.noisy = False
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/hook"

    async def serve_hook(self, *before, on_error="tempfail", timeout=0, **options):
        options.setdefault("url", self.url)
        hook = FilterSpec("webhook", on_error=on_error, timeout_seconds=timeout, options=options)
        await self.serve(*before, hook, webhooks=WebhooksConfig(secret=SECRET))
        self.addCleanup(lambda: self.filtering.current.close())

    def answer(self, *answers):
        self.receiver.answers = list(answers)


class WebhookTests(WebhookMX):
    async def test_reject_with_the_endpoints_words(self):
        await self.serve_hook()
        self.answer(
            (200, {"action": "reject", "code": 554, "enhanced": "5.7.0", "text": "no thanks"})
        )
        self.assertEqual(await self.sendmail(), (554, b"5.7.0 no thanks"))
        self.assertEqual(await self.folder(self.bob), [])

    async def test_request_is_signed_and_describes_the_message(self):
        await self.serve_hook(spec("header_validate"))
        self.answer((200, b""))
        message = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
        self.assertEqual(await self.sendmail(message=message), {})
        [info] = await self.folder(self.bob)
        [request] = self.receiver.requests
        headers, body = request["headers"], request["body"]
        self.assertEqual(request["path"], b"/hook")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["x-haitatsu-event"], "filter.data")
        self.assertEqual(headers["x-haitatsu-trace-id"], info.trace_id)
        self.assertEqual(len(headers["x-haitatsu-delivery"]), 26)  # a ULID
        timestamp = headers["x-haitatsu-timestamp"]
        self.assertRegex(timestamp, r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        self.assertEqual(headers["x-haitatsu-signature"], "sha256=" + mac.hexdigest())
        payload = json.loads(body)
        self.assertEqual(payload["event"], "filter.data")
        self.assertEqual(payload["stage"], "data")
        self.assertEqual(payload["trace_id"], info.trace_id)
        self.assertEqual(payload["envelope"]["mail_from"], "alice@example.org")
        [rcpt] = payload["envelope"]["recipients"]
        self.assertEqual((rcpt["address"], rcpt["mailbox_ids"]), ("bob@example.com", [self.bob.id]))
        self.assertEqual(payload["session"]["remote_ip"], "127.0.0.1")
        self.assertEqual(payload["session"]["helo"], "client.test")
        self.assertIn(["Subject", "hi"], payload["message"]["headers"])
        self.assertEqual(payload["message"]["size"], len(message))
        [found] = payload["results"]  # header_validate's, earlier in the chain
        self.assertEqual(found["filter"], "header_validate")
        self.assertEqual(found["spam_reasons"], ["missing_message_id"])
        self.assertEqual(payload["score"], 1.0)
        # Go's json.Marshal layout, as the server's webhooks: sorted keys, no spaces.
        self.assertEqual(body, go_json(payload))

    async def test_quarantine_with_headers_score_and_fields(self):
        await self.serve_hook()
        self.answer(
            (
                200,
                {
                    "action": "quarantine",
                    "reason": "looks odd",
                    "headers": {"X-Hook": "seen"},
                    "score": 2.5,
                    "spam_reasons": ["hook_odd"],
                    "fields": {"hook": {"verdict": "odd"}},
                },
            )
        )
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 2.5)
        self.assertEqual(info.auth_results["spam_reasons"], ["hook_odd"])
        self.assertEqual(info.auth_results["hook"], {"verdict": "odd"})
        self.assertIn(
            {"name": "webhook", "stage": "data", "action": "quarantine", "reason": "looks_odd"},
            info.auth_results["filters"],
        )
        raw = await self.store.read_message(info)
        self.assertIn(b"\r\nX-Hook: seen\r\n", raw)

    async def test_other_stages(self):
        await self.serve_hook(stages=["mail", "rcpt"])
        self.answer(
            (200, b""),
            (200, {"action": "tempfail", "text": "not now"}),
        )
        self.assertEqual(await self.sendmail(), {"bob@example.com": (451, b"4.7.1 not now")})
        mail, rcpt = (json.loads(r["body"]) for r in self.receiver.requests)
        self.assertEqual((mail["stage"], rcpt["stage"]), ("mail", "rcpt"))
        self.assertEqual(rcpt["recipient"]["address"], "bob@example.com")
        self.assertNotIn("message", rcpt)

    async def test_non_2xx_follows_on_error(self):
        await self.serve_hook()
        self.answer((500, b"oops"))
        self.assertEqual(await self.sendmail(), (451, b"4.3.0 temporary local problem"))
        self.assertEqual(await self.folder(self.bob), [])
        [error] = self.flushLoggedErrors(WebhookError)
        self.assertIn("/hook answered 500", str(error.value))

    async def test_non_2xx_with_on_error_continue(self):
        await self.serve_hook(on_error="continue")
        self.answer((503, b""))
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertIn(
            {"name": "webhook", "stage": "data", "action": "continue",
             "reason": "filter_error:webhook"},
            info.auth_results["filters"],
        )  # fmt: skip
        self.assertEqual(len(self.flushLoggedErrors(WebhookError)), 1)

    async def test_timeout_follows_on_error(self):
        await self.serve_hook(on_error="reject", request_timeout_seconds=0.5)
        self.answer(None)
        self.assertEqual(await self.sendmail(), (550, b"5.7.1 message rejected by policy"))
        self.assertEqual(len(self.receiver.pending), 1)
        [error] = self.flushLoggedErrors(WebhookError)
        self.assertIn("no answer within 0.5 s", str(error.value))
        # The chain's own timeout_seconds bounds it too.
        await self.serve_hook(timeout=0.5, request_timeout_seconds=30)
        self.assertEqual(await self.sendmail(), (451, b"4.3.0 temporary local problem"))

    async def test_answers_that_are_no_verdict_follow_on_error(self):
        await self.serve_hook()
        for answer in (
            b"not json",
            b"[1, 2]",
            {"action": "explode"},
            {"action": "reject", "code": 250},
            {"action": "tempfail", "enhanced": "5.0.0"},
            {"score": "high"},
        ):
            self.answer((200, answer))
            self.assertEqual(await self.sendmail(), (451, b"4.3.0 temporary local problem"), answer)
        self.answer((200, {"action": "continue"}))
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(self.flushLoggedErrors(WebhookError)), 6)


class WebhookOptionTests(unittest.SynchronousTestCase):
    def build(self, options, config=None):
        from twisted.internet import task

        environment = FilterEnvironment(None, task.Clock(), None, config or Config())
        return build_chain([FilterSpec("webhook", options=options)], environment, discover())

    def test_bad_options(self):
        signed = attrs.evolve(Config(), webhooks=WebhooksConfig(secret="s"))
        cases = [
            ({}, None, "filters[webhook].url: required"),
            ({"url": "ftp://x"}, None, "filters[webhook].url: expected an http:// or https://"),
            ({"url": "http://x"}, None, "filters[webhook].secret: required"),
            ({"url": "http://x", "stages": ["later"]}, signed, "unknown stage 'later'"),
            ({"url": "http://x", "stages": []}, signed, "name at least one stage"),
        ]
        for options, config, expected in cases:
            with self.assertRaises(FilterConfigError) as caught:
                self.build(options, config)
            self.assertIn(expected, str(caught.exception))

    def test_secret_from_webhooks_or_option(self):
        [entry] = self.build({"url": "http://x", "secret": "own"}).entries
        self.assertEqual(entry.filter.secret, "own")
        signed = attrs.evolve(Config(), webhooks=WebhooksConfig(secret="shared"))
        [entry] = self.build({"url": "https://x/y"}, signed).entries
        self.assertEqual(entry.filter.secret, "shared")
        self.assertEqual(entry.filter.stages, ("data",))
