"""The label-view part of the storage contract (``storage/store/label_views.py``): a label as a
view of its messages with UIDs of its own, what IMAP's ``Labels/<name>`` folders stand on.

``LabelViewContractMixin`` holds the tests; each engine adds a ``TestCase``.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.interfaces import FolderExists, InvalidFolderName, NoSuchFolder, OverQuota
from haitatsu.storage.records import Delivery
from tests.support import PG_SKIP, changes_settled, deliver_bytes, make_pg_store, make_store

ONE = b"From: a@example.org\r\nSubject: one\r\n\r\nOne.\r\n"
TWO = b"From: b@example.org\r\nSubject: two\r\n\r\nTwo, longer.\r\n"


def d(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))

    wrapper.__name__ = fn.__name__
    return wrapper


class LabelViewContractMixin:
    async def make(self):
        raise NotImplementedError

    async def setup_mailbox(self):
        self.store = store = await self.make()
        self.mailbox = await store.create_mailbox("labels@example.com")
        self.changes = []
        store.changes.subscribe(self.mailbox.id, self.changes.append)
        self.folders = {f.name: f for f in await store.list_folders(self.mailbox.id)}
        return store

    async def put(self, data, folder="INBOX", flags=()):
        [mm] = await deliver_bytes(self.store, data, self.mailbox.id, folder, flags)
        return mm

    async def where(self, mm_id):
        view = await self.store.get_message_view(mm_id)
        if view is None:
            return None
        folder = await self.store.get_folder_by_id(view[0].folder_id)
        return folder.name, view[0].uid, view[0].flags

    @d
    async def test_view_rows_carry_link_uids_and_skip_deleted_messages(self):
        store = await self.setup_mailbox()
        a = await self.put(ONE)
        b = await self.put(TWO, folder="Archive")
        label = await store.create_label(self.mailbox.id, "Work")
        await store.add_message_label(b.id, label.id)
        await store.add_message_label(a.id, label.id)
        rows = await store.list_label_messages(label.id)
        self.assertEqual([(r.id, r.uid, r.modseq) for r in rows], [(b.id, 1, 0), (a.id, 2, 0)])
        self.assertEqual(rows[0].folder_id, self.folders["Archive"].id)
        pairs = await store.get_label_messages(label.id, [2, 7])
        self.assertEqual([(mm.id, mm.uid, info.subject) for mm, info in pairs], [(a.id, 2, "one")])
        self.assertEqual(await store.get_label_messages(label.id, []), [])
        self.assertEqual(await store.label_link_uids(label.id, [a.id, "nope"]), {a.id: 2})
        # A soft-deleted message leaves the view; its link is still there for a restore.
        await store.soft_delete_message(a.id)
        self.assertEqual([r.id for r in await store.list_label_messages(label.id)], [b.id])
        self.assertEqual((await store.get_label_by_name(self.mailbox.id, "Work")).id, label.id)
        self.assertIsNone(await store.get_label_by_name(self.mailbox.id, "work"))

    @d
    async def test_flags_change_the_message_and_are_announced_for_its_folder(self):
        store = await self.setup_mailbox()
        a = await self.put(ONE)
        label = await store.create_label(self.mailbox.id, "Work")
        await store.add_message_label(a.id, label.id)
        [changed] = await store.store_label_flags(label.id, [1], ["\\Flagged", "$x"], "+")
        self.assertEqual((changed.uid, changed.flags, changed.modseq), (1, ("\\Flagged", "$x"), 0))
        self.assertEqual(await self.where(a.id), ("INBOX", 1, ("\\Flagged", "$x")))
        self.assertEqual(await store.store_label_flags(label.id, [1], ["\\Flagged"], "+"), [])
        await changes_settled(store)
        flags = [c for c in self.changes if c["type"] == "flags"]
        self.assertEqual(
            [(c["folder_id"], c["uid"]) for c in flags], [(self.folders["INBOX"].id, 1)]
        )
        inbox = await store.get_folder_by_id(self.folders["INBOX"].id)
        self.assertGreater(inbox.highest_modseq, self.folders["INBOX"].highest_modseq)

    @d
    async def test_expunge_unlinks_and_clears_deleted(self):
        store = await self.setup_mailbox()
        a = await self.put(ONE, flags=["\\Deleted"])
        b = await self.put(TWO, flags=["\\Deleted"])
        c = await self.put(ONE)
        label = await store.create_label(self.mailbox.id, "Work")
        for mm in (a, b, c):
            await store.add_message_label(mm.id, label.id)
        self.assertEqual(await store.expunge_label(label.id, [2, 3]), [2])
        self.assertEqual(await store.expunge_label(label.id), [1])
        self.assertEqual([r.uid for r in await store.list_label_messages(label.id)], [3])
        self.assertEqual(await self.where(a.id), ("INBOX", 1, ()))
        self.assertEqual(await self.where(b.id), ("INBOX", 2, ()))
        self.assertEqual(await store.labels_of([a.id, b.id]), {})
        await changes_settled(store)
        self.assertEqual(sorted(c["uid"] for c in self.changes if c["type"] == "unlabeled"), [1, 2])
        self.assertEqual(await store.expunge_label("01NOSUCHLABEL0000000000000"), [])

    @d
    async def test_copy_and_move_into_a_label(self):
        store = await self.setup_mailbox()
        a = await self.put(ONE)
        b = await self.put(TWO)
        work = await store.create_label(self.mailbox.id, "Work")
        play = await store.create_label(self.mailbox.id, "Play")
        inbox = ("folder", self.folders["INBOX"].id)
        result = await store.copy_to_label(inbox, [1, 2, 9], work.id)
        self.assertEqual(
            (result.uid_validity, result.source_uids, result.target_uids),
            (work.uid_validity, (1, 2), (1, 2)),
        )
        again = await store.copy_to_label(inbox, [2], work.id)
        self.assertEqual((again.source_uids, again.target_uids), ((2,), (2,)))
        self.assertEqual(await self.where(a.id), ("INBOX", 1, ()))
        # MOVE from a folder: the message goes to Archive, with the label.
        moved = await store.copy_to_label(inbox, [2], play.id, move=True)
        self.assertEqual((moved.source_uids, moved.target_uids), ((2,), (1,)))
        self.assertEqual(await self.where(b.id), ("Archive", 1, ()))
        self.assertEqual(
            [lb.name for lb in (await store.labels_of([b.id]))[b.id]], ["Play", "Work"]
        )
        # MOVE from a label: the source label goes.
        relabel = await store.copy_to_label(("label", work.id), [1], play.id, move=True)
        self.assertEqual((relabel.source_uids, relabel.target_uids), ((1,), (2,)))
        self.assertEqual([lb.name for lb in (await store.labels_of([a.id]))[a.id]], ["Play"])
        self.assertEqual(await self.where(a.id), ("INBOX", 1, ()))
        with self.assertRaises(NoSuchFolder):
            await store.copy_to_label(inbox, [1], "01NOSUCHLABEL0000000000000")
        other = await store.create_mailbox("other@example.com")
        foreign = await store.create_label(other.id, "Theirs")
        with self.assertRaises(NoSuchFolder):
            await store.copy_to_label(inbox, [1], foreign.id)
        await changes_settled(store)
        archive = self.folders["Archive"].id
        self.assertIn({"type": "exists", "folder_id": archive, "uid": 1, "id": b.id}, self.changes)

    @d
    async def test_copy_and_move_out_of_a_label(self):
        store = await self.setup_mailbox()
        a = await self.put(ONE)
        b = await self.put(TWO, folder="Archive")
        label = await store.create_label(self.mailbox.id, "Work")
        await store.add_message_label(a.id, label.id)
        await store.add_message_label(b.id, label.id)
        trash = self.folders["Trash"]
        copied = await store.copy_from_label(label.id, [1, 2], trash.id)
        self.assertEqual(
            (copied.uid_validity, copied.source_uids, copied.target_uids),
            (trash.uid_validity, (1, 2), (1, 2)),
        )
        self.assertEqual(
            (await store.get_mailbox(self.mailbox.id)).used_bytes, 2 * (len(ONE) + len(TWO))
        )
        moved = await store.copy_from_label(label.id, [2, 1], self.folders["Drafts"].id, move=True)
        self.assertEqual((moved.source_uids, moved.target_uids), ((1, 2), (1, 2)))
        self.assertEqual(await self.where(a.id), ("Drafts", 1, ()))
        self.assertEqual(await self.where(b.id), ("Drafts", 2, ()))
        self.assertEqual(await store.list_label_messages(label.id), [])
        self.assertEqual(await store.vanished_since(self.folders["Archive"].id, 0), [1])
        await store.update_mailbox(self.mailbox.id, quota_bytes=1)
        await store.add_message_label(a.id, label.id)
        with self.assertRaises(OverQuota):
            await store.copy_from_label(label.id, [3], trash.id)
        with self.assertRaises(NoSuchFolder):
            await store.copy_from_label(label.id, [3], "01NOSUCHFOLDER000000000000")

    @d
    async def test_rename_tree_and_subscription(self):
        store = await self.setup_mailbox()
        work = await store.create_label(self.mailbox.id, "Work")
        child = await store.create_label(self.mailbox.id, "Work/2024")
        await store.create_label(self.mailbox.id, "Workshop")
        await store.create_label(self.mailbox.id, "Play")
        renamed = await store.rename_label_tree(work.id, "Job")
        self.assertEqual((renamed.name, renamed.uid_validity), ("Job", work.uid_validity))
        names = sorted(lb.name for lb in await store.list_labels(self.mailbox.id))
        self.assertEqual(names, ["Job", "Job/2024", "Play", "Workshop"])
        with self.assertRaises(FolderExists):
            await store.rename_label_tree(work.id, "Play")
        with self.assertRaises(InvalidFolderName):
            await store.rename_label_tree(work.id, "Job/Sub")
        self.assertIsNone(await store.rename_label_tree("01NOSUCHLABEL0000000000000", "X"))
        self.assertEqual((await store.get_label(child.id)).name, "Job/2024")
        self.assertTrue(work.subscribed)
        self.assertFalse((await store.set_label_subscribed(work.id, False)).subscribed)
        self.assertFalse((await store.get_label(work.id)).subscribed)
        self.assertIsNone(await store.set_label_subscribed("01NOSUCHLABEL0000000000000", True))
        await changes_settled(store)
        self.assertEqual(
            [(c["label_id"], c["name"]) for c in self.changes if c["type"] == "label_renamed"],
            [(work.id, "Job"), (child.id, "Job/2024")],
        )

    @d
    async def test_delivery_with_a_label_is_atomic(self):
        store = await self.setup_mailbox()
        label = await store.create_label(self.mailbox.id, "Work")
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(ONE)
        self.addCleanup(os.unlink, path)
        [mm] = await store.deliver(
            path,
            [Delivery(self.mailbox.id, folder="Archive", labels=(label.id,))],
            trace_id="T",
        )
        self.assertEqual(await store.label_link_uids(label.id, [mm.id]), {mm.id: 1})
        await store.delete_label(label.id)
        with self.assertRaises(ValueError):
            await store.deliver(
                path,
                [Delivery(self.mailbox.id, folder="Archive", labels=(label.id,))],
                trace_id="T",
            )
        archive = self.folders["Archive"].id
        self.assertEqual(len(await store.list_folder_messages(archive)), 1)
        self.assertEqual((await store.get_mailbox(self.mailbox.id)).used_bytes, len(ONE))

    @d
    async def test_every_label_change_is_announced(self):
        store = await self.setup_mailbox()
        mm = await self.put(ONE)
        label = await store.create_label(self.mailbox.id, "Work")
        await store.add_message_label(mm.id, label.id)
        await store.add_message_label(mm.id, label.id)  # already there: no news
        await store.rename_label(label.id, "Job")
        await store.remove_message_label(mm.id, label.id)
        self.assertFalse(await store.remove_message_label(mm.id, label.id))
        await store.delete_label(label.id)
        await changes_settled(store)
        kinds = [(c["type"], c.get("uid")) for c in self.changes if c.get("label_id") == label.id]
        self.assertEqual(
            kinds,
            [
                ("label_created", None),
                ("labeled", 1),
                ("label_renamed", None),
                ("unlabeled", 1),
                ("label_deleted", None),
            ],
        )


class SQLiteLabelViewContractTests(LabelViewContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresLabelViewContractTests(LabelViewContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
