"""VERP bounces at the MX (API.md 5.2 step 1): a message relayed with its VERP return path,
then a delivery status notification sent back to that address over SMTP (smtplib), recorded in
``bounce_events`` and delivered to no mailbox."""

from __future__ import annotations

import smtplib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.queue import BounceHandler, parse_verp
from haitatsu.smtp import InboundSMTPFactory
from tests.queue.helpers import (
    ScriptedRelay,
    inbox_messages,
    make_config,
    make_queue,
    queue_message,
)
from tests.smtp.helpers import make_config as make_mx_config
from tests.smtp.helpers import temp_dir
from tests.support import make_store

REPORT = (
    "From: MAILER-DAEMON@mx.remote.test\r\n"
    "To: {verp}\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
    "\r\n"
    "--B\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "I'm sorry to have to inform you that your message could not be delivered.\r\n"
    "\r\n"
    "--B\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.remote.test\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@remote.test\r\n"
    "Original-Recipient: rfc822;bob@remote.test\r\n"
    "Action: failed\r\n"
    "Status: 5.2.2\r\n"
    "Remote-MTA: dns; store.remote.test\r\n"
    "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n"
    "\r\n"
    "--B\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "Subject: hello from the queue\r\n"
    "\r\n"
    "--B--\r\n"
)


class VerpParsingTests(unittest.SynchronousTestCase):
    def test_forms(self):
        ulid_id = "01JAAAAAAAAAAAAAAAAAAAAAAA"
        verp = parse_verp(f"bounces+{ulid_id.lower()}@Example.COM")
        self.assertEqual((verp.valid, verp.message_id, verp.domain), (True, ulid_id, "example.com"))
        self.assertFalse(parse_verp("bounces@example.com").valid)
        self.assertFalse(parse_verp("bounces+nope@example.com").valid)
        self.assertFalse(parse_verp("bounces+" + "U" * 26 + "@example.com").valid)
        self.assertIsNone(parse_verp("bob@example.com"))
        self.assertIsNone(parse_verp("bouncesx@example.com"))


class VerpBounceOverSMTPTests(unittest.TestCase):
    timeout = 60

    async def setUp(self):
        root = temp_dir(self)
        self.store = await make_store(self, root)
        factory = InboundSMTPFactory(
            lambda: make_mx_config(max_message_size=100_000, max_line_length=4000),
            self.store,
            reactor,
            root + "/spool",
            bounces=BounceHandler(self.store, reactor),
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def send(self, rcpts, data: bytes, sender=""):
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="mx.remote.test", timeout=10) as c:
            c.ehlo()
            c.mail(sender)
            answers = {rcpt: c.rcpt(rcpt) for rcpt in rcpts}
            accepted = [r for r, (code, _) in answers.items() if code == 250]
            data_answer = c.data(data) if accepted else None
        return answers, data_answer

    async def test_bounce_on_the_return_path_is_recorded_and_not_delivered(self):
        relay = ScriptedRelay()
        relay_port = relay.listen(self)
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{relay_port}"))
        mailbox, message_id, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        (got,) = relay.received
        verp = got["from"]
        self.assertEqual(verp, f"bounces+{message_id}@example.com")

        answers, data_answer = await deferToThread(
            self.send, [verp], REPORT.format(verp=verp).encode()
        )
        self.assertEqual(answers[verp][0], 250)
        self.assertEqual(data_answer[0], 250)
        (event,) = await self.store.list_bounce_events(message_id)
        self.assertEqual(
            (event.job_id, event.mailbox_id, event.recipient, event.action, event.status),
            (job_id, mailbox.id, "bob@remote.test", "failed", "5.2.2"),
        )
        self.assertEqual(event.diagnostic, "552 5.2.2 mailbox full")
        self.assertEqual(event.remote_mta, "store.remote.test")
        self.assertEqual(event.reporting_mta, "mx.remote.test")
        self.assertEqual(event.verp_address, verp)
        self.assertEqual(event.remote_ip, "127.0.0.1")
        self.assertIn("could not be delivered", event.excerpt)
        self.assertEqual(len(event.sha256), 64)
        # Not delivered anywhere: the sender's INBOX (the only mailbox) is empty.
        self.assertEqual(await inbox_messages(self.store, mailbox.id), [])

    async def test_bare_and_malformed_bounce_addresses_are_refused(self):
        await self.store.create_mailbox("alice@example.com")
        answers, _ = await deferToThread(
            self.send,
            [
                "bounces@example.com",
                "bounces+not-a-ulid@example.com",
                "bounces+01JAAAAAAAAAAAAAAAAAAAAAAA@elsewhere.test",
            ],
            b"Subject: x\r\n\r\nx\r\n",
        )
        self.assertEqual(answers["bounces@example.com"], (550, b"5.1.1 invalid bounce recipient"))
        self.assertEqual(
            answers["bounces+not-a-ulid@example.com"], (550, b"5.1.1 invalid bounce recipient")
        )
        # Not one of our domains: an ordinary unknown recipient.
        self.assertEqual(
            answers["bounces+01JAAAAAAAAAAAAAAAAAAAAAAA@elsewhere.test"],
            (550, b"5.1.1 unknown recipient"),
        )

    async def test_bounce_beside_an_ordinary_recipient(self):
        bob = await self.store.create_mailbox("bob@example.com")
        verp = "bounces+01JAAAAAAAAAAAAAAAAAAAAAAA@example.com"
        answers, data_answer = await deferToThread(
            self.send, [verp, "bob@example.com"], REPORT.format(verp=verp).encode()
        )
        self.assertEqual(data_answer[0], 250)
        (event,) = await self.store.list_bounce_events("01JAAAAAAAAAAAAAAAAAAAAAAA")
        self.assertEqual(event.job_id, "")
        self.assertEqual(len(await inbox_messages(self.store, bob.id)), 1)
