"""The Housekeeping service: blob garbage collection on a schedule, as a named background task
that logs its own failures and keeps its schedule."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web.server import Site

from haitatsu.config.loader import load_config
from haitatsu.config.model import RetentionConfig
from haitatsu.housekeeping import Housekeeping
from haitatsu.hub import HaitatsuService
from haitatsu.interfaces import StorageUnavailable
from haitatsu.storage.records import Delivery, now_ns
from tests.api.client import APIClient
from tests.api.test_stream import SSEClient
from tests.config.test_loader import ConfigFileMixin
from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.storage.test_store_contract import MESSAGE
from tests.support import OnPostgres, changes_settled, deliver_bytes, make_store


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
        await wait_hourly(service)
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


async def hourly_pass(testcase, store, retention=None, later=0.0):
    """Start a Housekeeping on ``store`` whose clock reads now + ``later`` seconds, let one
    hourly pass run to its end, and return the service (stopped when the test ends)."""
    clock = task.Clock()
    clock.advance(time.time() + later)
    service = Housekeeping(store, clock, gc_interval=0, gc_grace=0, retention=retention)
    service.startService()
    testcase.addCleanup(service.stopService)
    clock.advance(service.expiry_interval)
    await wait_hourly(service)
    return service


async def wait_hourly(service):
    for t in service._hourly_tasks():
        if t.running is not None:
            await t.running


async def age_in_trash(store, mailbox_message_id, days):
    """Make a row look last changed ``days`` ago."""

    async def backdate(txn):
        await txn.execute(
            "UPDATE mailbox_messages SET updated_at = ? WHERE id = ?",
            (now_ns() - int(days * 86400 * 1e9), mailbox_message_id),
        )

    await store.db.run("test_backdate_trash", backdate)


class TrashExpiryMixin:
    """API.md 5.7: the hourly pass soft-deletes messages whose Trash row was last updated more
    than ``retention.trash_days`` (30) ago, with every effect of ``DELETE ...?force=true``:
    the quota released, an expunge for IMAP sessions, the event stream and QRESYNC."""

    async def setUp(self):
        await self._setUp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.rest = APIClient(self.store)
        self.trash = await self.store.get_folder(self.mailbox.id, "Trash")

    async def to_trash(self, count):
        """Deliver ``count`` messages and DELETE each through REST (to Trash); their ids."""
        ids = []
        for _ in range(count):
            placed = await self.deliver(SIMPLE)
            answer = await self.rest.delete(f"/api/v1/messages/{placed.id}")
            self.assertEqual(answer.status, 200)
            ids.append(placed.id)
        return ids

    async def trash_ids(self):
        answer = await self.rest.get(
            f"/api/v1/mailboxes/{self.mailbox.id}/messages?folder_id={self.trash.id}"
        )
        return [m["mailbox_message"]["id"] for m in answer.json["data"]]

    async def used_bytes(self):
        answer = await self.rest.get(f"/api/v1/mailboxes/{self.mailbox.id}")
        return answer.json["data"].get("used_bytes", 0)

    async def stream(self):
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(self.rest.api.resource())
        )
        self.addCleanup(port.stopListening)
        client = SSEClient(f"/api/v1/mailboxes/{self.mailbox.id}/stream")
        factory = Factory()
        factory.buildProtocol = lambda addr: client
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(factory)
        self.addCleanup(lambda: client.transport.loseConnection())
        await client.wait(lambda: client.head is not None)
        return client

    async def test_old_trash_is_soft_deleted_and_everyone_hears_it(self):
        old, recent = await self.to_trash(2)
        await age_in_trash(self.store, old, 31)
        size = len(SIMPLE)
        self.assertEqual(await self.used_bytes(), 2 * size)  # Trash still counts
        before = (await self.store.get_folder_by_id(self.trash.id)).highest_modseq
        session = await self.selected(b"Trash")
        stream = await self.stream()

        service = await hourly_pass(self, self.store)

        # REST: gone from Trash, its size out of the quota (as recompute-usage agrees), the
        # row itself soft-deleted (restore brings it back, as after DELETE ?force=true).
        self.assertEqual(await self.trash_ids(), [recent])
        self.assertEqual(await self.used_bytes(), size)
        recomputed = await self.rest.post(f"/api/v1/mailboxes/{self.mailbox.id}/recompute-usage")
        self.assertEqual(recomputed.json["data"]["used_bytes"], size)
        self.assertEqual((await self.rest.get(f"/api/v1/messages/{old}")).status, 404)
        # The event stream and the IMAP session that has Trash selected hear the expunge.
        expunged = await stream.next_event("message.expunged")
        self.assertEqual(
            (expunged["data"]["id"], expunged["data"]["folder_id"], expunged["data"]["uid"]),
            (old, self.trash.id, 1),
        )
        await changes_settled(self.store)
        self.assertEqual(
            await session.command(b"n NOOP"), b"* 1 EXPUNGE\r\nn OK NOOP completed\r\n"
        )
        # QRESYNC: UID 1 left Trash after the MODSEQ a client last saw.
        report = await self.store.vanished_report(self.trash.id, before)
        self.assertEqual(report.uids, (1,))
        finished = [
            e
            for e in self.events
            if e.get("task") == "trash expiry" and e.get("result") is not None
        ]
        self.assertEqual(finished[-1]["result"], {"folders": 1, "messages": 1})
        self.assertIsNone(service.trash_expiry.running)

        # deleted_days later the purge takes the soft-deleted message for good.
        restored = await self.rest.post(f"/api/v1/messages/{recent}/restore")
        self.assertEqual(restored.status, 200)
        await hourly_pass(self, self.store, later=31 * 86400)
        message_id = await self.message_id(old)
        self.assertIsNone(message_id)

    async def message_id(self, mailbox_message_id):
        async def read(txn):
            return await txn.execute_one(
                "SELECT message_id FROM mailbox_messages WHERE id = ?", (mailbox_message_id,)
            )

        row = await self.store.db.run("test_read", read, readonly=True)
        return None if row is None else row["message_id"]

    async def test_nothing_younger_than_the_period_and_nothing_outside_trash(self):
        [in_trash] = await self.to_trash(1)
        live = await self.deliver(SIMPLE)
        await age_in_trash(self.store, in_trash, 29)
        await age_in_trash(self.store, live.id, 400)  # an old INBOX message stays
        await hourly_pass(self, self.store)
        self.assertEqual(await self.trash_ids(), [in_trash])
        self.assertIsNotNone(await self.store.get_message_entry(live.id))
        self.assertEqual(await self.used_bytes(), 2 * len(SIMPLE))

    async def test_a_short_period_from_the_retention_config(self):
        two_days, fresh = await self.to_trash(2)
        await age_in_trash(self.store, two_days, 2)
        current = [RetentionConfig()]
        clock = task.Clock()
        clock.advance(time.time())
        service = Housekeeping(
            self.store, clock, gc_interval=0, gc_grace=0, retention=lambda: current[0]
        )
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(3600)
        await wait_hourly(service)
        self.assertEqual(await self.trash_ids(), [fresh, two_days])
        # A reload to one day applies from the next hourly pass.
        current[0] = RetentionConfig(trash_days=1)
        clock.advance(3600)
        await wait_hourly(service)
        self.assertEqual(await self.trash_ids(), [fresh])

    async def test_many_in_batches(self):
        ids = await self.to_trash(5)
        for mm in ids:
            await age_in_trash(self.store, mm, 40)
        report = await self.store.expire_trash(now_ns() - 30 * 86400 * 10**9, batch=2)
        self.assertEqual(report, {"folders": 1, "messages": 5})
        self.assertEqual(await self.trash_ids(), [])
        self.assertEqual(await self.used_bytes(), 0)


class SQLiteTrashExpiryTests(TrashExpiryMixin, IMAPTestCase):
    pass


class PostgresTrashExpiryTests(OnPostgres, TrashExpiryMixin, IMAPTestCase):
    pass


async def deliver_to(store, data, mailbox_ids):
    """One delivery of ``data`` to the INBOX of each mailbox (one shared message row)."""
    fd, path = tempfile.mkstemp(suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return await store.deliver(
            path, [Delivery(mailbox_id=m, folder="INBOX") for m in mailbox_ids], trace_id="T"
        )
    finally:
        os.unlink(path)


async def deleted_days_ago(store, mailbox_id, days):
    """Soft-delete the mailbox (as REST DELETE does) and make it look done ``days`` ago."""
    await store.delete_mailbox(mailbox_id)

    async def backdate(txn):
        await txn.execute(
            "UPDATE mailboxes SET deleted_at = ? WHERE id = ?",
            (now_ns() - int(days * 86400 * 1e9), mailbox_id),
        )

    await store.db.run("test_backdate_mailbox", backdate)


class DeletedMailboxPurgeMixin:
    """API.md 5.7: the hourly pass purges mailboxes in status ``deleted`` for more than
    ``retention.deleted_days`` (30) days through the hard delete's store path; API.md 5.7 /
    docs/imap.md: it prunes login throttling rows idle for 24 hours."""

    async def setUp(self):
        await self._setUp()
        self.rest = APIClient(self.store)

    async def count(self, sql, *params):
        async def read(txn):
            return (await txn.execute_one(sql, params))["n"]

        return await self.store.db.run("test_count", read, readonly=True)

    async def test_old_deleted_mailbox_is_purged_young_active_and_restored_kept(self):
        store = self.store
        old = await store.create_mailbox("old@example.com")
        young = await store.create_mailbox("young@example.com")
        restored = await store.create_mailbox("restored@example.com")
        active = self.mailbox
        (own,) = await deliver_to(store, MESSAGE, [old.id])
        shared = await deliver_to(store, SIMPLE, [old.id, active.id])
        for mailbox in (young, restored):
            await deliver_to(store, MESSAGE, [mailbox.id])
        label = await store.create_label(old.id, "Work")
        await store.add_message_label(own.id, label.id)
        await deleted_days_ago(store, old.id, 31)
        await deleted_days_ago(store, young.id, 29)
        await deleted_days_ago(store, restored.id, 31)
        answer = await self.rest.post(f"/api/v1/mailboxes/{restored.id}/restore")
        self.assertEqual(answer.status, 200)
        blobs_before = await self.count("SELECT COUNT(*) AS n FROM blobs")

        service = await hourly_pass(self, store)

        answer = await self.rest.get(f"/api/v1/mailboxes/{old.id}")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json["error"]["code"], "mailbox_not_found")
        for kept in (young, restored, active):
            answer = await self.rest.get(f"/api/v1/mailboxes/{kept.id}")
            self.assertEqual(answer.status, 200)
        self.assertEqual(
            (await self.rest.get(f"/api/v1/mailboxes/{young.id}")).json["data"]["status"],
            "deleted",
        )
        for table in ("mailbox_messages", "folders", "labels", "app_passwords"):
            n = await self.count(f"SELECT COUNT(*) AS n FROM {table} WHERE mailbox_id = ?", old.id)
            self.assertEqual(n, 0, table)
        self.assertEqual(
            await self.count(
                "SELECT COUNT(*) AS n FROM message_labels WHERE label_id = ?", label.id
            ),
            0,
        )
        # Its own message is purged; the one the active mailbox also holds stays, with its copy.
        self.assertEqual(
            await self.count("SELECT COUNT(*) AS n FROM messages WHERE id = ?", own.message_id), 0
        )
        self.assertIsNotNone(await store.get_message_view(shared[1].id))
        # Blobs are left to garbage collection: still there, one reference fewer.
        self.assertEqual(await self.count("SELECT COUNT(*) AS n FROM blobs"), blobs_before)
        self.assertEqual(
            await self.count(
                "SELECT COUNT(*) AS n FROM blobs WHERE refcount = 0 AND blob_key IN "
                "(SELECT blob_key FROM messages WHERE id = ?) ",
                shared[1].message_id,
            ),
            0,
        )
        self.assertEqual(
            await self.count(
                "SELECT COUNT(*) AS n FROM audit_events WHERE event_type = 'mailbox.hard_deleted' "
                "AND entity_id = ?",
                old.id,
            ),
            1,
        )
        self.assertIsNone(service.mailbox_purge.running)
        # A later pass finds nothing more to do.
        report = await store.purge_deleted_mailboxes(now_ns() - 30 * 86400 * 10**9)
        self.assertEqual(report, {"purged": 0, "kept": 0})

    async def test_status_is_checked_again_in_the_purging_transaction(self):
        """A candidate restored (or deleted again) after the listing is kept: the check is
        repeated under the mailbox row's lock."""
        mailbox = await self.store.create_mailbox("carol@example.com")
        await deliver_to(self.store, MESSAGE, [mailbox.id])
        await deleted_days_ago(self.store, mailbox.id, 31)
        month = now_ns() - 30 * 86400 * 10**9
        await self.store.restore_mailbox(mailbox.id)
        self.assertFalse(await self.store.hard_delete_mailbox(mailbox.id, deleted_before=month))
        await self.store.delete_mailbox(mailbox.id)  # deleted again, now: not old enough
        self.assertFalse(await self.store.hard_delete_mailbox(mailbox.id, deleted_before=month))
        answer = await self.rest.get(f"/api/v1/mailboxes/{mailbox.id}")
        self.assertEqual(answer.status, 200)
        self.assertEqual(
            await self.count(
                "SELECT COUNT(*) AS n FROM mailbox_messages WHERE mailbox_id = ?", mailbox.id
            ),
            1,
        )

    async def test_many_in_batches(self):
        ids = []
        for i in range(5):
            mailbox = await self.store.create_mailbox(f"gone{i}@example.com")
            await deleted_days_ago(self.store, mailbox.id, 40)
            ids.append(mailbox.id)
        report = await self.store.purge_deleted_mailboxes(now_ns() - 30 * 86400 * 10**9, batch=2)
        self.assertEqual(report, {"purged": 5, "kept": 0})
        for mailbox_id in ids:
            self.assertEqual((await self.rest.get(f"/api/v1/mailboxes/{mailbox_id}")).status, 404)

    async def test_a_shorter_deleted_days_applies_to_mailboxes(self):
        mailbox = await self.store.create_mailbox("dave@example.com")
        await deleted_days_ago(self.store, mailbox.id, 3)
        await hourly_pass(self, self.store)
        self.assertEqual((await self.rest.get(f"/api/v1/mailboxes/{mailbox.id}")).status, 200)
        await hourly_pass(self, self.store, retention=lambda: RetentionConfig(deleted_days=2))
        self.assertEqual((await self.rest.get(f"/api/v1/mailboxes/{mailbox.id}")).status, 404)

    async def test_old_lockout_rows_are_pruned_recent_ones_kept(self):
        """Nine failures within a long window: a tenth locks the IP while the row is kept, and
        counts as the first again once housekeeping pruned the row (idle for 24 h; the pass's
        clock reads one hour ahead)."""
        hour = 3600 * 10**9
        window, lockout = 48 * hour, hour // 4
        now = now_ns()
        for ip, when in (("192.0.2.1", now - 25 * hour), ("192.0.2.2", now - 22 * hour)):
            for _ in range(9):
                locked = await self.store.record_login_failure(ip, when, window, 10, lockout)
                self.assertIsNone(locked)
        await hourly_pass(self, self.store)
        later = now_ns()
        self.assertIsNone(
            await self.store.record_login_failure("192.0.2.1", later, window, 10, lockout)
        )
        self.assertEqual(
            await self.store.record_login_failure("192.0.2.2", later, window, 10, lockout),
            later + lockout,
        )


class SQLiteDeletedMailboxPurgeTests(DeletedMailboxPurgeMixin, IMAPTestCase):
    pass


class PostgresDeletedMailboxPurgeTests(OnPostgres, DeletedMailboxPurgeMixin, IMAPTestCase):
    pass


class HubRetentionTests(ConfigFileMixin, unittest.TestCase):
    """The hub's housekeeping reads the retention block of the config that is live now."""

    async def test_reload_reaches_housekeeping(self):
        directory = self.temp_dir()
        server = f'server {{ data_dir = "{directory}/data" }}\n'
        path = self.write_config(server + "retention { trash_days = 2 }\n")
        hub = HaitatsuService(path, load_config(path), reactor)
        self.assertEqual(hub.housekeeping.retention(), RetentionConfig(trash_days=2))
        with open(path, "w") as f:
            f.write(server + "retention { trash_days = 2; vanished_days = 5 }\n")
        await hub.watcher.reload()
        self.assertEqual(
            hub.housekeeping.retention(), RetentionConfig(trash_days=2, vanished_days=5)
        )
