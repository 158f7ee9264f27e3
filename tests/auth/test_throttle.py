"""Login throttling (API.md 5.3): ten failures in ten minutes lock an IP out for fifteen, for IMAP
and POP3 alike, on every node sharing the database."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.trial import unittest

from haitatsu.auth.throttle import LoginThrottle
from haitatsu.config.model import Config, POP3Config
from haitatsu.imap import IMAPFactory
from haitatsu.pop3 import POP3Factory
from haitatsu.storage import build_postgres_store, open_sqlite_store
from tests.imap.helpers import Session as IMAPSession
from tests.pop3.helpers import Session as POP3Session
from tests.support import PG_SKIP, make_pg_database

ADDRESS = "alice@example.test"
ATTACKER = IPv4Address("TCP", "198.51.100.7", 50000)
BYSTANDER = IPv4Address("TCP", "203.0.113.20", 50001)
START = 1_800_000_000.0


def d(coro_fn):
    def wrapper(self):
        return defer.ensureDeferred(coro_fn(self))

    wrapper.__name__ = coro_fn.__name__
    return wrapper


class Node:
    """One haitatsu node: its own store on the shared database, its own throttle (so its own
    memory), an IMAP and a POP3 factory sharing that throttle, all on one test clock."""

    def __init__(self, testcase, store, clock):
        self.testcase = testcase
        self.store = store
        self.clock = clock
        self.throttle = LoginThrottle(store, clock)
        config = Config(pop3=POP3Config(addr="127.0.0.1:0"))
        self.imap = IMAPFactory(lambda: config, store, clock, throttle=self.throttle)
        self.pop3 = POP3Factory(lambda: config, store, clock, throttle=self.throttle)

    async def imap_login(self, password: str, peer=ATTACKER) -> bytes:
        session = IMAPSession(self.testcase, self.imap, self.clock)
        session.protocol.transport.peerAddress = peer
        session.protocol.peer = peer
        session.output()
        return await session.command(b"a LOGIN %s %s" % (ADDRESS.encode(), password.encode()))

    async def pop3_login(self, password: str, peer=ATTACKER) -> bytes:
        session = POP3Session(self.testcase, self.pop3, peer)
        session.output()
        await session.command(b"USER " + ADDRESS.encode())
        return await session.command(b"PASS " + password.encode())


IMAP_OK = b"a OK LOGIN completed\r\n"
IMAP_FAILED = b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
POP3_FAILED = b"-ERR [AUTH] Invalid credentials\r\n"


class ThrottleTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.root = tempfile.mkdtemp(prefix="haitatsu-throttle-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.store = await self.open_store()
        mailbox = await self.store.create_mailbox(ADDRESS)
        _, self.password = await self.store.create_app_password(
            mailbox.id, "client", ["imap", "pop3"]
        )
        self.clock = task.Clock()
        self.clock.advance(START)
        self.node = Node(self, self.store, self.clock)

    async def open_store(self):
        """A store on the test's database: a second call is a second node on the same data."""
        store = await open_sqlite_store(
            reactor, os.path.join(self.root, "haitatsu.db"), os.path.join(self.root, "blobs")
        )
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store


class PostgresNodes:
    """Nodes on a PostgreSQL database of the test's own (each its own pool and memory)."""

    skip = PG_SKIP
    _dsn = None

    async def open_store(self):
        if self._dsn is None:
            self._dsn = await make_pg_database(self)
        store = build_postgres_store(
            reactor, self._dsn, os.path.join(self.root, "blobs"), max_connections=2
        )
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store


