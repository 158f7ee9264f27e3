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
from tests.api.client import APIClient
from tests.queue.helpers import (
    ScriptedRelay,
    inbox_messages,
    make_clock,
    make_config,
    make_queue,
    queue_message,
)
from tests.smtp.helpers import make_config as make_mx_config
from tests.smtp.helpers import temp_dir
from tests.support import OnPostgres, make_store

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


class _BounceMX(unittest.TestCase):
    """The MX on 127.0.0.1 with bounce handling; ``send`` is smtplib in a thread."""

    timeout = 60

    async def setUp(self):
        root = temp_dir(self)
        self.store = await self.open_store(root)
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

    async def open_store(self, root):
        return await make_store(self, root)

    def send(self, rcpts, data: bytes, sender=""):
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="mx.remote.test", timeout=10) as c:
            c.ehlo()
            c.mail(sender)
            answers = {rcpt: c.rcpt(rcpt) for rcpt in rcpts}
            accepted = [r for r, (code, _) in answers.items() if code == 250]
            data_answer = c.data(data) if accepted else None
        return answers, data_answer


class VerpBounceOverSMTPTests(_BounceMX):
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


def report(verp: str, *blocks: tuple[str, str, str, str]) -> bytes:
    """A DSN to ``verp`` with one per-recipient block per ``(recipient, action, status,
    diagnostic)``."""
    text = REPORT.format(verp=verp)
    head, _, rest = text.partition("Final-Recipient:")
    tail = rest[rest.index("--B\r\nContent-Type: text/rfc822-headers") :]
    fields = "".join(
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        for rcpt, action, status, diagnostic in blocks
    )
    return (head + fields + tail).encode()


class VerpBounceOutcomeTests(_BounceMX):
    """A bounce received after the relay took the message: the job's recipient it reports as
    failed becomes ``bounced``, visible in ``GET /api/v1/mailboxes/:id/outbound``."""

    async def relay_two(self):
        relay = ScriptedRelay()
        relay_port = relay.listen(self)
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{relay_port}"))
        mailbox, message_id, job_id = await queue_message(
            self.store, ["bob@remote.test", "Carol@remote.test"]
        )
        await queue.process_due()
        (got,) = relay.received
        return mailbox, job_id, got["from"]

    async def jobs(self, mailbox):
        answer = await APIClient(self.store).get(f"/api/v1/mailboxes/{mailbox.id}/outbound")
        self.assertEqual(answer.status, 200, answer.body)
        [job] = answer.json["data"]
        return job, {r["rcpt"]: r for r in job["recipients"]}

    async def test_failed_report_marks_the_recipient_bounced(self):
        mailbox, job_id, verp = await self.relay_two()
        job, recipients = await self.jobs(mailbox)
        self.assertEqual(job["status"], "sent")
        # A delay report changes nothing; the relay's 250 still stands.
        delayed = report(verp, ("bob@remote.test", "delayed", "4.2.2", "452 4.2.2 over quota"))
        _, data_answer = await deferToThread(self.send, [verp], delayed)
        self.assertEqual(data_answer[0], 250)
        job, recipients = await self.jobs(mailbox)
        self.assertEqual((job["status"], recipients["bob@remote.test"]["status"]), ("sent", "sent"))
        # The final report: Carol's mailbox is full (her address in another case).
        failed = report(
            verp,
            ("carol@remote.test", "failed", "5.2.2", "552 5.2.2 mailbox full"),
            ("nobody@remote.test", "failed", "5.1.1", "550 5.1.1 no such user"),
        )
        _, data_answer = await deferToThread(self.send, [verp], failed)
        self.assertEqual(data_answer[0], 250)
        job, recipients = await self.jobs(mailbox)
        self.assertEqual(job["status"], "failed")
        self.assertEqual(
            job["last_error"],
            {
                "code": 552,
                "enhanced_status_code": "5.2.2",
                "classification": "permanent",
                "response": "bounced by mx.remote.test: 552 5.2.2 mailbox full",
            },
        )
        carol = recipients["Carol@remote.test"]
        self.assertEqual(
            (carol["status"], carol["code"], carol["enhanced_status_code"], carol["response"]),
            ("bounced", 552, "5.2.2", "552 5.2.2 mailbox full"),
        )
        self.assertEqual(recipients["bob@remote.test"]["status"], "sent")
        self.assertEqual(set(recipients), {"bob@remote.test", "Carol@remote.test"})
        # Every report is recorded, the one about no recipient of the job too.
        events = await self.store.list_bounce_events(job["message_id"])
        self.assertEqual(len(events), 3)
        self.assertTrue(all(e.job_id == job_id for e in events))
        # The same bounce again changes nothing more.
        _, data_answer = await deferToThread(self.send, [verp], failed)
        self.assertEqual((await self.jobs(mailbox))[0]["updated_at"], job["updated_at"])

    async def test_a_recipient_the_relay_refused_stays_failed(self):
        relay = ScriptedRelay(rcpt_replies={"bob@remote.test": (550, "5.1.1 unknown user")})
        relay_port = relay.listen(self)
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{relay_port}"))
        mailbox, message_id, job_id = await queue_message(self.store, ["bob@remote.test"])
        await queue.process_due()
        verp = f"bounces+{message_id}@example.com"
        await deferToThread(
            self.send, [verp], report(verp, ("bob@remote.test", "failed", "5.2.2", "552 full"))
        )
        job, recipients = await self.jobs(mailbox)
        bob = recipients["bob@remote.test"]
        self.assertEqual((job["status"], bob["status"], bob["code"]), ("failed", "failed", 550))

    async def test_a_bounce_while_others_are_retried_fails_the_job_at_the_end(self):
        relay = ScriptedRelay(rcpt_replies={"carol@remote.test": (450, "4.2.0 try later")})
        relay_port = relay.listen(self)
        clock = make_clock()
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{relay_port}"), clock=clock)
        mailbox, message_id, _ = await queue_message(
            self.store, ["bob@remote.test", "carol@remote.test"]
        )
        await queue.process_due()
        job, recipients = await self.jobs(mailbox)
        self.assertEqual(
            (job["status"], recipients["bob@remote.test"]["status"]), ("retry", "sent")
        )
        verp = f"bounces+{message_id}@example.com"
        await deferToThread(
            self.send, [verp], report(verp, ("bob@remote.test", "failed", "5.1.1", "550 gone"))
        )
        job, recipients = await self.jobs(mailbox)
        self.assertEqual(
            (job["status"], recipients["bob@remote.test"]["status"]), ("retry", "bounced")
        )
        # The retry takes Carol and sends to her alone; the job ends failed, not sent.
        relay.rcpt_replies.clear()
        clock.advance(60)
        self.assertEqual(await queue.process_due(), 1)
        self.assertEqual(relay.received[-1]["rcpts"], ["carol@remote.test"])
        job, recipients = await self.jobs(mailbox)
        self.assertEqual(
            (
                job["status"],
                recipients["bob@remote.test"]["status"],
                recipients["carol@remote.test"]["status"],
            ),
            ("failed", "bounced", "sent"),
        )


class PostgresVerpBounceOutcomeTests(OnPostgres, VerpBounceOutcomeTests):
    pass
