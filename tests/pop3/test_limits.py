"""POP3's per-IP session limit: POP3 has no key of its own, so ``imap.max_connections_per_ip``
logged-in sessions per address (counted apart from IMAP's); over it PASS and AUTH answer
``-ERR [SYS/TEMP]`` (RFC 3206) and the session may try again later."""

from __future__ import annotations

import base64
import poplib
import socket
import time

import attrs
from twisted.internet import reactor, task, threads

from haitatsu.config.model import IMAPConfig
from tests.pop3.helpers import ADDRESS, POP3TestCase, d

REFUSED = b"-ERR [SYS/TEMP] Too many connections from your address\r\n"


class SessionLimitTests(POP3TestCase):
    def limit(self, n: int):
        self.config = attrs.evolve(self.config, imap=IMAPConfig(max_connections_per_ip=n))

    @d
    async def test_pass_and_auth_over_the_limit(self):
        self.limit(1)
        first = await self.login()
        second = self.connect()
        await second.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await second.command(b"PASS " + self.password.encode()), REFUSED)
        token = base64.b64encode(b"\0" + ADDRESS.encode() + b"\0" + self.password.encode())
        self.assertEqual(await second.command(b"AUTH PLAIN " + token), REFUSED)
        self.assertTrue((await first.command(b"QUIT")).startswith(b"+OK"))
        first.close()
        self.assertTrue((await second.command(b"AUTH PLAIN " + token)).startswith(b"+OK Logged"))
        self.assertEqual(self.factory.sessions.total(), 1)

    @d
    async def test_poplib_on_loopback(self):
        self.limit(1)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        password = self.password
        sessions = self.factory.sessions

        async def settled(expected):
            deadline = time.monotonic() + 5
            while sessions.held("127.0.0.1") != expected:
                self.assertLess(time.monotonic(), deadline, sessions.held("127.0.0.1"))
                await task.deferLater(reactor, 0.01, lambda: None)

        def login():
            p = poplib.POP3("127.0.0.1", number, timeout=10)
            p.user(ADDRESS)
            try:
                p.pass_(password)
            except poplib.error_proto:
                p.quit()
                raise
            return p

        first = await threads.deferToThread(login)
        with self.assertRaises(poplib.error_proto) as caught:
            await threads.deferToThread(login)
        self.assertEqual(
            caught.exception.args[0], b"-ERR [SYS/TEMP] Too many connections from your address"
        )
        first.sock.shutdown(socket.SHUT_RDWR)
        first.close()
        await settled(0)
        second = await threads.deferToThread(login)
        await threads.deferToThread(second.quit)
        await settled(0)