class ProtocolThrottleTests(ThrottleTestCase):
    @d
    async def test_ten_imap_failures_lock_the_ip_for_fifteen_minutes_on_imap_and_pop3(self):
        for _ in range(10):
            self.assertEqual(await self.node.imap_login("wrong"), IMAP_FAILED)
        # the right password now fails with the ordinary reply, on both protocols
        self.assertEqual(await self.node.imap_login(self.password), IMAP_FAILED)
        self.assertEqual(await self.node.pop3_login(self.password), POP3_FAILED)
        # ... and is not even checked: the app password was never used
        [record] = await self.store.list_app_passwords((await self._mailbox()).id)
        self.assertIsNone(record.last_used_at)
        # another address is not affected
        self.assertEqual(await self.node.imap_login(self.password, BYSTANDER), IMAP_OK)
        self.clock.advance(15 * 60 - 1)
        self.assertEqual(await self.node.pop3_login(self.password), POP3_FAILED)
        self.clock.advance(1)
        self.assertTrue((await self.node.pop3_login(self.password)).startswith(b"+OK Logged in"))
        self.assertEqual(await self.node.imap_login(self.password), IMAP_OK)

    @d
    async def test_pop3_failures_lock_imap(self):
        for _ in range(10):
            self.assertEqual(await self.node.pop3_login("wrong"), POP3_FAILED)
        self.assertEqual(await self.node.imap_login(self.password), IMAP_FAILED)

    @d
    async def test_failures_on_both_protocols_add_up(self):
        for _ in range(5):
            await self.node.pop3_login("wrong")
            await self.node.imap_login("wrong")
        self.assertEqual(await self.node.imap_login(self.password), IMAP_FAILED)
        self.assertEqual(await self.node.pop3_login(self.password), POP3_FAILED)

    @d
    async def test_nine_failures_do_not_lock_and_a_success_clears_the_count(self):
        for _ in range(9):
            await self.node.imap_login("wrong")
        self.assertEqual(await self.node.imap_login(self.password), IMAP_OK)
        for _ in range(9):
            await self.node.pop3_login("wrong")
        self.assertTrue((await self.node.pop3_login(self.password)).startswith(b"+OK Logged in"))
        self.assertIsNone(await self.store.login_locked(ATTACKER.host, int(START * 1e9)))

    @d
    async def test_the_window_is_ten_minutes(self):
        for _ in range(9):
            await self.node.imap_login("wrong")
        self.clock.advance(10 * 60)
        # the tenth failure comes after the window: a new count starts, no lockout
        await self.node.imap_login("wrong")
        self.assertEqual(await self.node.imap_login(self.password), IMAP_OK)

    @d
    async def test_lockout_is_shared_by_a_node_with_its_own_store_and_memory(self):
        for _ in range(10):
            await self.node.imap_login("wrong")
        other = Node(self, await self.open_store(), self.clock)
        self.assertEqual(await other.pop3_login(self.password), POP3_FAILED)
        self.assertEqual(await other.imap_login(self.password), IMAP_FAILED)
        self.clock.advance(15 * 60)
        self.assertEqual(await other.imap_login(self.password), IMAP_OK)

    @d
    async def test_failures_counted_on_two_nodes_add_up(self):
        other = Node(self, await self.open_store(), self.clock)
        for _ in range(5):
            await self.node.imap_login("wrong")
            await other.pop3_login("wrong")
        self.assertEqual(await self.node.pop3_login(self.password), POP3_FAILED)
        self.assertEqual(await other.imap_login(self.password), IMAP_FAILED)

    async def _mailbox(self):
        return await self.store.find_mailbox(ADDRESS)


class PostgresProtocolThrottleTests(PostgresNodes, ProtocolThrottleTests):
    """The same on PostgreSQL: the lockout crosses nodes through the shared database."""


class LoginThrottleTests(ThrottleTestCase):
    @d
    async def test_counts_in_memory_when_the_database_is_down(self):
        await self.store.close()
        throttle = self.node.throttle
        for _ in range(9):
            self.assertFalse(await throttle.record_failure("192.0.2.1"))
        self.assertTrue(await throttle.record_failure("192.0.2.1"))
        self.assertTrue(await throttle.is_locked("192.0.2.1"))
        self.assertFalse(await throttle.is_locked("192.0.2.2"))
        self.clock.advance(900)
        self.assertFalse(await throttle.is_locked("192.0.2.1"))

    @d
    async def test_memory_is_bounded(self):
        throttle = LoginThrottle(self.store, self.clock, max_tracked=5)
        for i in range(20):
            await throttle.record_failure(f"192.0.2.{i}")
        self.assertLessEqual(len(throttle._entries), 5)
        # the database still has the count of an address the memory dropped
        now, minute = int(START * 10**9), 60 * 10**9
        until = await self.store.record_login_failure("192.0.2.0", now, 10 * minute, 2, minute)
        self.assertEqual(until, now + minute)

    @d
    async def test_pruning_keeps_live_lockouts(self):
        now = int(START * 1e9)
        hour = 3600 * 10**9
        for _ in range(10):
            await self.node.throttle.record_failure("192.0.2.50")  # locked
        await self.store.record_login_failure("192.0.2.51", now, 600 * 10**9, 10, 900 * 10**9)
        removed = await self.store.prune_login_failures(now - 24 * hour)
        self.assertEqual(removed, 0)
        removed = await self.store.prune_login_failures(now + 25 * hour)
        self.assertEqual(removed, 2)
        self.assertIsNone(await self.store.login_locked("192.0.2.50", now))
