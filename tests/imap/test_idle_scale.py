"""Thousands of IMAP sessions in IDLE on one server (real TCP connections on loopback, the
clients being Twisted protocols in the same reactor): one delivery reaches every one of them
as ``* 1 EXISTS``. What the waiting costs: one change-bus subscription for the mailbox, one
store read for the change, no thread and no timer per connection beyond its idle timeout.

Logging in with an app password costs one argon2id verification (about a third of a second on
a busy test machine), which would make 1,500 logins take minutes; so this test's factory checks
passwords with twisted.cred's in-memory checker (user = the mailbox id). Login with app
passwords is tested in test_session.py and by the real clients."""

from __future__ import annotations

import resource
import threading
import time

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer, protocol, reactor, task
from twisted.protocols.basic import LineOnlyReceiver

from haitatsu.auth.throttle import ThrottledPortal
from haitatsu.imap.account import IMAPRealm
from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.imap.test_session import d

CONNECTIONS = 1500
PASSWORD = b"in-memory secret"


class IdlingClient(LineOnlyReceiver):
    """LOGIN, SELECT INBOX, IDLE; then wait for EXISTS."""

    MAX_LENGTH = 64 * 1024

    def __init__(self, user: bytes):
        self.user = user
        self.idling = defer.Deferred()
        self.exists = defer.Deferred()
        self.lost = defer.Deferred()
        self.lines: list[bytes] = []

    def lineReceived(self, line):
        self.lines.append(line)
        if line.startswith(b"* OK") and len(self.lines) == 1:
            self.sendLine(b"a LOGIN " + self.user + b' "' + PASSWORD + b'"')
        elif line.startswith(b"a OK"):
            self.sendLine(b"b SELECT INBOX")
        elif line.startswith(b"b OK"):
            self.sendLine(b"c IDLE")
        elif line.startswith(b"+ ") and not self.idling.called:
            self.idling.callback(None)
        elif line.endswith(b" EXISTS") and self.idling.called and not self.exists.called:
            self.exists.callback(line)
        elif line[:2] in (b"a ", b"b ", b"c "):
            failed, self.idling = self.idling, defer.Deferred()
            failed.errback(AssertionError(line))

    def connectionLost(self, reason):
        self.lost.callback(None)


class IdlingFactory(protocol.ClientFactory):
    def __init__(self, user):
        self.user = user
        self.clients: list[IdlingClient] = []

    def buildProtocol(self, addr):
        client = IdlingClient(self.user)
        self.clients.append(client)
        return client


class ThousandsOfIdleTests(IMAPTestCase):
    timeout = 600

    def raise_file_limit(self, wanted):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < wanted:
            if hard != resource.RLIM_INFINITY and hard < wanted:
                self.skipTest(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    def listen(self):
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{self.mailbox.id: PASSWORD})
        # Every connection comes from 127.0.0.1: the per-IP session limit (tests/imap/
        # test_limits.py) is not what this test measures.
        self.factory.sessions = None
        self.factory.portal = ThrottledPortal(
            Portal(IMAPRealm(self.store), [checker]), self.factory.throttle
        )
        self.sessions = []
        build = self.factory.buildProtocol

        def remember(addr):
            p = build(addr)
            self.sessions.append(p)
            return p

        self.factory.buildProtocol = remember
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1", backlog=512)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def until(self, predicate, what, seconds):
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await task.deferLater(reactor, 0.02, lambda: None)

    @d
    async def test_one_delivery_reaches_every_idle_session(self):
        self.raise_file_limit(2 * CONNECTIONS + 200)
        port = self.listen()
        clients = IdlingFactory(self.mailbox.id.encode())
        self.addCleanup(self.disconnect_all, clients)
        threads_before = threading.active_count()
        reactor_calls_before = len(reactor.getDelayedCalls())
        for start in range(0, CONNECTIONS, 100):
            batch_end = min(start + 100, CONNECTIONS)
            for _ in range(start, batch_end):
                reactor.connectTCP("127.0.0.1", port, clients)
            await self.until(lambda end=batch_end: len(clients.clients) >= end, "connections", 60)
            await defer.gatherResults([c.idling for c in clients.clients], consumeErrors=True)
        self.assertEqual(len(self.sessions), CONNECTIONS)
        self.assertTrue(all(s._idling for s in self.sessions))

        fanout = self.factory.fanout
        self.assertEqual(fanout.subscribers(self.mailbox.id), CONNECTIONS)
        # One subscription on the store's change bus for all of them.
        self.assertEqual(len(self.store.changes._subscribers[self.mailbox.id]), 1)
        # Waiting costs no thread and no reactor timer per connection; each session's only
        # timer is its idle timeout (on the factory's clock).
        self.assertLess(threading.active_count() - threads_before, 5)
        self.assertLess(len(reactor.getDelayedCalls()) - reactor_calls_before, 10)
        self.assertEqual(len(self.clock.getDelayedCalls()), CONNECTIONS)

        reads = fanout.reads_started
        await self.deliver(SIMPLE)
        await self.until(lambda: all(c.exists.called for c in clients.clients), "every EXISTS", 120)
        seen = await defer.gatherResults([c.exists for c in clients.clients])
        self.assertEqual(set(seen), {b"* 1 EXISTS"})
        # The change was read from the store once (twice if a refresh raced the first read).
        self.assertLessEqual(fanout.reads_started - reads, 2)
        self.assertTrue(all(s.view.exists == 1 for s in self.sessions))

    @d
    async def test_sessions_selecting_at_once_share_one_read(self):
        """Sessions that SELECT the folder while its rows are being read wait for that read:
        every one of them holds the same rows, not a copy each (issue 5's IDLE memory)."""
        for _ in range(50):
            await self.deliver(SIMPLE)
        port = self.listen()
        clients = IdlingFactory(self.mailbox.id.encode())
        self.addCleanup(self.disconnect_all, clients)
        for _ in range(200):
            reactor.connectTCP("127.0.0.1", port, clients)
        await self.until(lambda: len(clients.clients) >= 200, "connections", 60)
        await defer.gatherResults([c.idling for c in clients.clients], consumeErrors=True)
        shared = {id(s.view.view_rows._shared) for s in self.sessions}
        self.assertEqual(len(shared), 1)
        self.assertEqual(self.sessions[0].view.exists, 50)

    async def disconnect_all(self, clients):
        for client in clients.clients:
            if client.transport is not None:
                client.transport.loseConnection()
        await defer.gatherResults([c.lost for c in clients.clients])
        await self.until(
            lambda: all(not s.transport.connected for s in self.sessions), "sessions to end", 60
        )
        self.assertEqual(self.factory.fanout.subscribers(self.mailbox.id), 0)
