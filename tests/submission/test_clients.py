"""Real clients over a real socket on 127.0.0.1 (the plaintext listener, TLS off): Python's
smtplib with ``login()`` and ``send_message``, and Debian's ``swaks`` with AUTH PLAIN."""

from __future__ import annotations

import email.message
import shutil
import smtplib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from haitatsu.submission import SubmissionFactory
from tests.smtp.helpers import temp_dir
from tests.submission.helpers import make_config, verify
from tests.submission.test_messages import queue_rows
from tests.submission.test_session import add_key
from tests.support import make_store

SWAKS = shutil.which("swaks")


class ClientTests(unittest.TestCase):
    async def setUp(self):
        root = temp_dir(self)
        self.store = await make_store(self, root)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")
        _, self.password = await self.store.create_app_password(self.alice.id, "mua", ["smtp"])
        self.key = await add_key(self.store, "example.com")
        factory = SubmissionFactory(lambda: make_config(), self.store, reactor, root + "/spool")
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def sent(self):
        folder = await self.store.get_folder(self.alice.id, "Sent")
        rows = await self.store.list_folder_messages(folder.id)
        views = await self.store.get_messages(folder.id, [m.uid for m in rows])
        return [await self.store.read_message(info) for _, info in views]

    def smtplib_session(self):
        """Runs in a thread: a failed login, a good one, then send_message with a Bcc."""
        seen = {}
        message = email.message.EmailMessage()
        message["From"] = "Alice <alice@example.com>"
        message["To"] = "bob@example.com"
        message["Bcc"] = "carol@remote.example"
        message["Subject"] = "via smtplib"
        message.set_content("Hello from smtplib.\n")
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example", timeout=10) as c:
            c.ehlo()
            seen["auth"] = c.esmtp_features.get("auth")
            try:
                c.login("alice@example.com", "wrong")
            except smtplib.SMTPAuthenticationError as e:
                seen["bad_login"] = (e.smtp_code, e.smtp_error)
            seen["login"] = c.login("alice@example.com", self.password)
            seen["refused"] = c.send_message(message)
            try:
                c.sendmail("bob@example.com", ["x@remote.example"], b"Subject: x\r\n\r\nx\r\n")
            except smtplib.SMTPSenderRefused as e:
                seen["other_sender"] = (e.smtp_code, e.smtp_error)
        return seen

    async def test_smtplib(self):
        seen = await deferToThread(self.smtplib_session)
        self.assertEqual(seen["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertEqual(seen["bad_login"], (535, b"5.7.8 Authentication credentials invalid"))
        self.assertEqual(seen["login"], (235, b"2.7.0 Authentication successful"))
        self.assertEqual(seen["refused"], {})
        self.assertEqual(seen["other_sender"], (553, b"5.7.1 sender not allowed"))
        [raw] = await self.sent()
        self.assertIn(b"Subject: via smtplib\r\n", raw)
        self.assertNotIn(b"Bcc", raw)
        self.assertTrue(verify(raw, [self.key]))
        _, rcpts = await queue_rows(self.store)
        self.assertEqual([r["rcpt"] for r in rcpts], ["carol@remote.example"])

    async def test_swaks(self):
        if SWAKS is None:
            raise unittest.SkipTest("swaks is not installed (Debian package swaks)")
        # swaks takes any argument that starts with "-" for an option, even as the value of
        # --auth-password (or --auth-password=...): give it a password that does not.
        for _ in range(50):
            if not self.password.startswith("-"):
                break
            _, self.password = await self.store.create_app_password(
                self.alice.id, "swaks", ["smtp"]
            )
        out, err, code = await getProcessOutputAndValue(
            SWAKS,
            [
                "--server", f"127.0.0.1:{self.port}",
                "--timeout", "10",
                "--ehlo", "client.example",
                "--auth", "PLAIN",
                "--auth-user", "alice@example.com",
                "--auth-password", self.password,
                "--from", "alice@example.com",
                "--to", "bob@example.com,dave@remote.example",
                "--header", "Subject: via swaks",
                "--body", "Hello from swaks.",
            ],
            env={"PATH": "/usr/bin:/bin"},
            reactor=reactor,
        )  # fmt: skip
        self.assertEqual(code, 0, out + err)
        self.assertIn(b"<-  235 2.7.0 Authentication successful", out)
        self.assertRegex(out, rb"<-  250 2\.0\.0 OK [0-9A-Z]{26}")
        [raw] = await self.sent()
        self.assertIn(b"Subject: via swaks\r\n", raw)
        self.assertTrue(verify(raw, [self.key]))
        inbox = await self.store.get_folder(self.bob.id, "INBOX")
        self.assertEqual(len(await self.store.list_folder_messages(inbox.id)), 1)
        _, rcpts = await queue_rows(self.store)
        self.assertEqual([r["rcpt"] for r in rcpts], ["dave@remote.example"])
