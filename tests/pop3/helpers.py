"""Driving a ``POP3Server`` over a ``StringTransport`` against a real store.

The store runs SQL and blob work in threads, so tests wait on the real reactor for answers; the
session's idle timer and the login throttle run on a ``task.Clock`` the test controls.
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

from haitatsu.config.model import Config, POP3Config
from haitatsu.pop3 import POP3Factory
from haitatsu.storage.records import Delivery
from tests.support import make_store

PEER = IPv4Address("TCP", "192.0.2.10", 41000)
ADDRESS = "alice@example.test"

SIMPLE = (
    b"From: Bob <bob@example.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: Lunch\r\n"
    b"Message-ID: <lunch-1@example.test>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"Bob\r\n"
)

DOTS = (
    b"From: Carol <carol@example.test>\r\n"
    b"Subject: Dots\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"middle . dot\r\n"
    b"last line without newline"
)


def d(coro_fn):
    """Run an ``async def`` test method as a Deferred (trial waits on it)."""

    def wrapper(self):
        return defer.ensureDeferred(coro_fn(self))

    wrapper.__name__ = coro_fn.__name__
    return wrapper


def unstuff(multiline: bytes) -> bytes:
    """The message a POP3 client reads from a multi-line body (without the +OK line and the
    terminator): leading dots removed."""
    assert multiline.endswith(b"\r\n.\r\n"), multiline[-20:]
    lines = multiline[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class Session:
    """One POP3 session on a ``StringTransport``."""

    def __init__(self, testcase, factory, peer=PEER):
        self.protocol = factory.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
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
        data = self.transport.value()
        new, self._seen = data[self._seen :], len(data)
        return new

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    async def wait_for(self, pattern: bytes, timeout: float = 5.0) -> bytes:
        """Wait until the output since the last read matches ``pattern``; return that output."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.S)
        while True:
            data = self.transport.value()[self._seen :]
            if regex.fullmatch(data):
                self._seen += len(data)
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {data!r}")
            await task.deferLater(reactor, 0.002, lambda: None)

    async def command(self, line: bytes, multiline: bool = False) -> bytes:
        """Send a command; return its whole answer (through the terminator when multi-line)."""
        self.send(line + b"\r\n")
        if multiline:
            return await self.wait_for(rb"(\+OK.*?\r\n(.*\r\n)?\.\r\n|-ERR[^\r\n]*\r\n)")
        return await self.wait_for(rb"[+-][^\r\n]*\r\n")


class POP3TestCase(unittest.TestCase):
    """A store with one mailbox and a POP3 app password, and a factory to connect to."""

    timeout = 30

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        root = tempfile.mkdtemp(prefix="haitatsu-pop3-")
        self.addCleanup(shutil.rmtree, root, True)
        self.root = root
        self.store = await make_store(self, os.path.join(root, "store"))
        self.mailbox = await self.store.create_mailbox(ADDRESS)
        _, self.password = await self.store.create_app_password(
            self.mailbox.id, "mail client", ["pop3"]
        )
        self.config = Config(pop3=POP3Config(addr="127.0.0.1:0", idle_timeout_seconds=600))
        self.clock = task.Clock()
        self.factory = POP3Factory(lambda: self.config, self.store, self.clock)

    def connect(self, peer=PEER) -> Session:
        session = Session(self, self.factory, peer)
        session.output()
        return session

    async def login(self, session=None) -> Session:
        session = session or self.connect()
        answer = await session.command(b"USER " + ADDRESS.encode())
        assert answer == b"+OK Send your password\r\n", answer
        answer = await session.command(b"PASS " + self.password.encode())
        assert answer.startswith(b"+OK Logged in"), answer
        return session

    async def deliver(self, data: bytes, folder="INBOX", flags=()):
        """Store ``data`` through the real delivery path; return its ``MailboxMessage``."""
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            placed = await self.store.deliver(
                path,
                [Delivery(self.mailbox.id, folder=folder, flags=tuple(flags))],
                trace_id="TRACE",
            )
        finally:
            os.unlink(path)
        return placed[0]
