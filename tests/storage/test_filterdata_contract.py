"""What the spam_score and duplicate filters keep in the store (migration 025), on both engines,
and on PostgreSQL from two stores on one database at once (two nodes)."""

from __future__ import annotations

import os
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.storage.store.filterdata import DUPLICATE_NEW, DUPLICATE_SEEN
from tests.support import PG_SKIP, deliver_bytes, make_pg_database, make_pg_store, make_store

S = 10**9  # one second in ns
DAY = 86400 * S
KEY = "a" * 64
MESSAGE = b"From: a@example.org\r\nMessage-ID: <d@example.org>\r\nSubject: d\r\n\r\nbody\r\n"


def now_ns():
    return time.time_ns()


class FilterDataContractMixin:
    async def make(self):
        raise NotImplementedError

    async def test_mailbox_spam_thresholds(self):
        store = await self.make()
        a = await store.create_mailbox("a@example.com", spam_thresholds={"junk_threshold": 0})
        b = await store.create_mailbox("b@example.com")
        c = await store.create_mailbox("c@example.com", spam_thresholds={"spam_threshold": 0.5})
        found = await store.mailbox_spam_thresholds([a.id, b.id, c.id, a.id, "nope"])
        self.assertEqual(found, {a.id: {"junk_threshold": 0}, c.id: {"spam_threshold": 0.5}})
        self.assertEqual(await store.mailbox_spam_thresholds([]), {})
        await store.update_mailbox(a.id, spam_thresholds=None)
        self.assertEqual(await store.mailbox_spam_thresholds([a.id]), {})

    async def test_inbound_filter_data_is_the_three_reads_in_one(self):
        store = await self.make()
        a = await store.create_mailbox("a@example.com", spam_thresholds={"junk_threshold": 2})
        b = await store.create_mailbox("b@other.example")
        c = await store.create_mailbox("c@example.com")
        await store.put_sieve_script(a.id, "one", "keep;", activate=True)
        await store.put_sieve_script(a.id, "two", "discard;")
        await store.put_sieve_script(c.id, "three", "keep;", activate=True)
        await store.create_sender_rule("global", "", "block", "email", "x@spam.example")
        await store.create_sender_rule("mailbox", a.id, "allow", "domain", "friend.example")
        await store.create_sender_rule("mailbox", c.id, "block", "ip", "192.0.2.1")
        await store.create_sender_rule("domain", "other.example", "block", "cidr", "10.0.0.0/8")
        await store.create_sender_rule("domain", "third.example", "allow", "email", "y@z.example")
        for ids, domains in (
            ([a.id, b.id], ["example.com", "other.example"]),
            ([b.id, a.id, b.id], ["other.example"]),
            ([c.id], []),
            ([], ["third.example"]),
        ):
            data = await store.inbound_filter_data(ids, domains)
            self.assertEqual(data.mailbox_ids, frozenset(ids))
            self.assertEqual(
                list(data.sender_rules), await store.sender_rules_for(ids, domains=domains)
            )
            self.assertEqual(data.spam_thresholds, await store.mailbox_spam_thresholds(ids))
            scripts = {}
            for mailbox_id in set(ids):
                script = await store.active_sieve_script(mailbox_id)
                if script is not None:
                    scripts[mailbox_id] = script
            self.assertEqual(data.sieve_scripts, scripts)
        data = await store.inbound_filter_data([a.id, b.id], ["example.com", "other.example"])
        self.assertEqual(len(data.sender_rules), 3)
        self.assertEqual(data.sieve_scripts[a.id].name, "one")

    async def test_a_stored_message_makes_duplicates(self):
        store = await self.make()
        box = await store.create_mailbox("a@example.com")
        other = await store.create_mailbox("b@example.com")
        t0 = now_ns()
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T1", t0, DAY), DUPLICATE_NEW)
        # The same delivery asking again (a second placement) is not its own duplicate.
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T1", t0, DAY), DUPLICATE_NEW)
        await deliver_bytes(store, MESSAGE, box.id, trace_id="T1")
        self.assertEqual(
            await store.duplicate_check(box.id, KEY, "T2", t0 + S, DAY), DUPLICATE_SEEN
        )
        self.assertEqual(
            await store.duplicate_check(box.id, KEY, "T3", t0 + 2 * S, DAY), DUPLICATE_SEEN
        )
        # Per mailbox.
        self.assertEqual(
            await store.duplicate_check(other.id, KEY, "T2", t0 + S, DAY), DUPLICATE_NEW
        )
        # Past the window it is new again, and claimed by the new delivery.
        later = t0 + DAY + S
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T4", later, DAY), DUPLICATE_NEW)
        self.assertEqual(
            await store.duplicate_check(box.id, KEY, "T5", later + S, DAY), DUPLICATE_NEW
        )  # T4 never stored its message: T5 takes the claim over

    async def test_a_claim_whose_delivery_never_stored_is_no_duplicate(self):
        """The storage failed after the claim (the client got a 4xx and retries): the retry
        is delivered, and the copy after that is the duplicate."""
        store = await self.make()
        box = await store.create_mailbox("a@example.com")
        t0 = now_ns()
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T1", t0, DAY), DUPLICATE_NEW)
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T2", t0 + S, DAY), DUPLICATE_NEW)
        await deliver_bytes(store, MESSAGE, box.id, trace_id="T2")
        self.assertEqual(
            await store.duplicate_check(box.id, KEY, "T3", t0 + 2 * S, DAY), DUPLICATE_SEEN
        )

    async def test_prune(self):
        store = await self.make()
        box = await store.create_mailbox("a@example.com")
        t0 = now_ns()
        await store.duplicate_check(box.id, KEY, "T1", t0, DAY)
        await store.duplicate_check(box.id, "b" * 64, "T2", t0 + 10 * S, DAY)
        self.assertEqual(await store.prune_duplicates(t0 + 5 * S), 1)
        self.assertEqual(await store.prune_duplicates(t0 + 5 * S), 0)
        # The pruned key is new again.
        await deliver_bytes(store, MESSAGE, box.id, trace_id="T1")
        self.assertEqual(await store.duplicate_check(box.id, KEY, "T9", t0 + S, DAY), DUPLICATE_NEW)


class SQLiteFilterDataTests(FilterDataContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresFilterDataTests(FilterDataContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class TwoNodeDuplicateTests(unittest.TestCase):
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

    async def test_stored_on_one_node_is_a_duplicate_on_the_other(self):
        a, b = self.nodes
        box = await a.create_mailbox("a@example.com")
        t0 = now_ns()
        self.assertEqual(await a.duplicate_check(box.id, KEY, "T1", t0, DAY), DUPLICATE_NEW)
        await deliver_bytes(a, MESSAGE, box.id, trace_id="T1")
        self.assertEqual(await b.duplicate_check(box.id, KEY, "T2", t0 + S, DAY), DUPLICATE_SEEN)

    async def test_concurrent_copies_claim_once(self):
        a, b = self.nodes
        box = await a.create_mailbox("a@example.com")
        t0 = now_ns()
        answers = await defer.gatherResults(
            [(a if i % 2 else b).duplicate_check(box.id, KEY, f"T{i}", t0, DAY) for i in range(6)]
        )
        # Nothing stored yet: every copy is new. None may be thrown away for a delivery that
        # has not committed: that one may still fail.
        self.assertEqual(answers, [DUPLICATE_NEW] * 6)
