"""The CONDSTORE/QRESYNC and MULTIAPPEND part of the storage contract (store/sync.py,
store/batch.py), on SQLite and on PostgreSQL: every way a UID leaves a folder is remembered
with its MODSEQ, changes since a MODSEQ, the conditional STORE, and a batch delivery that is
stored whole or not at all."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.interfaces import OverQuota
from haitatsu.storage.records import Delivery
from haitatsu.storage.store.sync import FolderCounts
from tests.support import PG_SKIP, deliver_bytes, make_pg_store, make_store

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: sync\r\n\r\nHello.\r\n"


def d(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))

    wrapper.__name__ = fn.__name__
    return wrapper


class SyncContractMixin:
    async def make(self):
        raise NotImplementedError

    async def setup_inbox(self, count=4):
        store = await self.make()
        mailbox = await store.create_mailbox("sync@example.com")
        for _ in range(count):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        return store, mailbox, inbox

    @d
    async def test_every_change_takes_a_new_modseq_and_changed_since_finds_it(self):
        store, mailbox, inbox = await self.setup_inbox(3)
        rows = await store.list_folder_messages(inbox.id)
        modseqs = [r.modseq for r in rows]
        self.assertEqual(modseqs, sorted(set(modseqs)))
        before = (await store.get_folder_by_id(inbox.id)).highest_modseq
        self.assertEqual(before, modseqs[-1])
        [changed] = await store.store_flags(inbox.id, [2], ["\\Seen"], "+")
        self.assertEqual(changed.modseq, before + 1)
        # A STORE that changes nothing leaves the MODSEQ alone.
        self.assertEqual(await store.store_flags(inbox.id, [2], ["\\Seen"], "+"), [])
        self.assertEqual((await store.get_folder_by_id(inbox.id)).highest_modseq, before + 1)
        self.assertEqual([r.uid for r in await store.changed_since(inbox.id, before)], [2])
        self.assertEqual([r.uid for r in await store.changed_since(inbox.id, modseqs[0])], [2, 3])

    @d
    async def test_expunge_move_and_pop3_deletion_remember_the_vanished_uids(self):
        store, mailbox, inbox = await self.setup_inbox(4)
        archive = await store.get_folder(mailbox.id, "Archive")
        start = (await store.get_folder_by_id(inbox.id)).highest_modseq
        await store.store_flags(inbox.id, [1], ["\\Deleted"], "+")
        self.assertEqual(await store.expunge(inbox.id), [1])
        after_expunge = (await store.get_folder_by_id(inbox.id)).highest_modseq
        await store.move_messages(inbox.id, [2], archive.id)
        after_move = (await store.get_folder_by_id(inbox.id)).highest_modseq
        self.assertEqual(await store.delete_messages(inbox.id, [3]), [3])
        self.assertEqual(await store.vanished_since(inbox.id, start), [1, 2, 3])
        self.assertEqual(await store.vanished_since(inbox.id, after_expunge), [2, 3])
        self.assertEqual(await store.vanished_since(inbox.id, after_move), [3])
        final = (await store.get_folder_by_id(inbox.id)).highest_modseq
        self.assertEqual(await store.vanished_since(inbox.id, final), [])
        # The expunged message went to Trash: it is new there, not vanished there.
        trash = await store.get_folder(mailbox.id, "Trash")
        self.assertEqual(await store.vanished_since(trash.id, 0), [])
        # Expunging in Trash soft-deletes: that UID vanishes from Trash.
        [in_trash, *_] = await store.list_folder_messages(trash.id)
        await store.store_flags(trash.id, [in_trash.uid], ["\\Deleted"], "+")
        await store.expunge(trash.id)
        self.assertIn(in_trash.uid, await store.vanished_since(trash.id, 0))

    @d
    async def test_deleting_a_folder_forgets_its_vanished_uids(self):
        store = await self.make()
        mailbox = await store.create_mailbox("sync@example.com")
        folder = await store.create_folder(mailbox.id, "Lists")
        await deliver_bytes(store, MESSAGE, mailbox.id, folder="Lists")
        await store.delete_messages(folder.id, [1], to_trash=False)
        self.assertEqual(await store.vanished_since(folder.id, 0), [1])
        await store.delete_folder(folder.id)
        self.assertEqual(await store.vanished_since(folder.id, 0), [])

    @d
    async def test_conditional_store_leaves_messages_changed_after_the_given_modseq(self):
        store, mailbox, inbox = await self.setup_inbox(3)
        rows = await store.list_folder_messages(inbox.id)
        base = rows[-1].modseq
        await store.store_flags(inbox.id, [2], ["$Work"], "+")
        result = await store.store_flags_unchanged_since(
            inbox.id, [1, 2, 3], ["\\Flagged"], "+", base
        )
        self.assertEqual(result.modified, (2,))
        self.assertEqual([r.uid for r in result.changed], [1, 3])
        now = {r.uid: r for r in await store.list_folder_messages(inbox.id)}
        self.assertTrue(now[1].flagged and now[3].flagged)
        self.assertFalse(now[2].flagged)
        # UNCHANGEDSINCE 0 fails for every message (RFC 7162 3.1.3).
        result = await store.store_flags_unchanged_since(inbox.id, [1], ["\\Seen"], "+", 0)
        self.assertEqual((result.changed, result.modified), ((), (1,)))

    @d
    async def test_folder_delta_is_what_changed_since_a_modseq(self):
        store, mailbox, inbox = await self.setup_inbox(4)
        base = (await store.get_folder_by_id(inbox.id)).highest_modseq
        delta = await store.folder_delta(inbox.id, base)
        self.assertEqual((delta.folder.id, delta.changed, delta.vanished), (inbox.id, (), ()))
        self.assertEqual(delta.folder.highest_modseq, base)
        await store.store_flags(inbox.id, [3], ["\\Seen"], "+")
        await store.store_flags(inbox.id, [1], ["\\Deleted"], "+")
        await store.expunge(inbox.id, [1])
        await deliver_bytes(store, MESSAGE, mailbox.id)
        delta = await store.folder_delta(inbox.id, base)
        self.assertEqual([(r.uid, r.read) for r in delta.changed], [(3, True), (5, False)])
        self.assertEqual(delta.vanished, (1,))
        self.assertEqual(delta.folder.highest_modseq, delta.changed[-1].modseq)
        self.assertEqual(delta.folder.highest_modseq, base + 4)  # flag, flag, expunge, new
        # From the latest MODSEQ on, nothing; a deleted folder reads as None.
        later = await store.folder_delta(inbox.id, delta.folder.highest_modseq)
        self.assertEqual((later.changed, later.vanished), ((), ()))
        folder = await store.create_folder(mailbox.id, "Gone")
        await store.delete_folder(folder.id)
        self.assertIsNone((await store.folder_delta(folder.id, 0)).folder)

    @d
    async def test_rest_moves_and_deletions_remember_the_vanished_uids(self):
        store, mailbox, inbox = await self.setup_inbox(4)
        archive = await store.get_folder(mailbox.id, "Archive")
        rows = {r.uid: r for r in await store.list_folder_messages(inbox.id)}
        start = (await store.get_folder_by_id(inbox.id)).highest_modseq
        await store.soft_delete_message(rows[1].id)
        await store.move_message(rows[2].id, archive.id)
        await store.trash_message(rows[3].id)
        # Moving a message to its own folder gives it a new UID: the old one vanishes.
        moved = await store.move_message(rows[4].id, inbox.id)
        self.assertEqual(moved.uid, 5)
        self.assertEqual(await store.vanished_since(inbox.id, start), [1, 2, 3, 4])
        delta = await store.folder_delta(inbox.id, start)
        self.assertEqual(([r.uid for r in delta.changed], delta.vanished), ([5], (1, 2, 3, 4)))

    @d
    async def test_folder_counts_sum_the_live_messages(self):
        store, mailbox, inbox = await self.setup_inbox(3)
        self.assertEqual(
            await store.folder_counts(inbox.id),
            FolderCounts(3, 3, 3 * len(MESSAGE), 0, 0, 3),
        )
        await store.store_flags(inbox.id, [1, 2], ["\\Seen"], "+")
        await store.store_flags(inbox.id, [2, 3], ["\\Deleted"], "+")
        await store.delete_messages(inbox.id, [1], to_trash=False)
        self.assertEqual(
            await store.folder_counts(inbox.id),
            FolderCounts(2, 1, 2 * len(MESSAGE), 2, 2 * len(MESSAGE), 3),
        )
        empty = await store.get_folder(mailbox.id, "Drafts")
        self.assertEqual(await store.folder_counts(empty.id), FolderCounts())

    async def spool(self, data):
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    @d
    async def test_batch_delivery_stores_all_in_one_transaction(self):
        store = await self.make()
        mailbox = await store.create_mailbox("sync@example.com")
        items = [
            (await self.spool(MESSAGE), Delivery(mailbox.id, folder="INBOX"), None),
            (
                await self.spool(MESSAGE + b"more\r\n"),
                Delivery(mailbox.id, folder="INBOX", flags=("\\Seen",)),
                1_000_000_000_000_000_000,
            ),
        ]
        placed = await store.deliver_batch(items, "TRACE")
        self.assertEqual([mm.uid for mm in placed], [1, 2])
        self.assertTrue(placed[1].read)
        self.assertEqual(placed[1].internal_date, 1_000_000_000_000_000_000)
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 2 * len(MESSAGE) + 6)

    @d
    async def test_batch_delivery_over_quota_stores_nothing(self):
        store = await self.make()
        mailbox = await store.create_mailbox("sync@example.com")
        await store.update_mailbox(mailbox.id, quota_bytes=2 * len(MESSAGE) + 10)
        items = [
            (await self.spool(MESSAGE), Delivery(mailbox.id, folder="INBOX"), None)
            for _ in range(3)
        ]
        with self.assertRaises(OverQuota):
            await store.deliver_batch(items, "TRACE")
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(await store.list_folder_messages(inbox.id), [])
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 0)
        self.assertEqual((await store.get_folder_by_id(inbox.id)).uid_next, 1)
        # Two fit.
        placed = await store.deliver_batch(items[:2], "TRACE")
        self.assertEqual([mm.uid for mm in placed], [1, 2])

    @d
    async def test_batch_delivery_to_a_missing_folder_stores_nothing(self):
        store = await self.make()
        mailbox = await store.create_mailbox("sync@example.com")
        items = [
            (await self.spool(MESSAGE), Delivery(mailbox.id, folder="INBOX"), None),
            (await self.spool(MESSAGE), Delivery(mailbox.id, folder="Nowhere"), None),
        ]
        with self.assertRaises(ValueError):
            await store.deliver_batch(items, "TRACE")
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(await store.list_folder_messages(inbox.id), [])


class SQLiteSyncContractTests(SyncContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)

    @d
    async def test_changes_since_a_modseq_are_found_through_the_modseq_index(self):
        """The shape of ``folder_delta``'s row query walks (folder_id, modseq), never every
        row of the folder (what a planner might do to save sorting by UID)."""
        store, mailbox, inbox = await self.setup_inbox(1)

        async def plan(txn):
            rows = await txn.execute(
                "EXPLAIN QUERY PLAN SELECT mm.uid FROM mailbox_messages mm "
                "WHERE mm.folder_id = ? AND mm.modseq > ? AND mm.deleted_at IS NULL",
                (inbox.id, 0),
            )
            return " ".join(r["detail"] for r in rows)

        detail = await store.db.run("plan", plan, readonly=True)
        self.assertIn("mailbox_messages_folder_modseq", detail)


class PostgresSyncContractTests(SyncContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
