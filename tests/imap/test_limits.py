"""IMAP's per-IP session limit (API.md 5.5): over ``imap.max_connections_per_ip`` logged-in
sessions from one address, LOGIN and AUTHENTICATE answer ``NO [LIMIT]`` and the session stays
usable. Loopback tests connect from 127.0.0.1 only, so they set a low limit."""

from __future__ import annotations

import base64
import imaplib
import socket
import time

import attrs
from twisted.internet import reactor, task, threads
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from haitatsu.config.model import IMAPConfig
from tests.imap.helpers import ADDRESS, IMAPTestCase
from tests.imap.test_session import d

LIMIT = b"NO [LIMIT] Too many connections from your address\r\n"


class SessionLimitTests(IMAPTestCase):
    def setUp(self):
        d_ = super().setUp()
        d_.addCallback(lambda _: self.limit(2))
        return d_

    def limit(self, n: int, idle_timeout: int = 1800):
        self.config = attrs.evolve(
            self.config,
            imap=IMAPConfig(max_connections_per_ip=n, idle_timeout_seconds=idle_timeout),
        )

    @d
    async def test_login_over_the_limit_is_refused_and_the_session_lives(self):
        # Sessions that have not logged in do not count; a failed login gives its slot back.
        bad = self.connect()
        answer = await bad.command(b"d LOGIN %s wrong" % ADDRESS.encode())
        self.assertEqual(answer, b"d NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        self.assertEqual(self.factory.sessions.total(), 0)
        first, second = await self.login(), await self.login()
        third = self.connect()
        self.assertEqual(await third.command(b"a " + self.login_args()), b"a " + LIMIT)
        token = base64.b64encode(b"\0" + ADDRESS.encode() + b"\0" + self.password.encode())
        self.assertEqual(await third.command(b"b AUTHENTICATE PLAIN " + token), b"b " + LIMIT)
        self.assertEqual(
            await third.command(b"c SELECT INBOX"), b"c BAD Command not valid in this state\r\n"
        )
        # The limit is checked before the password: nothing is learnt about it.
        self.assertEqual(await bad.command(b"d2 LOGIN %s wrong" % ADDRESS.encode()), b"d2 " + LIMIT)
        self.assertEqual(self.factory.sessions.held(third.transport.getPeer().host), 2)
        # Once one of the two ends, the waiting session can log in.
        self.assertIn(b"e OK LOGOUT", await first.command(b"e LOGOUT"))
        first.close()
        self.assertEqual(
            await third.command(b"f " + self.login_args()), b"f OK LOGIN completed\r\n"
        )
        # Another address has a count of its own; a reload changes the limit at once.
        other = IPv4Address("TCP", "198.51.100.3", 1143)
        proto = self.factory.buildProtocol(other)
        transport = StringTransport(peerAddress=other)
        proto.makeConnection(transport)
        self.addCleanup(proto.connectionLost, None)
        proto.dataReceived(b"g " + self.login_args() + b"\r\n")
        while b"g OK" not in transport.value():
            await task.deferLater(reactor, 0.005, lambda: None)
        self.limit(0)
        fourth = self.connect()
        self.assertEqual(
            await fourth.command(b"h " + self.login_args()), b"h OK LOGIN completed\r\n"
        )
        self.assertEqual(second.protocol.state, "auth")

    @d
    async def test_imaplib_on_loopback_and_every_way_a_session_ends(self):
        self.limit(1, idle_timeout=60)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        sessions = self.factory.sessions
        password = self.password

        async def settled(expected):
            deadline = time.monotonic() + 5
            while sessions.held("127.0.0.1") != expected:
                self.assertLess(time.monotonic(), deadline, sessions.held("127.0.0.1"))
                await task.deferLater(reactor, 0.01, lambda: None)

        def login():
            m = imaplib.IMAP4("127.0.0.1", number, timeout=10)
            try:
                m.login(ADDRESS, password)
            except imaplib.IMAP4.error:
                m.logout()
                raise
            return m

        first = await threads.deferToThread(login)
        with self.assertRaises(imaplib.IMAP4.error) as caught:
            await threads.deferToThread(login)
        self.assertIn("[LIMIT] Too many connections from your address", str(caught.exception))
        await threads.deferToThread(first.logout)
        await settled(0)
        # A client that drops the connection gives its slot back ...
        second = await threads.deferToThread(login)
        second.sock.shutdown(socket.SHUT_RDWR)
        second.sock.close()
        await settled(0)
        # ... and so does a session closed for idling.
        third = await threads.deferToThread(login)
        await settled(1)
        self.clock.advance(61)
        await settled(0)
        third.sock.close()
        fourth = await threads.deferToThread(login)
        await threads.deferToThread(fourth.logout)
        await settled(0)
