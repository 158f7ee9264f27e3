"""The event log in the store: written in the delivery's transaction, listed, claimed."""

import os
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.interfaces import OverQuota
from haitatsu.storage.records import Delivery
from haitatsu.storage.store.events import Received, new_event_id
from tests.support import PG_SKIP, make_pg_store, make_store

MESSAGE = b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


async def deliver(store, deliveries, received, data=MESSAGE):
    fd, path = tempfile.mkstemp(suffix=".eml")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        return await store.deliver(path, deliveries, trace_id="T1", received=received)
    finally:
        os.unlink(path)


class EventLogTests:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("carol@example.com")

    async def test_delivery_writes_one_event_per_routing_result(self):
        placed = await deliver(
            self.store,
            [Delivery(self.bob.id), Delivery(self.carol.id)],
            [
                Received("bob+news@example.com", "bob@example.com", "news", (self.bob.id,)),
                Received("carol@example.com", "carol@example.com", "", (self.carol.id,)),
            ],
        )
        events = await self.store.list_events()
        self.assertEqual(len(events), 2)
        by_rcpt = {e.payload["original_rcpt"]: e for e in events}
        bob = by_rcpt["bob+news@example.com"]
        self.assertEqual(bob.event_type, "message.received")
        self.assertEqual(bob.status, "queued")
        self.assertEqual(bob.mailbox_id, self.bob.id)
        self.assertEqual(bob.message_id, placed[0].message_id)
        self.assertEqual(bob.trace_id, "T1")
        self.assertEqual(
            bob.payload,
            {
                "event": "message.received",
                "trace_id": "T1",
                "message_id": placed[0].message_id,
                "routing_rule_id": "",
                "original_rcpt": "bob+news@example.com",
                "base_rcpt": "bob@example.com",
                "plus_tag": "news",
                "default_destinations": [self.bob.id],
            },
        )

    async def test_several_destinations_leave_the_row_mailbox_empty(self):
        await deliver(
            self.store,
            [Delivery(self.bob.id), Delivery(self.carol.id)],
            [Received("team@example.com", "team@example.com", "", (self.bob.id, self.carol.id))],
        )
        [event] = await self.store.list_events()
        self.assertEqual(event.mailbox_id, "")
        self.assertEqual(event.payload["default_destinations"], [self.bob.id, self.carol.id])
        # Both mailboxes' streams see it.
        replay = await self.store.events_after(self.carol.id, "")
        self.assertEqual([e.id for e in replay], [event.id])

    async def test_a_failed_delivery_writes_no_event(self):
        with self.assertRaises(ValueError):
            await deliver(
                self.store,
                [Delivery(self.bob.id, folder="NoSuchFolder")],
                [Received("bob@example.com", "bob@example.com", "", (self.bob.id,))],
            )
        await self.store.update_mailbox(self.bob.id, quota_bytes=10)
        with self.assertRaises(OverQuota):
            await deliver(
                self.store,
                [Delivery(self.bob.id)],
                [Received("bob@example.com", "bob@example.com", "", (self.bob.id,))],
            )
        self.assertEqual(await self.store.list_events(), [])

    async def test_a_mailbox_skipped_for_quota_is_no_destination(self):
        await self.store.update_mailbox(self.carol.id, quota_bytes=10)
        await deliver(
            self.store,
            [Delivery(self.bob.id), Delivery(self.carol.id)],
            [
                Received("bob@example.com", "bob@example.com", "", (self.bob.id,)),
                Received("carol@example.com", "carol@example.com", "", (self.carol.id,)),
            ],
        )
        events = await self.store.list_events()
        self.assertEqual([e.payload["original_rcpt"] for e in events], ["bob@example.com"])

    async def test_filters_and_pagination(self):
        for _ in range(3):
            await self.store.record_event("x.test", {"event": "x.test"}, mailbox_id=self.bob.id)
        await self.store.record_event("y.test", {"event": "y.test"}, trace_id="TR")
        self.assertEqual(len(await self.store.list_events(event_type="x.test")), 3)
        self.assertEqual(len(await self.store.list_events(mailbox_id=self.bob.id)), 3)
        [traced] = await self.store.list_events(trace_id="TR")
        self.assertEqual(traced.event_type, "y.test")
        first = await self.store.list_events(limit=2)
        rest = await self.store.list_events(limit=2, before=(first[-1].created_at, first[-1].id))
        self.assertEqual(len(first + rest), 4)
        self.assertEqual(len({e.id for e in first + rest}), 4)

    async def test_claim_leases_one_row_and_marks_types_without_endpoint(self):
        await self.store.record_event("nobody.listens", {"event": "nobody.listens"})
        wanted = await self.store.record_event("x.test", {"event": "x.test"})
        claimed = await self.store.claim_event("node-a", {"x.test"})
        self.assertEqual(claimed.id, wanted)
        self.assertEqual(claimed.status, "processing")
        self.assertEqual(claimed.locked_by, "node-a")
        # Leased: nobody else gets it.
        self.assertIsNone(await self.store.claim_event("node-b", {"x.test"}))
        [other] = await self.store.list_events(event_type="nobody.listens")
        self.assertEqual(other.status, "no_endpoint")
        # A finish by a node that does not hold the lease is dropped.
        self.assertFalse(await self.store.finish_event(wanted, "node-b", "delivered", 1))
        self.assertTrue(await self.store.finish_event(wanted, "node-a", "delivered", 1))
        row = await self.store.get_event(wanted)
        self.assertEqual((row.status, row.attempts, row.locked_by), ("delivered", 1, ""))

    async def test_claims_share_the_group_committed_transactions(self):
        """Every delivery writes an event that wakes the webhook workers: their claims go
        into the shared write transactions, and two claims in one still lease a row once."""
        wanted = await self.store.record_event("x.test", {"event": "x.test"})
        before = len(self.store.db.group.batch_sizes)
        claims = await defer.gatherResults(
            [
                defer.ensureDeferred(self.store.claim_event(node, {"x.test"}))
                for node in ("a", "b", "c")
            ]
        )
        self.assertGreater(max(self.store.db.group.batch_sizes[before:]), 1)
        [claimed] = [c for c in claims if c is not None]
        self.assertEqual(claimed.id, wanted)
        self.assertEqual((await self.store.get_event(wanted)).locked_by, claimed.locked_by)

    async def test_no_endpoint_rows_are_delivered_once_an_endpoint_appears(self):
        event_id = await self.store.record_event("late.type", {"event": "late.type"})
        self.assertIsNone(await self.store.claim_event("n", set()))
        self.assertEqual((await self.store.get_event(event_id)).status, "no_endpoint")
        claimed = await self.store.claim_event("n", {"late.type"})
        self.assertEqual(claimed.id, event_id)

    async def test_an_expired_lease_can_be_claimed_again(self):
        event_id = await self.store.record_event("x.test", {"event": "x.test"})
        await self.store.claim_event("dead-node", {"x.test"}, lease_seconds=0)
        claimed = await self.store.claim_event("live-node", {"x.test"})
        self.assertEqual((claimed.id, claimed.locked_by), (event_id, "live-node"))

    async def test_event_ids_order_as_written(self):
        ids = [new_event_id() for _ in range(1000)]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 1000)


class SQLiteEventLogTests(EventLogTests, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresEventLogTests(EventLogTests, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class PostgresClaimTests(unittest.TestCase):
    skip = PG_SKIP

    async def test_concurrent_claims_on_two_nodes_take_different_rows(self):
        """FOR UPDATE SKIP LOCKED: node B passes over the row node A is claiming."""
        from twisted.internet import defer, reactor

        from haitatsu.storage import build_postgres_store

        a = await make_pg_store(self)
        b = build_postgres_store(reactor, a.db.engine.dsn, self.mktemp(), 2)
        await b.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(b.close()))
        ids = {await a.record_event("x.test", {"event": "x.test"}) for _ in range(6)}
        claims = await defer.gatherResults(
            [store.claim_event(name, {"x.test"}) for store, name in [(a, "a"), (b, "b")] * 3]
        )
        claimed = [c.id for c in claims if c is not None]
        self.assertEqual(len(claimed), len(set(claimed)))
        self.assertEqual(set(claimed), ids)
