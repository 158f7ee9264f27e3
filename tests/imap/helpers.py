"""Driving an ``IMAPServer`` over a ``StringTransport`` against a real store.

The store runs its SQL and blob work in threads, so tests wait on the real reactor for the tagged
answer; the session's idle timer runs on a ``task.Clock`` the test controls.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from haitatsu.config.model import Config, IMAPConfig, LimitsConfig
from haitatsu.imap import IMAPFactory
from haitatsu.storage.records import Delivery
from tests.support import make_store

PEER = IPv4Address("TCP", "192.0.2.9", 40999)
ADDRESS = "alice@example.test"

SIMPLE = (
    b"From: Bob Example <bob@example.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Cc: carol@example.test\r\n"
    b"Subject: Lunch on Friday\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <lunch-1@example.test>\r\n"
    b"X-Custom: one\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"Bob\r\n"
)

MULTIPART = (
    b"From: Dave <dave@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Report attached\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"See the attached report.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream; name=report.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--XYZ--\r\n"
)

EIGHT_BIT = (
    "From: Jürgen Müller <juergen@example.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: Grüße aus Köln\r\n"
    "\r\n"
    "Hallo Alice, schöne Grüße!\r\n"
).encode()


def make_config(max_message_size: int = 100_000, idle_timeout: int = 1800) -> Config:
    return Config(
        imap=IMAPConfig(idle_timeout_seconds=idle_timeout),
        limits=LimitsConfig(max_message_size_bytes=max_message_size),
    )


class Session:
    """One IMAP session on a ``StringTransport``."""

    def __init__(self, testcase, factory, clock):
        self.protocol = factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.clock = clock
        self.protocol.makeConnection(self.transport)
        self._seen = 0
        testcase.addCleanup(self.close)

    def close(self):
        if self.transport.connected and not self.transport.disconnecting:
            self.transport.loseConnection()
        if not getattr(self, "_lost", False):
            self._lost = True
            self.protocol.connectionLost(None)

    def output(self) -> bytes:
        """Everything written since the last call."""
        data = self.transport.value()
        new, self._seen = data[self._seen :], len(data)
        return new

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    async def wait_for(self, pattern: bytes, timeout: float = 5.0) -> bytes:
        """Wait until the output since the last read matches ``pattern``; return that output."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.M | re.S)
        while True:
            data = self.transport.value()[self._seen :]
            if regex.search(data):
                self._seen += len(data)
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {data!r}")
            await task.deferLater(reactor, 0.002, lambda: None)

    async def command(self, line: bytes, timeout: float = 5.0) -> bytes:
        """Send one tagged command line and return everything up to its tagged answer."""
        tag = line.split(b" ", 1)[0]
        self.send(line + b"\r\n")
        return await self.wait_for(rb"^" + re.escape(tag) + rb" (OK|NO|BAD)[^\r\n]*\r\n", timeout)


class IMAPTestCase(unittest.TestCase):
    """A store with one mailbox and an IMAP app password, and a factory to connect to."""

    timeout = 30

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        # Outside the working directory: conftest.py removes ./tests.* when any pytest session
        # ends, which pulls the database out from under a test run at the same time.
        root = tempfile.mkdtemp(prefix="haitatsu-imap-")
        self.addCleanup(shutil.rmtree, root, True)
        self.store = await self.open_store(os.path.join(root, "store"))
        self.mailbox = await self.store.create_mailbox(ADDRESS)
        _, self.password = await self.store.create_app_password(
            self.mailbox.id, "mail client", ["imap"]
        )
        self.config = make_config()
        self.clock = task.Clock()
        self.spool_dir = os.path.join(root, "spool")
        os.makedirs(self.spool_dir)
        self.factory = IMAPFactory(
            lambda: self.config, self.store, self.clock, spool_dir=self.spool_dir
        )

    async def open_store(self, root: str):
        """The store the test runs on: SQLite here; PostgreSQL test cases override it."""
        return await make_store(self, root)

    def login_args(self) -> bytes:
        return b"LOGIN %s %s" % (ADDRESS.encode(), self.password.encode())

    def connect(self) -> Session:
        session = Session(self, self.factory, self.clock)
        session.output()
        return session

    async def login(self, session=None) -> Session:
        session = session or self.connect()
        answer = await session.command(b"L1 " + self.login_args())
        assert answer.endswith(b"L1 OK LOGIN completed\r\n"), answer
        return session

    async def selected(self, folder=b"INBOX", command=b"SELECT") -> Session:
        session = await self.login()
        answer = await session.command(b"S1 " + command + b" " + folder)
        assert b"S1 OK" in answer, answer
        return session

    async def deliver(self, data: bytes, folder="INBOX", flags=(), internal_date=None):
        """Store ``data`` through the real delivery path; return its ``MailboxMessage``."""
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            placed = await self.store.deliver(
                path,
                [Delivery(self.mailbox.id, folder=folder, flags=tuple(flags))],
                trace_id="TRACE",
                internal_date=internal_date,
            )
        finally:
            os.unlink(path)
        return placed[0]

    async def set_uid_next(self, folder_name: str, uid_next: int):
        """Jump a folder's UID counter, to test UIDs near 2**32 without 4 billion deliveries."""
        folder = await self.store.get_folder(self.mailbox.id, folder_name)

        async def txn_fn(txn):
            await txn.execute("UPDATE folders SET uid_next = ? WHERE id = ?", (uid_next, folder.id))

        await self.store.db.run("test_set_uid_next", txn_fn)

    async def info(self, mm):
        [(row, info)] = await self.store.get_messages(mm.folder_id, [mm.uid])
        return info
