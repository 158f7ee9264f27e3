"""Retention on both engines (docs/storage.md "Retention"): pruning QRESYNC's vanished UIDs with
a per-folder horizon, and purging messages an outbound job once sent (API.md 5.7)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.storage.records import now_ns
from tests.queue.helpers import queue_message
from tests.support import PG_SKIP, deliver_bytes, make_pg_store, make_store

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: keep\r\n\r\nHello.\r\n"
DAY = 86400 * 10**9


class RetentionContractMixin:
    async def make(self):
        raise NotImplementedError

    async def run_sql(self, store, sql, params=()):
        async def txn_fn(txn):
            await txn.execute(sql, params)

        await store.db.run("test_sql", txn_fn)

    async def inbox_with(self, store, count):
        mailbox = await store.create_mailbox("keep@example.com")
        for _ in range(count):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        return mailbox, await store.get_folder(mailbox.id, "INBOX")

    async def expunge(self, store, folder, uids):
        await store.store_flags(folder.id, uids, ["\\Deleted"], "+")
        await store.expunge(folder.id, uids)
        return (await store.get_folder_by_id(folder.id)).highest_modseq

    # -- vanished UIDs ----------------------------------------------------------------------

    async def test_prune_keeps_every_uid_above_the_horizon_and_says_when_it_is_short(self):
        store = await self.make()
        _, inbox = await self.inbox_with(store, 6)
        start = (await store.get_folder_by_id(inbox.id)).highest_modseq
        first = await self.expunge(store, inbox, [1])
        second = await self.expunge(store, inbox, [2])
        third = await self.expunge(store, inbox, [3])
        report = await store.vanished_report(inbox.id, start)
        self.assertEqual((report.uids, report.complete, report.pruned_modseq), ((1, 2, 3), True, 0))
        self.assertEqual(report.uid_next, 7)
        # Only UID 2's row is old; pruning goes by MODSEQ, so UID 1 (older) goes with it.
        await self.run_sql(
            store,
            "UPDATE expunged_uids SET expunged_at = 5 WHERE folder_id = ? AND uid = 2",
            (inbox.id,),
        )
        self.assertEqual(await store.prune_vanished(10), {"folders": 1, "uids": 2})
        self.assertEqual(await store.vanished_since(inbox.id, start), [3])
        report = await store.vanished_report(inbox.id, start)
        self.assertEqual(
            (report.uids, report.complete, report.pruned_modseq), ((3,), False, second)
        )
        # At or above the horizon the list is complete.
        for modseq, uids in ((second, (3,)), (third, ())):
            report = await store.vanished_report(inbox.id, modseq)
            self.assertEqual((report.uids, report.complete), (uids, True))
        self.assertFalse((await store.vanished_report(inbox.id, first)).complete)
        # Nothing old left: a second run prunes nothing and keeps the horizon.
        self.assertEqual(await store.prune_vanished(10), {"folders": 0, "uids": 0})
        self.assertEqual((await store.vanished_report(inbox.id, 0)).pruned_modseq, second)
        # Recent rows are kept whatever the cutoff says about other folders.
        self.assertEqual(await store.vanished_since(inbox.id, second), [3])

    async def test_folder_delta_below_the_horizon_is_every_live_row(self):
        store = await self.make()
        _, inbox = await self.inbox_with(store, 4)
        start = (await store.get_folder_by_id(inbox.id)).highest_modseq
        horizon = await self.expunge(store, inbox, [2])
        await self.run_sql(store, "UPDATE expunged_uids SET expunged_at = 5")
        await store.prune_vanished(10)
        await store.store_flags(inbox.id, [4], ["\\Seen"], "+")
        delta = await store.folder_delta(inbox.id, start)
        self.assertFalse(delta.complete)
        self.assertEqual([r.uid for r in delta.changed], [1, 3, 4])
        self.assertEqual(delta.vanished, ())
        delta = await store.folder_delta(inbox.id, horizon)
        self.assertTrue(delta.complete)
        self.assertEqual([r.uid for r in delta.changed], [4])

    async def test_new_expunges_are_dated_and_a_deleted_folder_reports_nothing(self):
        store = await self.make()
        mailbox, inbox = await self.inbox_with(store, 2)
        before = now_ns()
        await self.expunge(store, inbox, [1])
        # Written now: a cutoff before now prunes nothing.
        self.assertEqual(await store.prune_vanished(before), {"folders": 0, "uids": 0})
        self.assertEqual(await store.prune_vanished(now_ns() + DAY), {"folders": 1, "uids": 1})
        folder = await store.create_folder(mailbox.id, "Gone")
        await store.delete_folder(folder.id)
        report = await store.vanished_report(folder.id, 0)
        self.assertEqual((report.uids, report.uid_next), ((), 0))

    # -- purging messages an outbound job sent ----------------------------------------------

    async def finish(self, store, job_id, status):
        [job] = await store.claim_outbound("node-1", 60 * 10**9, now=now_ns() + 1)
        self.assertEqual(job.id, job_id)
        state = "sent" if status == "sent" else "failed"
        self.assertTrue(
            await store.finish_outbound(
                job.id,
                "node-1",
                job.attempts,
                status=status,
                result={"code": 250},
                recipients={"bob@remote.test": (state, 250, "2.0.0", "ok")},
            )
        )

    async def sent_copy(self, store, mailbox):
        sent = await store.get_folder(mailbox.id, "Sent")
        [row] = await store.list_folder_messages(sent.id)
        return row

    async def test_a_pending_job_blocks_the_purge_and_a_finished_one_does_not(self):
        store = await self.make()
        mailbox, message_id, job_id = await queue_message(store, ["bob@remote.test"])
        await store.soft_delete_message((await self.sent_copy(store, mailbox)).id)
        # Queued: the message must stay (the queue still has to send it).
        self.assertFalse(await store.purge_message(message_id))
        self.assertEqual((await store.get_outbound_job(job_id)).message_id, message_id)
        await self.finish(store, job_id, "sent")
        self.assertTrue(await store.purge_message(message_id))
        job = await store.get_outbound_job(job_id)
        self.assertEqual((job.status, job.message_id), ("sent", ""))
        self.assertEqual(
            [(r.rcpt, r.status) for r in job.recipients], [("bob@remote.test", "sent")]
        )
        self.assertEqual(len(job.attempt_log), 1)
        self.assertEqual(await store.list_outbound_jobs(mailbox.id), [job])

    async def test_failed_jobs_do_not_block_and_expired_purge_keeps_recent_deletes(self):
        store = await self.make()
        mailbox, old_id, old_job = await queue_message(store, ["bob@remote.test"])
        await self.finish(store, old_job, "failed")
        _, recent_id, recent_job = await queue_message(store, ["bob@remote.test"])
        await self.finish(store, recent_job, "sent")
        _, pending_id, _ = await queue_message(store, ["bob@remote.test"])
        (live,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        sent = await store.get_folder(mailbox.id, "Sent")
        for row in await store.list_folder_messages(sent.id):
            await store.soft_delete_message(row.id)
        now = now_ns()
        # The old and the pending one were deleted 31 days ago, the recent one just now.
        await self.run_sql(
            store,
            "UPDATE mailbox_messages SET deleted_at = ? WHERE message_id IN (?, ?)",
            (now - 31 * DAY, old_id, pending_id),
        )
        report = await store.purge_expired_messages(now - 30 * DAY, now + DAY)
        self.assertEqual(report, {"purged": 1, "kept": 1})
        gone = await store.get_outbound_job(old_job)
        self.assertEqual((gone.status, gone.message_id), ("failed", ""))
        self.assertEqual((await store.get_outbound_job(recent_job)).message_id, recent_id)
        # Only messages stored before the second cutoff go.
        await self.run_sql(
            store,
            "UPDATE mailbox_messages SET deleted_at = ? WHERE message_id = ?",
            (now - 31 * DAY, recent_id),
        )
        report = await store.purge_expired_messages(now - 30 * DAY, now - DAY)
        self.assertEqual(report, {"purged": 0, "kept": 2})
        report = await store.purge_expired_messages(now - 30 * DAY, now + DAY)
        self.assertEqual(report, {"purged": 1, "kept": 1})
        # The live message and the one still queued are there.
        view = await store.get_message_view(live.id)
        self.assertIsNotNone(view)
        self.assertEqual(await store.purge_message(pending_id), False)

    async def test_two_purges_at_once_drop_each_reference_once(self):
        store = await self.make()
        mailbox = await store.create_mailbox("twice@example.com")
        (first,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (second,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        info = await store.get_message_view(first.id)
        await store.soft_delete_message(first.id)

        async def refcount():
            async def txn_fn(txn):
                row = await txn.execute_one(
                    "SELECT b.refcount FROM blobs b JOIN messages m ON m.blob_key = b.blob_key "
                    "WHERE m.id = ?",
                    (second.message_id,),
                )
                return row["refcount"]

            return await store.db.run("test_refcount", txn_fn, readonly=True)

        # The same bytes twice: one blob, two references.
        self.assertEqual(info[1].blob_key, (await store.get_message_view(second.id))[1].blob_key)
        before = await refcount()
        self.assertEqual(before, 2)
        results = await defer.gatherResults(
            [store.purge_message(first.message_id), store.purge_message(first.message_id)]
        )
        self.assertEqual(sorted(results), [False, True])
        self.assertEqual(await refcount(), 1)
        self.assertIsNotNone(await store.get_message_view(second.id))


class SQLiteRetentionTests(RetentionContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresRetentionTests(RetentionContractMixin, unittest.TestCase):
    skip = PG_SKIP
    timeout = 120

    async def make(self):
        return await make_pg_store(self)
