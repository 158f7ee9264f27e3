"""The queue's store methods on every engine: claims, leases, fencing; and on PostgreSQL two
nodes claiming at once with ``FOR UPDATE SKIP LOCKED``, each job sent once."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.storage import build_postgres_store
from haitatsu.storage.records import now_ns
from tests.queue.helpers import ScriptedRelay, make_config, make_queue, queue_message
from tests.support import PG_SKIP, make_pg_store, make_store

SECOND = 10**9


class QueueStoreContract:
    async def make(self):
        raise NotImplementedError

    async def test_claim_lease_renew_and_fence(self):
        store = await self.make()
        _, message_id, job_id = await queue_message(store, ["a@remote.test", "b@remote.test"])
        now = now_ns()
        (job,) = await store.claim_outbound("n1", 60 * SECOND, now=now)
        self.assertEqual((job.id, job.status, job.attempts), (job_id, "processing", 1))
        self.assertEqual((job.locked_by, job.locked_until), ("n1", now + 60 * SECOND))
        self.assertEqual(job.pending, ["a@remote.test", "b@remote.test"])
        self.assertEqual(job.message.id, message_id)
        self.assertEqual(await store.claim_outbound("n2", 60 * SECOND, now=now), [])
        self.assertTrue(await store.renew_outbound_lease(job_id, "n1", 1, now + 120 * SECOND))
        self.assertEqual(
            await store.claim_outbound("n2", 60 * SECOND, now=now + 100 * SECOND), [], "renewed"
        )
        (taken,) = await store.claim_outbound("n2", 60 * SECOND, now=now + 121 * SECOND)
        self.assertEqual((taken.locked_by, taken.attempts), ("n2", 2))
        self.assertFalse(await store.renew_outbound_lease(job_id, "n1", 1, now + 500 * SECOND))
        kept = await store.finish_outbound(
            job_id,
            "n1",
            1,
            status="sent",
            result={"classification": "success"},
            recipients={"a@remote.test": ("sent", 250, "2.0.0", "250 ok")},
        )
        self.assertFalse(kept, "n1 lost its lease: its report changes nothing")
        job = await store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.locked_by), ("processing", "n2"))
        self.assertEqual([r.status for r in job.recipients], ["pending", "pending"])
        self.assertTrue(
            await store.finish_outbound(
                job_id,
                "n2",
                2,
                status="retry",
                result={"classification": "temporary"},
                recipients={"a@remote.test": ("sent", 250, "2.0.0", "250 ok")},
                last_error={"code": 451},
                next_attempt_at=now + 1000 * SECOND,
            )
        )
        job = await store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.locked_by, job.locked_until), ("retry", "", None))
        self.assertEqual(job.pending, ["b@remote.test"])
        self.assertEqual(job.last_error, {"code": 451})
        self.assertEqual(await store.claim_outbound("n3", SECOND, now=now + 999 * SECOND), [])
        (again,) = await store.claim_outbound("n3", SECOND, now=now + 1000 * SECOND)
        self.assertEqual(again.pending, ["b@remote.test"])
        self.assertEqual(
            [a.result.get("classification") for a in again.attempt_log],
            ["success", "temporary", None],
        )

    async def test_enqueue_wakes_listeners_on_commit(self):
        from haitatsu.storage.store.outbound import OUTBOUND_CHANNEL
        from tests.support import changes_settled

        store = await self.make()
        heard = []
        store.changes.subscribe(OUTBOUND_CHANNEL, heard.append)
        _, _, job_id = await queue_message(store, ["a@remote.test"])
        await changes_settled(store)
        self.assertEqual(heard, [{"type": "outbound_queued", "id": job_id}])

    async def test_hosted_domains(self):
        store = await self.make()
        await store.create_mailbox("alice@Example.com")
        self.assertTrue(await store.is_hosted_domain("example.com"))
        self.assertTrue(await store.is_hosted_domain("EXAMPLE.COM."))
        self.assertFalse(await store.is_hosted_domain("remote.test"))
        await store.set_domain_quota("quota.test", 10)
        self.assertTrue(await store.is_hosted_domain("quota.test"))


class SQLiteQueueStoreTests(QueueStoreContract, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresQueueStoreTests(QueueStoreContract, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)

    async def test_two_nodes_claim_at_once_each_job_sent_once(self):
        root = self.mktemp()
        store1 = await make_pg_store(self, root)
        store2 = build_postgres_store(reactor, store1.db.engine.dsn, os.path.join(root, "blobs"), 4)
        await store2.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store2.close()))
        relay = ScriptedRelay()
        port = relay.listen(self)
        config = make_config(f"127.0.0.1:{port}")
        jobs = [(await queue_message(store1, [f"r{i}@remote.test"]))[2] for i in range(12)]
        queues = [
            make_queue(self, store, config, node=f"node-{n}")
            for n, store in enumerate((store1, store2, store1, store2))
        ]
        counts = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(q.process_due()) for q in queues]
        )
        self.assertEqual(sum(counts), 12)
        self.assertEqual(
            sorted(r["rcpts"][0] for r in relay.received),
            sorted(f"r{i}@remote.test" for i in range(12)),
        )
        for job_id in jobs:
            job = await store2.get_outbound_job(job_id)
            self.assertEqual((job.status, job.attempts), ("sent", 1))
        self.assertGreater(
            len({(await store1.get_outbound_job(j)).attempt_log[0].node for j in jobs}), 1
        )
