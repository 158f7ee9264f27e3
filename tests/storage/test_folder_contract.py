"""The folder-management and copy/move part of the storage contract.

``FolderContractMixin`` holds the tests; each engine adds a ``TestCase`` saying how to build its
store (the PostgreSQL engine adds one beside its other contract cases).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.interfaces import (
    FolderExists,
    FolderHasChildren,
    FolderProtected,
    InvalidFolderName,
    NoSuchFolder,
    OverQuota,
)
from tests.support import PG_SKIP, changes_settled, deliver_bytes, make_pg_store, make_store

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: folders\r\n\r\nHello.\r\n"


def d(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))

    wrapper.__name__ = fn.__name__
    return wrapper


class FolderContractMixin:
    async def make(self):
        raise NotImplementedError

    async def setup_mailbox(self):
        store = await self.make()
        mailbox = await store.create_mailbox("folders@example.com")
        changes = []
        store.changes.subscribe(mailbox.id, changes.append)
        return store, mailbox, changes

    @d
    async def test_create_folder_with_parents_and_fresh_uidvalidity(self):
        store, mailbox, changes = await self.setup_mailbox()
        leaf = await store.create_folder(mailbox.id, "a/b/c")
        names = {f.name: f for f in await store.list_folders(mailbox.id)}
        self.assertTrue({"a", "a/b", "a/b/c"} <= set(names))
        self.assertEqual((leaf.name, leaf.system, leaf.uid_next), ("a/b/c", False, 1))
        # The system folders share the mailbox's creation second; each later one is above all.
        system = max(f.uid_validity for f in names.values() if f.system)
        validities = [names[n].uid_validity for n in ("a", "a/b", "a/b/c")]
        self.assertEqual(validities, sorted(set(validities)))
        self.assertGreater(validities[0], system)
        await changes_settled(store)
        self.assertEqual(
            [c["name"] for c in changes if c["type"] == "folder_created"], ["a", "a/b", "a/b/c"]
        )
        with self.assertRaises(FolderExists):
            await store.create_folder(mailbox.id, "a/b")
        with self.assertRaises(FolderExists):
            await store.create_folder(mailbox.id, "inbox")
        for bad in ("", "a//b", "/a", "a/", "x\ty"):
            with self.assertRaises(InvalidFolderName):
                await store.create_folder(mailbox.id, bad)
        await store.create_folder(mailbox.id, "x/y", create_parents=False)
        self.assertIsNone(await store.get_folder(mailbox.id, "x"))

    @d
    async def test_recreated_folder_never_reuses_a_uidvalidity(self):
        store, mailbox, _ = await self.setup_mailbox()
        seen = set()
        for _ in range(3):
            folder = await store.create_folder(mailbox.id, "again")
            self.assertNotIn(folder.uid_validity, seen)
            seen.add(folder.uid_validity)
            await store.delete_folder(folder.id)

    @d
    async def test_delete_folder_rules_and_quota(self):
        store, mailbox, changes = await self.setup_mailbox()
        inbox = await store.get_folder(mailbox.id, "INBOX")
        for name in ("INBOX", "Sent", "Trash"):
            folder = await store.get_folder(mailbox.id, name)
            with self.assertRaises(FolderProtected):
                await store.delete_folder(folder.id)
        parent = await store.create_folder(mailbox.id, "p")
        child = await store.create_folder(mailbox.id, "p/c")
        with self.assertRaises(FolderHasChildren):
            await store.delete_folder(parent.id)
        await deliver_bytes(store, MESSAGE, mailbox.id, folder="p/c")
        await deliver_bytes(store, MESSAGE, mailbox.id)
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 2 * len(MESSAGE))
        removed = await store.delete_folder(child.id)
        self.assertEqual(removed.id, child.id)
        self.assertIsNone(await store.get_folder_by_id(child.id))
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, len(MESSAGE))
        await changes_settled(store)
        self.assertIn({"type": "folder_deleted", "folder_id": child.id, "name": "p/c"}, changes)
        self.assertEqual(len(await store.list_folder_messages(inbox.id)), 1)
        self.assertIsNone(await store.delete_folder(child.id))
        # refuse_children=False leaves the children to be listed under an implied parent.
        await store.create_folder(mailbox.id, "p/d")
        await store.delete_folder(parent.id, refuse_children=False)
        self.assertIsNotNone(await store.get_folder(mailbox.id, "p/d"))

    @d
    async def test_rename_moves_children_and_keeps_uids(self):
        store, mailbox, _ = await self.setup_mailbox()
        top = await store.create_folder(mailbox.id, "work")
        child = await store.create_folder(mailbox.id, "work/2024")
        [mm] = await deliver_bytes(store, MESSAGE, mailbox.id, folder="work/2024")
        renamed = await store.rename_folder(top.id, "archive-2/work")
        self.assertEqual((renamed.id, renamed.name), (top.id, "archive-2/work"))
        moved = await store.get_folder(mailbox.id, "archive-2/work/2024")
        self.assertEqual((moved.id, moved.uid_validity), (child.id, child.uid_validity))
        self.assertIsNotNone(await store.get_folder(mailbox.id, "archive-2"))
        self.assertEqual([r.uid for r in await store.list_folder_messages(moved.id)], [mm.uid])
        with self.assertRaises(InvalidFolderName):
            await store.rename_folder(top.id, "archive-2/work/2024/x")
        with self.assertRaises(FolderExists):
            await store.rename_folder(top.id, "Sent")
        sent = await store.get_folder(mailbox.id, "Sent")
        with self.assertRaises(FolderProtected):
            await store.rename_folder(sent.id, "Outbox")
        self.assertEqual(
            (await store.rename_folder(sent.id, "Outbox", allow_system=True)).name, "Outbox"
        )

    @d
    async def test_rename_inbox_moves_messages(self):
        store, mailbox, _ = await self.setup_mailbox()
        inbox = await store.get_folder(mailbox.id, "INBOX")
        await deliver_bytes(store, MESSAGE, mailbox.id, flags=["\\Seen"])
        await deliver_bytes(store, MESSAGE, mailbox.id)
        new = await store.rename_folder(inbox.id, "Old/INBOX")
        self.assertNotEqual(new.id, inbox.id)
        self.assertEqual(await store.list_folder_messages(inbox.id), [])
        rows = await store.list_folder_messages(new.id)
        self.assertEqual([(r.uid, r.read) for r in rows], [(1, True), (2, False)])
        self.assertEqual((await store.get_folder_by_id(inbox.id)).name, "INBOX")

    @d
    async def test_subscribe(self):
        store, mailbox, _ = await self.setup_mailbox()
        junk = await store.get_folder(mailbox.id, "Junk")
        self.assertFalse((await store.set_folder_subscribed(junk.id, False)).subscribed)
        self.assertTrue((await store.set_folder_subscribed(junk.id, True)).subscribed)
        self.assertIsNone(await store.set_folder_subscribed("nope", True))

    @d
    async def test_copy_shares_the_message_and_counts_quota(self):
        store, mailbox, changes = await self.setup_mailbox()
        inbox = await store.get_folder(mailbox.id, "INBOX")
        archive = await store.get_folder(mailbox.id, "Archive")
        for flags in ([], ["\\Flagged", "$label"], []):
            await deliver_bytes(store, MESSAGE, mailbox.id, flags=flags)
        await changes_settled(store)
        del changes[:]
        result = await store.copy_messages(inbox.id, [3, 2, 99], archive.id)
        self.assertEqual(
            (result.uid_validity, result.source_uids, result.target_uids),
            (archive.uid_validity, (2, 3), (1, 2)),
        )
        await changes_settled(store)
        self.assertEqual(
            [(c["type"], c["folder_id"], c["uid"]) for c in changes],
            [("exists", archive.id, 1), ("exists", archive.id, 2)],
        )
        pairs = await store.get_messages(archive.id, [1, 2])
        originals = await store.get_messages(inbox.id, [2, 3])
        self.assertEqual([mm.flags for mm, _ in pairs], [("\\Flagged", "$label"), ()])
        self.assertEqual([i.id for _, i in pairs], [i.id for _, i in originals])
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 5 * len(MESSAGE))
        await store.update_mailbox(mailbox.id, quota_bytes=6 * len(MESSAGE))
        with self.assertRaises(OverQuota):
            await store.copy_messages(inbox.id, [1, 2], archive.id)
        self.assertEqual(len(await store.list_folder_messages(archive.id)), 2)
        with self.assertRaises(NoSuchFolder):
            await store.copy_messages(inbox.id, [1], "no-such-folder")
        with self.assertRaises(NoSuchFolder):
            await store.copy_messages(inbox.id, [], "no-such-folder")
        self.assertFalse(await store.copy_messages(inbox.id, [], archive.id))

    @d
    async def test_move_keeps_flags_and_quota(self):
        store, mailbox, changes = await self.setup_mailbox()
        inbox = await store.get_folder(mailbox.id, "INBOX")
        other = await store.create_folder(mailbox.id, "Other")
        await deliver_bytes(store, MESSAGE, mailbox.id, flags=["\\Answered"])
        await deliver_bytes(store, MESSAGE, mailbox.id)
        await changes_settled(store)
        del changes[:]
        result = await store.move_messages(inbox.id, [1], other.id)
        self.assertEqual((result.source_uids, result.target_uids), ((1,), (1,)))
        await changes_settled(store)
        self.assertEqual(
            [(c["type"], c["folder_id"], c["uid"]) for c in changes],
            [("expunge", inbox.id, 1), ("exists", other.id, 1)],
        )
        [row] = await store.list_folder_messages(other.id)
        self.assertTrue(row.answered)
        self.assertEqual([r.uid for r in await store.list_folder_messages(inbox.id)], [2])
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 2 * len(MESSAGE))
        # Moving within the folder gives a new UID.
        result = await store.move_messages(inbox.id, [2], inbox.id)
        self.assertEqual(result.target_uids, (3,))


class SQLiteFolderContractTests(FolderContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresFolderContractTests(FolderContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
