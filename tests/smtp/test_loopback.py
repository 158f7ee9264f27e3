"""A real client over a real socket: Python's smtplib, in a thread, against the MX listening on
127.0.0.1 with the real store."""

from __future__ import annotations

import smtplib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.smtp import InboundSMTPFactory
from tests.smtp.helpers import make_config, temp_dir
from tests.support import make_store

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: over loopback\r\n"
    b"\r\n"
    b"Hello over a real socket.\r\n"
    b".leading dot\r\n"
)


class SmtplibTests(unittest.TestCase):
    async def setUp(self):
        root = temp_dir(self)
        self.store = await make_store(self, root)
        self.bob = await self.store.create_mailbox("bob@example.com")
        factory = InboundSMTPFactory(
            lambda: make_config(max_message_size=100_000, max_line_length=4000),
            self.store,
            reactor,
            root + "/spool",
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def client_session(self):
        """Runs in a thread: EHLO, one message to a known and an unknown recipient, a message
        over SIZE, QUIT. Returns what the client saw."""
        seen = {}
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example", timeout=10) as c:
            code, _ = c.ehlo()
            seen["ehlo"] = code
            seen["features"] = dict(c.esmtp_features)
            seen["refused"] = c.sendmail(
                "alice@example.org", ["bob+loop@example.com", "nobody@example.com"], MESSAGE
            )
            try:
                c.sendmail("alice@example.org", ["bob@example.com"], b"x" * 200_000)
            except smtplib.SMTPSenderRefused as e:
                seen["oversize"] = (e.smtp_code, e.smtp_error)
            seen["noop"] = c.noop()
        return seen

    async def test_smtplib_delivers(self):
        seen = await deferToThread(self.client_session)
        self.assertEqual(seen["ehlo"], 250)
        self.assertEqual(
            seen["features"],
            {"pipelining": "", "size": "100000", "8bitmime": "", "enhancedstatuscodes": ""},
        )
        self.assertEqual(seen["refused"], {"nobody@example.com": (550, b"5.1.1 unknown recipient")})
        self.assertEqual(
            seen["oversize"], (552, b"5.3.4 message size exceeds fixed maximum message size")
        )
        self.assertEqual(seen["noop"], (250, b"2.0.0 OK"))
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        [mm] = await self.store.list_folder_messages(folder.id)
        [(_, info)] = await self.store.get_messages(folder.id, [mm.uid])
        raw = await self.store.read_message(info)
        self.assertTrue(raw.startswith(b"Received: from client.example (127.0.0.1 [127.0.0.1])"))
        self.assertTrue(raw.endswith(MESSAGE), raw)
        self.assertEqual(mm.plus_tag, "loop")

    def pipelined_session(self) -> bytes:
        """Runs in a thread: the whole conversation in one write, as a pipelining client may
        (RFC 2920 allows it up to DATA; we also send the message and QUIT). Returns every byte
        the server sent until it closed the connection."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.recv(1000)
            s.sendall(
                b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n"
                b"RCPT TO:<bob@example.com>\r\nRCPT TO:<nobody@example.com>\r\n"
                b"RCPT TO:<bob+x@example.com>\r\nDATA\r\n"
                + MESSAGE.replace(b"\r\n.", b"\r\n..")
                + b".\r\nQUIT\r\n"
            )
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        return received

    async def test_pipelined_over_tcp(self):
        """Pausing the TCP transport while a lookup runs, and resuming it, answers a pipelined
        conversation in order."""
        received = await deferToThread(self.pipelined_session)
        lines = received.split(b"\r\n")
        finals = [line[:3] for line in lines if line[3:4] == b" "]
        self.assertEqual(
            finals, [b"250", b"250", b"250", b"550", b"250", b"354", b"250", b"221"], received
        )
