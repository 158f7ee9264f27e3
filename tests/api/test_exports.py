"""Export jobs over HTTP (API.md 1.13), run by the real job worker: the ZIP holds every live
message byte for byte, the download streams it, expired exports disappear (object and row), and
a job whose node died is done again. On SQLite and PostgreSQL, with blobs in a directory and in
S3 (moto_server)."""

from __future__ import annotations

import io
import time
import zipfile

from twisted.internet import reactor, task
from twisted.trial import unittest

from haitatsu.housekeeping import Housekeeping
from haitatsu.jobs import JobWorker
from haitatsu.jobs.exporter import EXPORT_LIFETIME_SECONDS
from tests.api.client import APIClient, LiveConfig
from tests.storage.corpus import attachment_message
from tests.support import (
    PG_SKIP,
    MotoS3Mixin,
    deliver_bytes,
    make_pg_store,
    make_s3_store,
    make_store,
)

MESSAGES = [
    b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: one\r\n\r\nFirst.\r\n",
    b"From: b@example.org\r\nTo: bob@example.com\r\nSubject: two\r\n\r\n" + bytes(range(256)),
    b"From: c@example.org\r\nSubject: three\r\n\r\nThird, to be deleted.\r\n",
]


class ExportTests:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.config = LiveConfig()
        self.client = APIClient(self.store, config=self.config)
        self.spool = self.mktemp()
        self.mailbox = await self.store.create_mailbox("bob@example.com")

    def worker(self, clock=None, node="node-1"):
        return JobWorker(self.store, self.config, reactor, self.spool, clock=clock, node=node)

    async def deliver(self, data, folder="INBOX", mailbox=None):
        [placed] = await deliver_bytes(self.store, data, (mailbox or self.mailbox).id, folder)
        return placed

    async def create(self, mailbox_id=None):
        answer = await self.client.post(f"/api/v1/mailboxes/{mailbox_id or self.mailbox.id}/export")
        self.assertEqual(answer.status, 201, answer.body)
        return answer.json["data"]

    async def get(self, export_id):
        return await self.client.get(f"/api/v1/exports/{export_id}")

    async def read_object(self, key) -> bytes:
        f = await self.store.blobs.open_object(key)
        try:
            return f.read()
        finally:
            f.close()

    async def test_zip_holds_every_live_message_byte_for_byte(self):
        placed = [await self.deliver(m) for m in MESSAGES]
        # A message split into blobs (an attachment stored once), in another folder.
        big = attachment_message(b"attachment " * 20000)
        archived = await self.deliver(big, folder="Archive")
        # Deleted: left out. Placed twice: one entry.
        answer = await self.client.delete(f"/api/v1/messages/{placed[2].id}?force=true")
        self.assertEqual(answer.status, 200)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        await self.store.copy_messages(inbox.id, [placed[0].uid], trash.id)
        # Another mailbox's mail is not in this export.
        other = await self.store.create_mailbox("other@example.com")
        await self.deliver(b"Subject: not bob's\r\n\r\nx\r\n", mailbox=other)

        job = await self.create()
        self.assertEqual(set(job), {"id", "mailbox_id", "status", "created_at", "updated_at"})
        self.assertEqual((job["status"], job["mailbox_id"]), ("queued", self.mailbox.id))
        before = time.time()
        self.assertEqual(await self.worker().process_due(), 1)

        done = (await self.get(job["id"])).json["data"]
        self.assertEqual(done["status"], "completed")
        self.assertEqual(done["object_key"], f"exports/{job['id']}")
        self.assertNotIn("locked_by", done)
        self.assertNotIn("last_error", done)
        from haitatsu.api.conventions import parse_rfc3339

        expires = parse_rfc3339(done["expires_at"]) / 1e9
        self.assertLess(abs(expires - before - EXPORT_LIFETIME_SECONDS), 60)

        content = await self.read_object(done["object_key"])
        self.assertEqual(done["size_bytes"], len(content))
        archive = zipfile.ZipFile(io.BytesIO(content))
        self.assertIsNone(archive.testzip())
        live = [placed[0], placed[1], archived]
        self.assertEqual(
            sorted(archive.namelist()), sorted(f"messages/{p.message_id}.eml" for p in live)
        )
        for p in live:
            raw = await self.client.get(f"/api/v1/messages/{p.id}/raw")
            self.assertEqual(archive.read(f"messages/{p.message_id}.eml"), raw.body)
        self.assertEqual(archive.read(f"messages/{archived.message_id}.eml"), big)
        info = archive.getinfo(f"messages/{placed[0].message_id}.eml")
        stamp = time.gmtime(placed[0].internal_date // 10**9)
        self.assertEqual(info.date_time[:4], tuple(stamp[:4]))

        download = await self.client.get(f"/api/v1/exports/{job['id']}/download")
        self.assertEqual(download.status, 200)
        self.assertEqual(download.body, content)
        self.assertEqual(download.header("Content-Type"), "application/zip")
        self.assertEqual(
            download.header("Content-Disposition"), f'attachment; filename="{job["id"]}.zip"'
        )
        self.assertEqual(download.length, len(content))

        [event] = await self.store.list_events(event_type="mailbox.export_completed")
        self.assertEqual(
            event.payload,
            {
                "event": "mailbox.export_completed",
                "export_id": job["id"],
                "mailbox_id": self.mailbox.id,
                "object_key": done["object_key"],
                "expires_at": done["expires_at"],
            },
        )

    async def test_an_empty_mailbox_exports_an_empty_zip(self):
        job = await self.create()
        await self.worker().process_due()
        done = (await self.get(job["id"])).json["data"]
        self.assertEqual(done["status"], "completed")
        archive = zipfile.ZipFile(io.BytesIO(await self.read_object(done["object_key"])))
        self.assertEqual(archive.namelist(), [])

    async def test_list_get_and_errors(self):
        other = await self.store.create_mailbox("other@example.com")
        first = await self.create()
        second = await self.create(other.id)
        third = await self.create()
        answer = await self.client.get("/api/v1/exports")
        self.assertEqual(
            [j["id"] for j in answer.json["data"]], [third["id"], second["id"], first["id"]]
        )
        answer = await self.client.get(f"/api/v1/exports?mailbox_id={self.mailbox.id}&limit=1")
        self.assertEqual([j["id"] for j in answer.json["data"]], [third["id"]])
        cursor = answer.json["pagination"]["next"]
        answer = await self.client.get(
            f"/api/v1/exports?mailbox_id={self.mailbox.id}&limit=1&cursor={cursor}"
        )
        self.assertEqual([j["id"] for j in answer.json["data"]], [first["id"]])
        self.assertEqual(answer.json["pagination"]["next"], "")

        answer = await self.get("01JNOSUCHEXPORT00000000000")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "export_not_found"))
        answer = await self.client.get("/api/v1/exports/01JNOSUCHEXPORT00000000000/download")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "export_not_found"))
        answer = await self.client.get(f"/api/v1/exports/{first['id']}/download")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (409, "export_not_ready"))
        answer = await self.client.get("/api/v1/exports", auth=False)
        self.assertEqual(answer.status, 401)
        # "Takes no body": one sent is not read.
        answer = await self.client.post(
            f"/api/v1/mailboxes/{self.mailbox.id}/export", body=b"not json"
        )
        self.assertEqual(answer.status, 201)

    async def test_an_unknown_mailbox_fails_the_job(self):
        job = await self.create("01JNOSUCHMAILBOX0000000000")
        await self.worker().process_due()
        done = (await self.get(job["id"])).json["data"]
        self.assertEqual(
            (done["status"], done["last_error"]), ("failed", {"error": "mailbox not found"})
        )
        self.assertNotIn("object_key", done)
        [event] = await self.store.list_events(event_type="mailbox.export_failed")
        self.assertEqual(event.payload["error"], "mailbox not found")

    async def test_expired_exports_are_deleted_with_their_object(self):
        await self.deliver(MESSAGES[0])
        job = await self.create()
        keep = await self.create()
        await self.worker().process_due()
        done = (await self.get(job["id"])).json["data"]

        async def txn_fn(txn):
            await txn.execute("UPDATE export_jobs SET expires_at = 1 WHERE id = ?", (job["id"],))

        await self.store.db.run("test_expire", txn_fn)
        # Past its expiry but not collected yet: no longer downloadable.
        answer = await self.client.get(f"/api/v1/exports/{job['id']}/download")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (410, "export_expired"))
        clock = task.Clock()
        clock.advance(time.time())
        housekeeping = Housekeeping(self.store, clock, gc_interval=0, gc_grace=0)
        housekeeping.startService()
        self.addCleanup(housekeeping.stopService)
        clock.advance(3600)  # hourly
        await housekeeping.export_expiry.running
        self.assertEqual((await self.get(job["id"])).status, 404)
        with self.assertRaises(KeyError):
            await self.store.blobs.open_object(done["object_key"])
        kept = (await self.get(keep["id"])).json["data"]
        self.assertEqual(kept["status"], "completed")
        self.assertTrue(await self.read_object(kept["object_key"]))

    async def test_a_job_whose_node_died_is_done_again(self):
        await self.deliver(MESSAGES[0])
        job = await self.create()
        # node-0 claims the job and dies: its lease (5 minutes) runs out.
        claimed = await self.store.claim_job("export", "node-0", 300 * 10**9)
        self.assertIsNotNone(claimed)
        self.assertEqual(await self.worker().process_due(), 0)
        later = task.Clock()
        later.advance(time.time() + 301)
        self.assertEqual(await self.worker(clock=later).process_due(), 1)
        done = (await self.get(job["id"])).json["data"]
        self.assertEqual(done["status"], "completed")
        row = await self.store.get_job("export", job["id"])
        self.assertEqual(row.attempts, 2)
        archive = zipfile.ZipFile(io.BytesIO(await self.read_object(done["object_key"])))
        self.assertEqual(len(archive.namelist()), 1)
        # node-0 wakes up and reports: nothing changes.
        self.assertFalse(await self.store.finish_export_job(claimed[1], error="late"))
        self.assertEqual((await self.get(job["id"])).json["data"]["status"], "completed")


class SQLiteExportTests(ExportTests, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresExportTests(ExportTests, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class S3ExportTests(MotoS3Mixin, ExportTests, unittest.TestCase):
    """Blobs and the export object in S3 (under a prefix), metadata in SQLite."""

    timeout = 60

    async def make(self):
        return await make_s3_store(self, self.moto, prefix="tenant-a")

    async def test_the_object_is_named_exports_job_id_in_the_bucket(self):
        await self.deliver(MESSAGES[0])
        job = await self.create()
        await self.worker().process_due()
        bucket = self.store.blobs.config.bucket
        names = self.moto.object_names(bucket)
        self.assertIn(f"tenant-a/exports/{job['id']}", names)
        self.assertFalse([n for n in names if n.startswith("tenant-a/blobs/exports")])


class PostgresS3ExportTests(MotoS3Mixin, ExportTests, unittest.TestCase):
    skip = PG_SKIP
    timeout = 60

    async def make(self):
        return await make_s3_store(self, self.moto, postgres=True)
