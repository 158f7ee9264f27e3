"""Sending over HTTP: ``POST /api/v1/mailboxes/:id/outbound`` (API.md 1.8) on a real store,
through the same pipeline as SMTP submission: validation, the structured body, ``raw``, the
stored Sent copy and queue, and our 4xx answers where the original answers 500."""

from __future__ import annotations

from twisted.trial import unittest

from haitatsu.config.model import APIConfig, Config, LimitsConfig, ServerConfig
from tests.api.client import TOKEN, APIClient, LiveConfig, error
from tests.submission.helpers import verify
from tests.submission.test_messages import queue_rows, split_signature
from tests.submission.test_session import add_key
from tests.support import make_store


class Live(LiveConfig):
    def __init__(self):
        self.config = Config(
            api=APIConfig(service_token=TOKEN),
            server=ServerConfig(public_hostname="mail.example.test", instance_name="node-1"),
            limits=LimitsConfig(max_message_size_bytes=20_000, max_submission_recipients=4),
        )


def invalid(message: str) -> dict:
    return error("invalid_outbound_message", message)


class OutboundTestCase(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.key = await add_key(self.store, "example.com")
        self.live = Live()
        self.client = APIClient(self.store, config=self.live)

    def send(self, body, mailbox_id=None):
        return self.client.post(f"/api/v1/mailboxes/{mailbox_id or self.alice.id}/outbound", body)

    async def sent(self):
        folder = await self.store.get_folder(self.alice.id, "Sent")
        rows = await self.store.list_folder_messages(folder.id)
        views = await self.store.get_messages(folder.id, [m.uid for m in rows])
        return [(mm, info, await self.store.read_message(info)) for mm, info in views]


class ValidationTests(OutboundTestCase):
    async def test_reasons(self):
        cases = [
            ({}, "from and to are required"),
            ({"from": "alice@example.com"}, "from and to are required"),
            ({"to": ["bob@example.com"]}, "from and to are required"),
            ({"from": "x", "to": ["bob@example.com"]}, 'from: invalid address "x"'),
            ({"from": "alice@example.com", "to": ["x"]}, 'to: invalid address "x"'),
            (
                {"from": "alice@example.com", "to": ["bob@example.com"], "cc": ["a@b", "y z"]},
                'cc: invalid address "y z"',
            ),
            (
                {"from": "alice@example.com", "to": ["bob@example.com"], "bcc": ["@b"]},
                'bcc: invalid address "@b"',
            ),
            (
                {"from": "alice@example.com", "to": ["bob@example.com"], "subject": "a\nb"},
                "subject: must not contain control characters",
            ),
            (
                {"from": "alice@example.com", "to": ["bob@example.com"], "subject": "a\x7f"},
                "subject: must not contain control characters",
            ),
            (
                {"from": "alice@example.com", "to": "bob@example.com"},
                "to: must be an array of strings",
            ),
            ({"from": 5, "to": ["bob@example.com"]}, "from: must be a string"),
            (
                {"from": "alice@example.com", "raw": "Subject: no recipients\r\n\r\nx\r\n"},
                "from and to are required",
            ),
        ]
        for body, message in cases:
            answer = await self.send(body)
            self.assertEqual(answer.status, 400, body)
            self.assertEqual(answer.json, invalid(message), body)
        self.assertEqual(await self.sent(), [])

    async def test_invalid_json(self):
        answer = await self.client.request(
            "POST", f"/api/v1/mailboxes/{self.alice.id}/outbound", body=b"[1"
        )
        self.assertEqual(answer.json, error("invalid_request", "Invalid JSON body"))


class SendTests(OutboundTestCase):
    async def test_text_message(self):
        answer = await self.send(
            {
                "from": "Alice <alice@example.com>",
                "to": ["Bob <bob@example.com>", "carol@remote.example"],
                "cc": ["dave@remote.example"],
                "bcc": ["erin@remote.example", "CAROL@remote.example"],
                "subject": "Hello  there",
                "text": "Hi Bob,\nsee you.\n",
            }
        )
        self.assertEqual(answer.status, 201, answer.body)
        data = answer.json["data"]
        [(mm, info, raw)] = await self.sent()
        self.assertEqual(data["id"], info.id)
        self.assertEqual(data["size_bytes"], len(raw))
        self.assertEqual(data["subject"], "Hello  there")
        self.assertEqual(data["from_addresses"], ["alice@example.com"])
        self.assertEqual(data["to_addresses"], ["bob@example.com", "carol@remote.example"])
        self.assertEqual(data["cc_addresses"], ["dave@remote.example"])
        self.assertNotIn("bcc_addresses", data)
        self.assertNotIn("auth_results", data)  # {} is omitted
        self.assertRegex(data["rfc_message_id"], r"^<[0-9A-Z]{26}@mail\.example\.test>$")
        self.assertEqual(mm.flags, ("\\Seen",))
        _, rest = split_signature(raw)
        head, body = rest.split(b"\r\n\r\n", 1)
        self.assertEqual(
            [line.split(b":")[0] for line in head.split(b"\r\n")],
            [
                b"From", b"To", b"Cc", b"Subject", b"MIME-Version", b"Content-Type", b"Date",
                b"Message-ID", b"X-Haitatsu-Trace-ID", b"X-Haitatsu-Node",
            ],
        )  # fmt: skip
        self.assertTrue(
            head.startswith(
                b"From: Alice <alice@example.com>\r\n"
                b"To: Bob <bob@example.com>, carol@remote.example\r\n"
                b"Cc: dave@remote.example\r\n"
                b"Subject: Hello  there\r\n"
                b"MIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
            ),
            head,
        )
        self.assertEqual(body, b"Hi Bob,\r\nsee you.\r\n")
        self.assertNotIn(b"erin", raw)
        self.assertTrue(verify(raw, [self.key]))
        # Bob is local; the rest are queued once each, Bcc included.
        bob_inbox = await self.store.get_folder(self.bob.id, "INBOX")
        self.assertEqual(len(await self.store.list_folder_messages(bob_inbox.id)), 1)
        jobs, rcpts = await queue_rows(self.store)
        self.assertEqual([j["mail_from"] for j in jobs], [f"bounces+{info.id}@example.com"])
        self.assertEqual(
            sorted(r["rcpt"] for r in rcpts),
            ["carol@remote.example", "dave@remote.example", "erin@remote.example"],
        )

    async def test_html_message(self):
        answer = await self.send(
            {
                "from": "alice@example.com",
                "to": ["bob@example.com"],
                "subject": "Grüße",
                "text": "plain",
                "html": "<p>caf\u00e9</p>",
            }
        )
        self.assertEqual(answer.status, 201, answer.body)
        self.assertEqual(answer.json["data"]["subject"], "Grüße")
        self.assertEqual(answer.json["data"]["html_body_extract"], "<p>caf\u00e9</p>")
        [(_, _, raw)] = await self.sent()
        _, rest = split_signature(raw)
        self.assertIn(b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n", rest)
        self.assertIn(
            b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="haitatsu-alt"\r\n',
            rest,
        )
        self.assertTrue(
            rest.endswith(
                b"\r\n\r\n--haitatsu-alt\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                b"plain\r\n"
                b"--haitatsu-alt\r\n"
                b"Content-Type: text/html; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                b"<p>caf\xc3\xa9</p>\r\n"
                b"--haitatsu-alt--\r\n"
            ),
            rest,
        )
        self.assertTrue(verify(raw, [self.key]))

    async def test_raw_message(self):
        raw_message = (
            "From: alice@example.com\r\n"
            "To: bob@example.com\r\n"
            "Bcc: Secret <zed@remote.example>\r\n"
            "Subject: raw\r\n"
            "\r\n"
            "As sent.\r\n"
        )
        answer = await self.send({"from": "alice@example.com", "raw": raw_message})
        self.assertEqual(answer.status, 201, answer.body)
        [(_, _, raw)] = await self.sent()
        _, rest = split_signature(raw)
        self.assertTrue(rest.startswith(b"From: alice@example.com\r\nTo: bob@example.com\r\n"
                                        b"Subject: raw\r\nDate: "), rest)  # fmt: skip
        self.assertTrue(rest.endswith(b"\r\n\r\nAs sent.\r\n"))
        self.assertNotIn(b"zed", raw)
        _, rcpts = await queue_rows(self.store)
        self.assertEqual([r["rcpt"] for r in rcpts], ["zed@remote.example"])


class RefusalTests(OutboundTestCase):
    BODY = {"from": "alice@example.com", "to": ["x@remote.example"], "text": "hi"}

    async def assertAnswer(self, answer, status, code, body=None):
        answer = await answer
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.json["error"]["code"], code)
        self.assertEqual(answer.json["error"]["details"], {})
        self.assertEqual(await self.sent(), [])
        return answer

    async def test_sender_not_allowed(self):
        await self.assertAnswer(
            self.send(dict(self.BODY, **{"from": "bob@example.com"})), 403, "sender_not_allowed"
        )

    async def test_no_dkim_key(self):
        mailbox = await self.store.create_mailbox("z@nokey.example")
        await self.assertAnswer(
            self.send(dict(self.BODY, **{"from": "z@nokey.example"}), mailbox.id),
            409,
            "dkim_key_not_found",
        )

    async def test_unknown_and_inactive_mailbox(self):
        await self.assertAnswer(
            self.send(self.BODY, "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "mailbox_not_found"
        )
        await self.store.update_mailbox(self.alice.id, status="suspended")
        await self.assertAnswer(self.send(self.BODY), 409, "mailbox_inactive")

    async def test_too_many_recipients(self):
        body = dict(self.BODY, to=[f"r{i}@remote.example" for i in range(5)])
        await self.assertAnswer(self.send(body), 422, "too_many_recipients")

    async def test_rate_limited(self):
        await self.store.update_mailbox(self.alice.id, outbound_limits={"per_hour": 1})
        self.assertEqual((await self.send(self.BODY)).status, 201)
        answer = await self.send(self.BODY)
        self.assertEqual(answer.status, 429)
        self.assertEqual(
            answer.json,
            error("outbound_rate_limited", "Outbound rate limit exceeded, try again later"),
        )
        self.assertEqual(len(await self.sent()), 1)

    async def test_over_quota(self):
        await self.store.update_mailbox(self.alice.id, quota_bytes=300)
        await self.assertAnswer(
            self.send(dict(self.BODY, text="x" * 400)), 413, "mailbox_over_quota"
        )

    async def test_in_transaction_quota(self):
        """The early quota check uses the client's bytes; the store decides on the finished
        message (with our headers and the signature), in its transaction."""
        await self.store.update_mailbox(self.alice.id, quota_bytes=400)
        await self.assertAnswer(self.send(self.BODY), 413, "mailbox_over_quota")
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, 0)
        self.assertEqual(await queue_rows(self.store), ([], []))

    async def test_message_too_large(self):
        await self.assertAnswer(
            self.send(dict(self.BODY, text="x" * 30_000)), 413, "message_too_large"
        )

    async def test_storage_unavailable(self):
        await self.store.db.close()
        answer = await self.send(self.BODY)
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["error"]["code"], "storage_unavailable")
