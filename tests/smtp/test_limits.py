"""Per-IP limits of the MX and submission (API.md 5.2): ``limits.max_connections_per_ip``
concurrent connections (421 4.7.0 at connect, then close) and the
``limits.inbound_messages_per_minute_per_ip`` token bucket at MAIL FROM (450 4.7.1).

Loopback tests connect from 127.0.0.1 only, so they set a low limit; they check that a slot is
given back however a connection ends: QUIT, a reset, an idle timeout, a failed TLS handshake.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time

import attrs
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.limits import PeerCounter, TokenBuckets
from haitatsu.smtp import InboundSMTPFactory
from haitatsu.submission import SubmissionFactory
from tests.smtp.helpers import make_config, temp_dir
from tests.submission.helpers import make_config as submission_config
from tests.submission.test_session import SubmissionTestCase
from tests.tls.ca import TLSFixture

PEER = IPv4Address("TCP", "192.0.2.7", 40123)
OTHER_PEER = IPv4Address("TCP", "198.51.100.3", 40999)
REFUSED = b"421 4.7.0 too many connections from your address\r\n"
RATE = b"450 4.7.1 rate limit exceeded, try again later\r\n"


def limited(config, connections=20, per_minute=120):
    return attrs.evolve(
        config,
        limits=attrs.evolve(
            config.limits,
            max_connections_per_ip=connections,
            inbound_messages_per_minute_per_ip=per_minute,
        ),
    )


class Connection:
    """One session of a shared factory on a ``StringTransport``."""

    def __init__(self, factory, peer=PEER):
        self.protocol = factory.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def said(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        return self.said()

    def close(self):
        self.transport.loseConnection()
        self.protocol.connectionLost(None)


class PerIPProtocolTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.config = limited(make_config(), connections=2, per_minute=2)
        self.factory = InboundSMTPFactory(
            lambda: self.config, None, self.clock, temp_dir(self) + "/spool"
        )

    def test_connections_over_the_limit_get_421_and_are_closed(self):
        first, second = Connection(self.factory), Connection(self.factory)
        self.assertTrue(first.said().startswith(b"220 "))
        self.assertTrue(second.said().startswith(b"220 "))
        third = Connection(self.factory)
        self.assertEqual(third.said(), REFUSED)
        self.assertTrue(third.transport.disconnecting)
        # Nothing the refused client sends is read.
        self.assertEqual(third.send(b"EHLO client.example\r\n"), b"")
        third.close()
        # Another address has its own count.
        self.assertTrue(Connection(self.factory, OTHER_PEER).said().startswith(b"220 "))
        self.assertEqual(self.factory.connections.held(PEER.host), 2)
        first.close()
        self.assertEqual(self.factory.connections.held(PEER.host), 1)
        self.assertTrue(Connection(self.factory).said().startswith(b"220 "))

    def test_the_limit_is_read_at_each_connection(self):
        Connection(self.factory), Connection(self.factory)
        self.config = limited(self.config, connections=0)  # 0: no limit (a reload)
        self.assertTrue(Connection(self.factory).said().startswith(b"220 "))
        self.config = limited(self.config, connections=3)
        self.assertEqual(Connection(self.factory).said(), REFUSED)

    def test_message_rate_is_a_token_bucket_at_mail_from(self):
        one, other = Connection(self.factory), Connection(self.factory, OTHER_PEER)
        one.said(), other.said()
        one.send(b"EHLO client.example\r\n")
        other.send(b"EHLO client.example\r\n")
        for _ in range(2):
            self.assertEqual(one.send(b"MAIL FROM:<a@example.org>\r\n"), b"250 2.1.0 sender OK\r\n")
            one.send(b"RSET\r\n")
        self.assertEqual(one.send(b"MAIL FROM:<a@example.org>\r\n"), RATE)
        # The refusal is no transaction: RCPT still wants MAIL.
        self.assertEqual(
            one.send(b"RCPT TO:<b@example.com>\r\n"), b"503 5.5.1 need MAIL before RCPT\r\n"
        )
        # A malformed MAIL takes no token; another address has its own bucket.
        self.assertEqual(one.send(b"MAIL FROM:<nope\r\n")[:3], b"501")
        self.assertEqual(other.send(b"MAIL FROM:<a@example.org>\r\n"), b"250 2.1.0 sender OK\r\n")
        # Two a minute: one comes back after 30 seconds.
        self.clock.advance(29)
        self.assertEqual(one.send(b"MAIL FROM:<a@example.org>\r\n"), RATE)
        self.clock.advance(1)
        self.assertEqual(one.send(b"MAIL FROM:<a@example.org>\r\n"), b"250 2.1.0 sender OK\r\n")


class BucketTests(unittest.SynchronousTestCase):
    def test_refill_cap_and_forgetting(self):
        clock = task.Clock()
        buckets = TokenBuckets(clock, max_addresses=2)
        self.assertEqual([buckets.take("a", 3) for _ in range(4)], [True, True, True, False])
        clock.advance(3600)  # saved up to the rate, no more
        self.assertEqual([buckets.take("a", 3) for _ in range(4)], [True, True, True, False])
        self.assertTrue(all(buckets.take("b", 0) for _ in range(1000)))  # 0: no limit
        buckets.take("c", 1)
        buckets.take("d", 1)  # "a" is forgotten: full again
        self.assertTrue(buckets.take("a", 3))

    def test_counter(self):
        counter = PeerCounter()
        self.assertTrue(counter.acquire("a", 1))
        self.assertFalse(counter.acquire("a", 1))
        self.assertTrue(counter.acquire("b", 1))
        counter.release("a")
        self.assertEqual((counter.held("a"), counter.total()), (0, 1))
        self.assertTrue(all(counter.acquire("c", 0) for _ in range(50)))


class SubmissionLimitTests(SubmissionTestCase):
    config = limited(submission_config(), connections=1, per_minute=1)

    async def test_connection_limit_applies_and_message_rate_does_not(self):
        await self.login()
        for _ in range(3):
            self.assertEqual(
                await self.session.converse(b"MAIL FROM:<alice@example.com>\r\n"),
                [b"250 2.1.0 sender OK"],
            )
            self.session.command(b"RSET\r\n")
        # Each SubmissionSession has its own factory; two on one factory share a count.
        factory = self.session.factory
        extra = Connection(factory)
        self.assertEqual(extra.said(), REFUSED)
        self.assertIsNone(factory.message_rate)


class LoopbackLimitTests(unittest.TestCase):
    """smtplib against a listening MX and an implicit-TLS submission port on 127.0.0.1."""

    timeout = 30

    def setUp(self):
        self.clock = task.Clock()  # the idle timers
        self.config = limited(make_config(idle_timeout=60), connections=2)
        self.factory = InboundSMTPFactory(
            lambda: self.config, None, self.clock, temp_dir(self) + "/spool"
        )
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def settled(self, counter, expected, timeout=5.0):
        deadline = time.monotonic() + timeout
        while counter.held("127.0.0.1") != expected:
            if time.monotonic() > deadline:
                self.fail(f"still {counter.held('127.0.0.1')} connections, expected {expected}")
            await task.deferLater(reactor, 0.01, lambda: None)

    def connect(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=10)

    async def test_smtplib_is_refused_over_the_limit_and_slots_come_back(self):
        counter = self.factory.connections
        first = await deferToThread(self.connect)
        second = await deferToThread(self.connect)
        with self.assertRaises(smtplib.SMTPConnectError) as caught:
            await deferToThread(self.connect)
        self.assertEqual(
            (caught.exception.smtp_code, caught.exception.smtp_error),
            (421, b"4.7.0 too many connections from your address"),
        )
        await self.settled(counter, 2)
        # QUIT gives one back ...
        await deferToThread(first.quit)
        await self.settled(counter, 1)
        third = await deferToThread(self.connect)
        # ... and so does a connection that just goes away.
        second.sock.shutdown(socket.SHUT_RDWR)
        second.close()
        await self.settled(counter, 1)
        # ... and the idle timeout.
        self.clock.advance(61)
        await self.settled(counter, 0)
        # (smtplib reads the timeout's 421 as the answer to its NOOP)
        self.assertEqual((await deferToThread(third.noop))[0], 421)
        third.close()
        fourth = await deferToThread(self.connect)
        self.assertEqual((await deferToThread(fourth.noop))[0], 250)
        await deferToThread(fourth.quit)
        await self.settled(counter, 0)

    async def test_failed_tls_handshakes_give_their_slot_back(self):
        fixture = TLSFixture(temp_dir(self))
        tls = fixture.service(reactor)
        config = limited(submission_config(), connections=1)
        factory = SubmissionFactory(
            lambda: config, None, reactor, temp_dir(self) + "/spool", implicit_tls=True
        )
        port = reactor.listenTCP(0, tls.wrap_factory(factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        counter = factory.connections

        def garbage():
            with socket.create_connection(("127.0.0.1", number), timeout=10) as s:
                s.sendall(b"EHLO not-tls.example\r\n")
                return s.recv(100)

        self.assertEqual(await deferToThread(garbage), b"")
        await self.settled(counter, 0)

        def over_tls():
            context = fixture.ca.client_context(fixture.DEFAULT_NAME)
            first = smtplib.SMTP_SSL("127.0.0.1", number, context=context, timeout=10)
            try:
                # The second is refused inside TLS, so the client can read why.
                smtplib.SMTP_SSL("127.0.0.1", number, context=context, timeout=10)
            except smtplib.SMTPConnectError as e:
                refused = (e.smtp_code, e.smtp_error)
            else:
                refused = None
            first.quit()
            return refused

        self.assertEqual(
            await deferToThread(over_tls), (421, b"4.7.0 too many connections from your address")
        )
        await self.settled(counter, 0)

        def abandoned_handshake():
            context = ssl.create_default_context()  # does not trust the test CA: fails
            try:
                smtplib.SMTP_SSL("127.0.0.1", number, context=context, timeout=10)
            except ssl.SSLError:
                return True
            return False

        self.assertTrue(await deferToThread(abandoned_handshake))
        await self.settled(counter, 0)
