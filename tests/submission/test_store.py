"""``store.submit`` and ``store.may_send_as`` directly, on SQLite and PostgreSQL: one transaction
for the Sent copy, local placements and the job; the hourly limit counted exactly under
concurrency; nothing visible after a refusal."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.interfaces import OutboundLimitExceeded, OverQuota
from haitatsu.storage.records import Delivery
from tests.submission.test_messages import queue_rows
from tests.support import PG_SKIP, make_pg_store, make_store

MESSAGE = b"From: alice@example.com\r\nSubject: s\r\n\r\nbody\r\n"


class SubmitStoreTests(unittest.TestCase):
    make_store = staticmethod(make_store)

    async def setUp(self):
        self.store = await self.make_store(self)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")

    def spool(self) -> str:
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(MESSAGE)
        self.addCleanup(os.unlink, path)
        return path

    def submit(self, **kwargs):
        return self.store.submit(
            self.spool(),
            self.alice.id,
            "alice@example.com",
            [Delivery(mailbox_id=self.bob.id, original_rcpt="bob@example.com")],
            ["carol@remote.example"],
            "TRACE",
            **kwargs,
        )

    async def test_submit(self):
        submitted = await self.submit()
        self.assertEqual(submitted.sent.mailbox_id, self.alice.id)
        self.assertEqual(submitted.sent.flags, ("\\Seen",))
        [delivered] = submitted.delivered
        self.assertEqual((delivered.mailbox_id, delivered.flags), (self.bob.id, ()))
        self.assertEqual(submitted.message.size_bytes, len(MESSAGE))
        jobs, rcpts = await queue_rows(self.store)
        self.assertEqual([j["id"] for j in jobs], [submitted.job_id])
        self.assertEqual(jobs[0]["mail_from"], f"bounces+{submitted.message.id}@example.com")
        self.assertEqual([r["rcpt"] for r in rcpts], ["carol@remote.example"])
        for mailbox in (self.alice, self.bob):
            self.assertEqual((await self.store.get_mailbox(mailbox.id)).used_bytes, len(MESSAGE))

    async def test_sent_over_quota_stores_nothing(self):
        await self.store.update_mailbox(self.alice.id, quota_bytes=len(MESSAGE) - 1)
        with self.assertRaises(OverQuota):
            await self.submit()
        self.assertEqual(await queue_rows(self.store), ([], []))
        for mailbox in (self.alice, self.bob):
            self.assertEqual((await self.store.get_mailbox(mailbox.id)).used_bytes, 0)
            inbox = await self.store.get_folder(mailbox.id, "INBOX")
            self.assertEqual(await self.store.list_folder_messages(inbox.id), [])

    async def test_hourly_limit_is_exact_under_concurrency(self):
        """Eight concurrent submissions with ``per_hour = 3``: exactly three are queued."""
        results = await defer.DeferredList(
            [self.submit(per_hour=3) for _ in range(8)], consumeErrors=True
        )
        ok = [r for success, r in results if success]
        refused = [r for success, r in results if not success]
        self.assertEqual(len(ok), 3)
        self.assertEqual(len(refused), 5)
        for failure in refused:
            failure.trap(OutboundLimitExceeded)
        jobs, _ = await queue_rows(self.store)
        self.assertEqual(len(jobs), 3)
        sent = await self.store.get_folder(self.alice.id, "Sent")
        self.assertEqual(len(await self.store.list_folder_messages(sent.id)), 3)

    async def test_may_send_as(self):
        self.assertTrue(await self.store.may_send_as(self.alice.id, "Alice@Example.COM"))
        self.assertFalse(await self.store.may_send_as(self.alice.id, "bob@example.com"))
        # Whether the mailbox is active is the pipeline's check (``check_sender``), not this
        # one's: see tests/api/test_outbound.py for the refusal of a suspended mailbox.
        self.assertFalse(await self.store.may_send_as(self.alice.id, ""))


class PostgresSubmitStoreTests(SubmitStoreTests):
    skip = PG_SKIP
    make_store = staticmethod(make_pg_store)
