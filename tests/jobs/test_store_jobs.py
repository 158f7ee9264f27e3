"""Export and import job rows in the store, on SQLite and on PostgreSQL: claims and leases with
their fencing token, settling with webhook events, and how an import stores a message
(duplicates skipped, no quota check, folders created, nothing stored by a worker that lost its
lease)."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.storage.store import ImportTargetGone, JobLeaseLost
from tests.support import PG_SKIP, make_pg_store, make_store

LEASE = 60 * 10**9

MESSAGE = (
    b"From: Carol <carol@example.org>\r\n"
    b"To: dave@example.com\r\n"
    b"Subject: imported\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def spooled(data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".eml")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


class JobStoreContract:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.mailbox = await self.store.create_mailbox("dave@example.com")

    async def imported(self, fence, data=MESSAGE, folder="INBOX", **kw):
        path = spooled(data)
        try:
            return await self.store.import_message(
                fence, path, self.mailbox.id, folder, progress=kw.pop("progress", {"n": 1}), **kw
            )
        finally:
            os.unlink(path)

    async def placements(self, folder="INBOX"):
        row = await self.store.get_folder(self.mailbox.id, folder)
        if row is None:
            return []
        return await self.store.list_folder_messages(row.id)

    async def events(self, event_type):
        return [
            e
            for e in await self.store.list_events(event_type=event_type, limit=100)
            if e.event_type == event_type
        ]

    # -- rows and leases ----------------------------------------------------------------

    async def test_create_list_get(self):
        export = await self.store.create_export_job(self.mailbox.id)
        other = await self.store.create_export_job("01JOTHERMAILBOX00000000000")
        self.assertEqual((export.status, export.attempts, export.object_key), ("queued", 0, ""))
        self.assertEqual(await self.store.get_job("export", export.id), export)
        self.assertIsNone(await self.store.get_job("import", export.id))
        mine = await self.store.list_jobs("export", mailbox_id=self.mailbox.id)
        self.assertEqual([j.id for j in mine], [export.id])
        everything = await self.store.list_jobs("export")
        self.assertEqual([j.id for j in everything], [other.id, export.id])
        page = await self.store.list_jobs("export", limit=1, before=(other.created_at, other.id))
        self.assertEqual([j.id for j in page], [export.id])
        job = await self.store.create_import_job(
            self.mailbox.id, "imap", {"addr": "h:1", "password": "secret"}
        )
        self.assertEqual(job.source, {"addr": "h:1", "password": "secret"})
        self.assertEqual(job.imported_count, 0)

    async def test_claim_lease_and_fence(self):
        job = await self.store.create_export_job(self.mailbox.id)
        claimed, fence = await self.store.claim_job("export", "node-a", LEASE, now=1000)
        self.assertEqual(claimed.id, job.id)
        self.assertEqual(
            (claimed.status, claimed.locked_by, claimed.attempts), ("processing", "node-a", 1)
        )
        self.assertEqual(claimed.locked_until, 1000 + LEASE)
        self.assertEqual((fence.job_id, fence.node, fence.attempt), (job.id, "node-a", 1))
        # Held: nobody else gets it until the lease runs out.
        self.assertIsNone(await self.store.claim_job("export", "node-b", LEASE, now=2000))
        self.assertIsNone(await self.store.claim_job("import", "node-b", LEASE, now=2000))
        self.assertTrue(await self.store.renew_job_lease(fence, 5000 + LEASE))
        self.assertIsNone(await self.store.claim_job("export", "node-b", LEASE, now=4000 + LEASE))
        # node-a stalls past its lease: node-b takes the job over ...
        later = 6000 + LEASE
        taken, fence_b = await self.store.claim_job("export", "node-b", LEASE, now=later)
        self.assertEqual((taken.id, fence_b.attempt, taken.locked_by), (job.id, 2, "node-b"))
        # ... and whatever node-a reports afterwards changes nothing.
        self.assertFalse(await self.store.renew_job_lease(fence, later + LEASE))
        self.assertFalse(await self.store.finish_export_job(fence, error="late"))
        self.assertFalse(await self.store.requeue_job(fence))
        self.assertEqual((await self.store.get_job("export", job.id)).locked_by, "node-b")
        self.assertTrue(await self.store.finish_export_job(fence_b, "exports/x", 10, 99))
        done = await self.store.get_job("export", job.id)
        self.assertEqual(
            (done.status, done.object_key, done.size_bytes, done.expires_at, done.locked_by),
            ("completed", "exports/x", 10, 99, ""),
        )
        self.assertIsNone(done.locked_until)

    async def test_requeue_waits_and_gives_back_the_attempt(self):
        job = await self.store.create_import_job(self.mailbox.id, "zip", {"key": "imports/a"})
        _, fence = await self.store.claim_job("import", "a", LEASE, now=10)
        self.assertTrue(
            await self.store.requeue_job(fence, error="storage unavailable", next_attempt_at=500)
        )
        row = await self.store.get_job("import", job.id)
        self.assertEqual((row.status, row.locked_by, row.attempts), ("queued", "", 1))
        self.assertEqual(row.last_error, {"error": "storage unavailable"})
        self.assertIsNone(await self.store.claim_job("import", "a", LEASE, now=499))
        _, fence = await self.store.claim_job("import", "a", LEASE, now=500)
        self.assertEqual(fence.attempt, 2)
        # A node that stops hands the job back without using up an attempt.
        self.assertTrue(await self.store.requeue_job(fence, count_attempt=False))
        _, fence = await self.store.claim_job("import", "b", LEASE, now=600)
        self.assertEqual(fence.attempt, 2)

    async def test_finishing_writes_the_webhook_events(self):
        ok = await self.store.create_export_job(self.mailbox.id)
        bad = await self.store.create_export_job(self.mailbox.id)
        _, f1 = await self.store.claim_job("export", "n", LEASE)
        _, f2 = await self.store.claim_job("export", "n", LEASE)
        expires = 1_700_000_000 * 10**9
        self.assertTrue(await self.store.finish_export_job(f1, f"exports/{ok.id}", 5, expires))
        self.assertTrue(await self.store.finish_export_job(f2, error="mailbox not found"))
        [completed] = await self.events("mailbox.export_completed")
        self.assertEqual(
            completed.payload,
            {
                "event": "mailbox.export_completed",
                "export_id": ok.id,
                "mailbox_id": self.mailbox.id,
                "object_key": f"exports/{ok.id}",
                "expires_at": "2023-11-14T22:13:20Z",
            },
        )
        self.assertEqual(completed.mailbox_id, self.mailbox.id)
        [failed] = await self.events("mailbox.export_failed")
        self.assertEqual(failed.payload["error"], "mailbox not found")
        self.assertEqual(failed.payload["export_id"], bad.id)
        row = await self.store.get_job("export", bad.id)
        self.assertEqual((row.status, row.last_error), ("failed", {"error": "mailbox not found"}))

    async def test_finishing_an_import_forgets_its_secrets(self):
        source = {"addr": "h:1", "username": "u", "password": "p", "token": "t"}
        job = await self.store.create_import_job(self.mailbox.id, "imap", source)
        _, fence = await self.store.claim_job("import", "n", LEASE)
        self.assertTrue(await self.imported(fence))
        self.assertTrue(await self.store.finish_import_job(fence))
        row = await self.store.get_job("import", job.id)
        self.assertEqual(row.source, {"addr": "h:1", "username": "u"})
        self.assertEqual((row.status, row.imported_count, row.last_error), ("completed", 1, {}))
        [event] = await self.events("mailbox.import_completed")
        self.assertEqual(
            event.payload,
            {
                "event": "mailbox.import_completed",
                "import_id": job.id,
                "mailbox_id": self.mailbox.id,
                "imported_count": 1,
            },
        )
        failing = await self.store.create_import_job(self.mailbox.id, "imap", source)
        _, fence = await self.store.claim_job("import", "n", LEASE)
        self.assertTrue(await self.store.finish_import_job(fence, error="login refused"))
        row = await self.store.get_job("import", failing.id)
        self.assertNotIn("password", row.source)
        self.assertEqual(row.last_error, {"error": "login refused"})
        [event] = await self.events("mailbox.import_failed")
        self.assertEqual(event.payload["error"], "login refused")

    async def test_expired_exports(self):
        a = await self.store.create_export_job(self.mailbox.id)
        b = await self.store.create_export_job(self.mailbox.id)
        await self.store.create_export_job(self.mailbox.id)
        for expires in (100, 200):
            claimed, fence = await self.store.claim_job("export", "n", LEASE)
            await self.store.finish_export_job(fence, f"exports/{claimed.id}", 1, expires)
        self.assertEqual([j.id for j in await self.store.expired_exports(now=150)], [a.id])
        self.assertEqual([j.id for j in await self.store.expired_exports(now=200)], [a.id, b.id])
        self.assertTrue(await self.store.delete_export_job(a.id))
        self.assertFalse(await self.store.delete_export_job(a.id))
        self.assertIsNone(await self.store.get_job("export", a.id))

    # -- storing imported messages ------------------------------------------------------

    async def test_import_stores_with_flags_date_and_progress(self):
        job = await self.store.create_import_job(self.mailbox.id, "zip", {"key": "imports/a"})
        _, fence = await self.store.claim_job("import", "n", LEASE)
        when = 1_600_000_000 * 10**9
        stored = await self.imported(
            fence,
            flags=("\\Seen", "\\Flagged", "$Work", "\\Recent"),
            internal_date=when,
            progress={"folder": "INBOX", "after": 3},
        )
        self.assertTrue(stored)
        [mm] = await self.placements()
        self.assertEqual(
            (mm.read, mm.flagged, mm.answered, mm.keywords), (True, True, False, ("$Work",))
        )
        self.assertEqual(mm.internal_date, when)
        [(_, info)] = await self.store.get_messages(mm.folder_id, [mm.uid])
        self.assertEqual(await self.store.read_message(info), MESSAGE)
        row = await self.store.get_job("import", job.id)
        self.assertEqual(row.imported_count, 1)
        self.assertEqual(row.progress, {"folder": "INBOX", "after": 3})

    async def test_duplicates_are_skipped_but_advance_the_marker(self):
        job = await self.store.create_import_job(self.mailbox.id, "zip", {"key": "imports/a"})
        _, fence = await self.store.claim_job("import", "n", LEASE)
        self.assertTrue(await self.imported(fence, folder="Work"))
        self.assertFalse(await self.imported(fence, folder="Other", progress={"after": 9}))
        self.assertEqual(len(await self.placements("Work")), 1)
        self.assertEqual(await self.placements("Other"), [])
        row = await self.store.get_job("import", job.id)
        self.assertEqual((row.imported_count, row.progress), (1, {"after": 9}))
        # Once the copy in the mailbox is deleted, the same bytes are imported again.
        [mm] = await self.placements("Work")
        folder = await self.store.get_folder(self.mailbox.id, "Work")
        await self.store.delete_messages(folder.id, [mm.uid], to_trash=False)
        self.assertTrue(await self.imported(fence))

    async def test_quota_is_not_enforced_but_counted(self):
        small = await self.store.create_mailbox("small@example.com", quota_bytes=1)
        await self.store.create_import_job(small.id, "zip", {"key": "imports/a"})
        _, fence = await self.store.claim_job("import", "n", LEASE)
        path = spooled(MESSAGE)
        self.addCleanup(os.unlink, path)
        self.assertTrue(await self.store.import_message(fence, path, small.id, "INBOX"))
        self.assertEqual((await self.store.get_mailbox(small.id)).used_bytes, len(MESSAGE))

    async def test_folders_are_created_and_special_use_is_found(self):
        await self.store.create_import_job(self.mailbox.id, "zip", {"key": "imports/a"})
        _, fence = await self.store.claim_job("import", "n", LEASE)
        self.assertTrue(await self.imported(fence, folder="Work/Projects/2024"))
        names = {f.name for f in await self.store.list_folders(self.mailbox.id)}
        self.assertLessEqual({"Work", "Work/Projects", "Work/Projects/2024"}, names)
        # The mailbox's Sent folder, renamed, still gets what a source's Sent held.
        sent = await self.store.get_folder(self.mailbox.id, "Sent")
        await self.store.rename_folder(sent.id, "Gesendet", allow_system=True)
        other = MESSAGE.replace(b"imported", b"sent")
        self.assertTrue(await self.imported(fence, other, folder="Sent", special_use="\\Sent"))
        self.assertEqual(len(await self.placements("Gesendet")), 1)
        self.assertIsNone(await self.store.get_folder(self.mailbox.id, "Sent"))
        self.assertEqual(
            await self.store.import_folder(fence, self.mailbox.id, "Empty/Child"), "Empty/Child"
        )
        self.assertIsNotNone(await self.store.get_folder(self.mailbox.id, "Empty/Child"))

    async def test_a_worker_that_lost_its_lease_stores_nothing(self):
        await self.store.create_import_job(self.mailbox.id, "zip", {"key": "imports/a"})
        _, old = await self.store.claim_job("import", "a", LEASE, now=0)
        _, new = await self.store.claim_job("import", "b", LEASE, now=LEASE + 1)
        with self.assertRaises(JobLeaseLost):
            await self.imported(old)
        with self.assertRaises(JobLeaseLost):
            await self.store.advance_import(old, {"after": 1})
        with self.assertRaises(JobLeaseLost):
            await self.store.import_folder(old, self.mailbox.id, "X")
        self.assertEqual(await self.placements(), [])
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)
        self.assertTrue(await self.imported(new))

    async def test_a_missing_mailbox_is_reported(self):
        await self.store.create_import_job("01JNOSUCHMAILBOX0000000000", "zip", {"key": "i/a"})
        _, fence = await self.store.claim_job("import", "n", LEASE)
        path = spooled(MESSAGE)
        self.addCleanup(os.unlink, path)
        with self.assertRaises(ImportTargetGone):
            await self.store.import_message(fence, path, "01JNOSUCHMAILBOX0000000000", "INBOX")

    async def test_export_messages_lists_each_live_message_once(self):
        from tests.support import deliver_bytes

        [a] = await deliver_bytes(self.store, MESSAGE, self.mailbox.id)
        [b] = await deliver_bytes(self.store, MESSAGE + b"b\r\n", self.mailbox.id)
        [c] = await deliver_bytes(self.store, MESSAGE + b"c\r\n", self.mailbox.id)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        await self.store.copy_messages(inbox.id, [a.uid], archive.id)
        await self.store.delete_messages(inbox.id, [c.uid], to_trash=False)
        other = await self.store.create_mailbox("other@example.com")
        await deliver_bytes(self.store, MESSAGE + b"other\r\n", other.id)
        listed = await self.store.export_messages(self.mailbox.id)
        self.assertEqual(sorted(i.id for i, _ in listed), sorted([a.message_id, b.message_id]))
        self.assertEqual(dict((i.id, d) for i, d in listed)[b.message_id], b.internal_date)
        first = await self.store.export_messages(self.mailbox.id, limit=1)
        rest = await self.store.export_messages(self.mailbox.id, after=first[0][0].id)
        self.assertEqual(len(first) + len(rest), 2)


class SQLiteJobStoreTests(JobStoreContract, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresJobStoreTests(JobStoreContract, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class PostgresJobClaimTests(unittest.TestCase):
    skip = PG_SKIP

    async def test_two_nodes_claiming_at_once_take_different_jobs(self):
        """FOR UPDATE SKIP LOCKED: node b passes over the job node a is claiming."""
        from haitatsu.storage import build_postgres_store

        a = await make_pg_store(self)
        b = build_postgres_store(reactor, a.db.engine.dsn, self.mktemp(), 2)
        await b.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(b.close()))
        mailbox = await a.create_mailbox("x@example.com")
        ids = {(await a.create_export_job(mailbox.id)).id for _ in range(6)}
        claims = await defer.gatherResults(
            [s.claim_job("export", n, LEASE) for s, n in [(a, "a"), (b, "b")] * 3]
        )
        claimed = [job.id for job, _ in (c for c in claims if c is not None)]
        self.assertEqual(len(claimed), len(set(claimed)))
        self.assertEqual(set(claimed), ids)
