"""The filters' shared state (greylisting, rate limits) on both engines, and on PostgreSQL from
two stores on one database at once (two nodes)."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.storage.store.filterstate import (
    GREYLIST_CLIENT,
    GREYLIST_EARLY,
    GREYLIST_KNOWN,
    GREYLIST_NEW,
    GREYLIST_PASSED,
)
from tests.support import PG_SKIP, make_pg_database, make_pg_store, make_store

S = 10**9  # one second in ns
T0 = 1_700_000_000 * S


class FilterStateContractMixin:
    async def make(self):
        raise NotImplementedError

    async def test_greylist_lifecycle(self):
        store = await self.make()

        async def check(now, rcpt="bob@example.com", passes=0):
            return await store.greylist_check(
                "192.0.2.0/24", "alice@example.org", rcpt, now, 300 * S, 3600 * S, 86400 * S, passes
            )

        first = await check(T0)
        self.assertEqual(
            (first.state, first.allowed, first.retry_after), (GREYLIST_NEW, False, 300)
        )
        early = await check(T0 + 100 * S)
        self.assertEqual((early.state, early.retry_after), (GREYLIST_EARLY, 200))
        passed = await check(T0 + 301 * S)
        self.assertEqual(
            (passed.state, passed.allowed, passed.first_seen), (GREYLIST_PASSED, True, T0)
        )
        known = await check(T0 + 5000 * S)
        self.assertEqual(known.state, GREYLIST_KNOWN)
        # Gone longer than the allow period: starts over.
        again = await check(T0 + 5000 * S + 86401 * S)
        self.assertEqual(again.state, GREYLIST_NEW)
        # Another recipient is another triplet; retried too late, it starts over as well.
        self.assertEqual((await check(T0, "carol@example.com")).state, GREYLIST_NEW)
        self.assertEqual((await check(T0 + 3601 * S, "carol@example.com")).state, GREYLIST_NEW)

    async def test_client_auto_allow(self):
        store = await self.make()

        async def check(now, rcpt, passes=2):
            return await store.greylist_check(
                "198.51.100.0/24", "a@x.example", rcpt, now, 60 * S, 3600 * S, 86400 * S, passes
            )

        for rcpt in ("one@example.com", "two@example.com"):
            self.assertEqual((await check(T0, rcpt)).state, GREYLIST_NEW)
            self.assertEqual((await check(T0 + 61 * S, rcpt)).state, GREYLIST_PASSED)
        self.assertEqual((await check(T0 + 70 * S, "three@example.com")).state, GREYLIST_CLIENT)
        # Without auto-allow the new triplet is deferred like any other.
        self.assertEqual((await check(T0 + 70 * S, "four@example.com", 0)).state, GREYLIST_NEW)

    async def test_token_bucket(self):
        store = await self.make()
        takes = [await store.rate_limit_take("ip:192.0.2.7", 3, 0.5, T0) for _ in range(4)]
        self.assertEqual([t.allowed for t in takes], [True, True, True, False])
        self.assertEqual(takes[-1].retry_after, 2.0)
        # Two seconds later one token is back (0.5 per second), and only one.
        later = [await store.rate_limit_take("ip:192.0.2.7", 3, 0.5, T0 + 2 * S) for _ in range(2)]
        self.assertEqual([t.allowed for t in later], [True, False])
        # Buckets are separate; a long pause refills to the capacity, not beyond.
        self.assertTrue((await store.rate_limit_take("ip:192.0.2.8", 3, 0.5, T0)).allowed)
        full = [
            await store.rate_limit_take("ip:192.0.2.7", 3, 0.5, T0 + 1000 * S) for _ in range(4)
        ]
        self.assertEqual([t.allowed for t in full], [True, True, True, False])

    async def test_prune(self):
        store = await self.make()
        await store.greylist_check("c", "s", "r", T0, S, 10 * S, 10 * S, 0)
        await store.greylist_check("c", "s", "r2", T0 + 100 * S, S, 10 * S, 10 * S, 0)
        await store.rate_limit_take("old", 1, 1, T0)
        await store.rate_limit_take("new", 1, 1, T0 + 100 * S)
        removed = await store.prune_filter_state(T0 + 50 * S, T0 + 50 * S)
        self.assertEqual(removed, 2)
        self.assertEqual(
            (await store.greylist_check("c", "s", "r2", T0 + 101 * S, S, 10 * S, 10 * S, 0)).state,
            GREYLIST_PASSED,
        )
        self.assertFalse((await store.rate_limit_take("new", 1, 1e-9, T0 + 100 * S)).allowed)


class SQLiteFilterStateTests(FilterStateContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresFilterStateTests(FilterStateContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class TwoNodeFilterStateTests(unittest.TestCase):
    """Two stores on one PostgreSQL database, as two nodes have."""

    skip = PG_SKIP

    async def setUp(self):
        from haitatsu.storage import build_postgres_store

        dsn = await make_pg_database(self)
        self.nodes = []
        for name in ("a", "b"):
            root = os.path.join(self.mktemp(), name)
            os.makedirs(root)
            store = build_postgres_store(reactor, dsn, os.path.join(root, "blobs"), 4)
            await store.open()
            self.addCleanup(lambda s=store: defer.Deferred.fromCoroutine(s.close()))
            self.nodes.append(store)

    async def test_concurrent_takes_count_once(self):
        a, b = self.nodes
        takes = await defer.gatherResults(
            [(a if i % 2 else b).rate_limit_take("ip:203.0.113.5", 5, 1e-6, T0) for i in range(12)]
        )
        self.assertEqual(sum(t.allowed for t in takes), 5)

    async def test_greylisted_on_one_node_passes_on_the_other(self):
        a, b = self.nodes
        args = ("203.0.113.0/24", "a@x.example", "bob@example.com")
        firsts = await defer.gatherResults(
            [n.greylist_check(*args, T0, 60 * S, 3600 * S, 86400 * S, 0) for n in (a, b)]
        )
        self.assertEqual(sorted(f.state for f in firsts), [GREYLIST_EARLY, GREYLIST_NEW])
        self.assertEqual(
            (await b.greylist_check(*args, T0 + 61 * S, 60 * S, 3600 * S, 86400 * S, 0)).state,
            GREYLIST_PASSED,
        )
        self.assertEqual(
            (await a.greylist_check(*args, T0 + 62 * S, 60 * S, 3600 * S, 86400 * S, 0)).state,
            GREYLIST_KNOWN,
        )
