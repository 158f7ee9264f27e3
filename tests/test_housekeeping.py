"""The Housekeeping service: blob garbage collection on a schedule, as a named background task
that logs its own failures and keeps its schedule."""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from haitatsu.housekeeping import Housekeeping
from haitatsu.interfaces import StorageUnavailable
from tests.storage.test_store_contract import MESSAGE
from tests.support import deliver_bytes, make_store


class HousekeepingTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.clock = task.Clock()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def unreferenced_blob(self):
        mailbox = await self.store.create_mailbox("bob@example.com", quota_bytes=1)
        try:
            await deliver_bytes(self.store, MESSAGE, mailbox.id)
        except Exception:
            pass  # over quota: the leased blob stays, unreferenced

    async def wait_idle(self, service):
        running = service.garbage_collection.running
        if running is not None:
            await running

    async def test_collects_every_interval_not_at_start(self):
        await self.unreferenced_blob()
        service = Housekeeping(self.store, self.clock, gc_interval=3600, gc_grace=0)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIsNone(service.garbage_collection.running)
        self.assertEqual(len(await self.store.blobs.list_keys()), 1)
        self.clock.advance(3600)
        await self.wait_idle(service)
        self.assertEqual(await self.store.blobs.list_keys(), [])
        finished = [e for e in self.events if e.get("task") == "blob garbage collection"]
        self.assertEqual(finished[-1]["result"]["unreferenced"], 1)

    async def test_failure_is_logged_with_the_task_name_and_the_schedule_goes_on(self):
        service = Housekeeping(self.store, self.clock, gc_interval=60, gc_grace=0)
        service.startService()
        self.addCleanup(service.stopService)
        # Break the blob directory (a file in its place) so listing objects fails.
        root = self.store.blobs.root
        shutil.rmtree(root, ignore_errors=True)
        with open(root, "w") as f:
            f.write("not a directory")
        self.clock.advance(60)
        await self.wait_idle(service)
        failures = [e for e in self.events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["task"], "blob garbage collection")
        self.assertEqual(len(self.flushLoggedErrors(StorageUnavailable)), 1)
        os.unlink(root)
        await self.unreferenced_blob()
        self.clock.advance(60)
        await self.wait_idle(service)
        self.assertEqual(await self.store.blobs.list_keys(), [])

    async def test_interval_zero_never_runs(self):
        service = Housekeeping(self.store, self.clock, gc_interval=0, gc_grace=0)
        service.startService()
        self.clock.advance(10**6)
        self.assertIsNone(service.garbage_collection.running)
        await service.stopService()

    async def test_stop_waits_for_a_run_in_progress_which_ends_early(self):
        await self.unreferenced_blob()
        gate = defer.Deferred()
        real = self.store.collect_garbage

        def slow(**kwargs):
            return gate.addCallback(lambda _: real(**kwargs))

        self.store.collect_garbage = slow
        service = Housekeeping(self.store, self.clock, gc_interval=10, gc_grace=0)
        service.startService()
        self.clock.advance(10)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        gate.callback(None)
        await stopped
        self.assertIsNone(service.garbage_collection.running)
        # The pass saw the service stopping and left the rest for the next start.
        self.assertEqual(len(await self.store.blobs.list_keys()), 1)


class HourlyRetentionTests(unittest.TestCase):
    """The hourly loop also purges messages soft-deleted 30 days ago (API.md 5.7) and prunes
    vanished UIDs older than 30 days (QRESYNC), each as its own named task."""

    async def test_hourly_purge_and_pruning(self):
        import time

        store = await make_store(self)
        clock = task.Clock()
        clock.advance(time.time())
        mailbox = await store.create_mailbox("bob@example.com")
        (old,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (recent,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (kept,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        await store.store_flags(inbox.id, [old.uid, recent.uid], ["\\Deleted"], "+")
        await store.expunge(inbox.id, [old.uid, recent.uid])
        trash = await store.get_folder(mailbox.id, "Trash")
        await store.delete_messages(trash.id, [1, 2], to_trash=False)
        month = 31 * 86400 * 10**9
        now = int(clock.seconds() * 1e9)

        async def backdate(txn):
            # A month ago: old's deletion, its stored time, and the UIDs leaving INBOX.
            await txn.execute(
                "UPDATE mailbox_messages SET deleted_at = ? WHERE message_id = ?",
                (now - month, old.message_id),
            )
            await txn.execute(
                "UPDATE messages SET created_at = ? WHERE id = ?", (now - month, old.message_id)
            )
            await txn.execute(
                "UPDATE expunged_uids SET expunged_at = ? WHERE folder_id = ?",
                (now - month, inbox.id),
            )

        await store.db.run("test_backdate", backdate)
        service = Housekeeping(store, clock, gc_interval=0, gc_grace=0)
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(3600)
        for t in (service.message_purge, service.vanished_pruning, service.export_expiry):
            if t.running is not None:
                await t.running
        self.assertFalse(await store.purge_message(old.message_id))  # already gone
        # The recent deletion stays for 30 days, the live message for ever.
        self.assertIsNotNone(await store.get_message_view(kept.id))
        report = await store.vanished_report(inbox.id, 0)
        self.assertEqual((report.uids, report.complete), ((), False))
        self.assertGreater(report.pruned_modseq, 0)

        async def count(txn):
            return await txn.execute_one(
                "SELECT COUNT(*) AS n FROM messages WHERE id IN (?, ?)",
                (old.message_id, recent.message_id),
            )

        self.assertEqual((await store.db.run("test_count", count, readonly=True))["n"], 1)
