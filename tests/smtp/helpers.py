"""Driving an ``InboundESMTP`` over a ``StringTransport`` and reading its replies back."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from haitatsu.config.model import Config, LimitsConfig, ServerConfig, SMTPConfig
from haitatsu.smtp import InboundSMTPFactory

PEER = IPv4Address("TCP", "192.0.2.7", 40123)
HOST = "mx.example.test"
NODE = "node-1"

_FINAL = re.compile(rb"\d{3}( |\Z)")


def temp_dir(testcase) -> str:
    """A private absolute directory removed after the test. (trial's ``mktemp`` paths live in
    the working directory, where another test run in the same checkout may remove them.)"""
    path = tempfile.mkdtemp(prefix="haitatsu-smtp-")
    testcase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def make_config(
    max_message_size: int = 10_000,
    max_recipients: int = 3,
    max_line_length: int = 200,
    idle_timeout: int = 60,
) -> Config:
    return Config(
        server=ServerConfig(public_hostname=HOST, instance_name=NODE),
        smtp=SMTPConfig(idle_timeout_seconds=idle_timeout, max_line_length=max_line_length),
        limits=LimitsConfig(
            max_message_size_bytes=max_message_size, max_inbound_recipients=max_recipients
        ),
    )


class Session:
    """One server session on a ``StringTransport``; the idle timer runs on ``self.clock``."""

    def __init__(
        self,
        testcase,
        store=None,
        config: Config | None = None,
        spool_dir=None,
        extra_extensions=None,
        chain=None,
        clock=None,
    ):
        self.clock = clock or task.Clock()
        self.config = config or make_config()
        self.spool_dir = spool_dir or os.path.join(temp_dir(testcase), "spool")
        self.factory = InboundSMTPFactory(
            lambda: self.config,
            store,
            self.clock,
            self.spool_dir,
            extra_extensions,
            chain=(lambda: chain) if chain is not None else None,
        )
        self.factory.doStart()
        testcase.addCleanup(self.factory.doStop)
        self.protocol = self.factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)
        self._seen = 0

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def lines(self) -> list[bytes]:
        """Reply lines written since the last call."""
        out = self.transport.value()
        new = out[self._seen :]
        self._seen = len(out)
        assert new == b"" or new.endswith(b"\r\n"), new
        return new.split(b"\r\n")[:-1] if new else []

    def pending_replies(self) -> int:
        """How many complete replies are waiting in the transport, unread."""
        new = self.transport.value()[self._seen :]
        return sum(1 for line in new.split(b"\r\n")[:-1] if _FINAL.match(line))

    def command(self, data: bytes) -> list[bytes]:
        """Send ``data`` and return the reply lines it produced synchronously."""
        self.send(data)
        return self.lines()

    async def converse(self, data: bytes, replies: int = 1, timeout: float = 10.0) -> list[bytes]:
        """Send ``data`` and wait on the real reactor until ``replies`` complete replies are
        out (the store answers from its threads)."""
        self.send(data)
        waited = 0.0
        while self.pending_replies() < replies:
            if waited > timeout:
                raise AssertionError(f"timed out; got {self.transport.value()[self._seen :]!r}")
            await task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01
        return self.lines()

    def spool_files(self) -> list[str]:
        return sorted(os.listdir(self.spool_dir)) if os.path.isdir(self.spool_dir) else []
