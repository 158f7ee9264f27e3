"""The storage contract: every ``IMailStore`` implementation passes these tests.

``StoreContractMixin`` holds the tests; each engine gets a ``TestCase`` that says how to build its
store. The same tests run against PostgreSQL + S3 once that engine exists.
"""

from __future__ import annotations

import os
import shutil

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from haitatsu.interfaces import (
    Conflict,
    IBlobStore,
    IChangeBus,
    IMailStore,
    OverQuota,
    StorageUnavailable,
)
from haitatsu.storage.records import Delivery
from tests.support import deliver_bytes, make_store

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: contract\r\n"
    b"Message-ID: <contract-1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


class StoreContractMixin:
    async def make(self):
        raise NotImplementedError

    async def read_blob(self, store, key) -> bytes:
        f = await store.blobs.open(key)
        try:
            return f.read()
        finally:
            f.close()

    async def read_whole(self, store, info) -> bytes:
        """The message through ``open_message``, the way protocols stream it."""
        f = await store.open_message(info)
        try:
            return f.read()
        finally:
            f.close()

    # -- interfaces ---------------------------------------------------------------------

    async def test_provides_interfaces(self):
        store = await self.make()
        self.assertTrue(verifyObject(IMailStore, store))
        self.assertTrue(verifyObject(IBlobStore, store.blobs))
        self.assertTrue(verifyObject(IChangeBus, store.changes))
        self.assertIsNone(await store.check())
        self.assertIsNone(await store.blobs.check())

    # -- mailboxes ----------------------------------------------------------------------

    async def test_create_mailbox_has_system_folders(self):
        store = await self.make()
        mailbox = await store.create_mailbox("Bob@Example.com")
        self.assertEqual(len(mailbox.id), 26)
        self.assertEqual(mailbox.primary_address, "Bob@Example.com")
        self.assertEqual(mailbox.status, "active")
        folders = await store.list_folders(mailbox.id)
        self.assertEqual(
            [(f.name, f.special_use, f.system) for f in folders],
            [
                ("INBOX", "", True),
                ("Archive", "\\Archive", True),
                ("Drafts", "\\Drafts", True),
                ("Junk", "\\Junk", True),
                ("Sent", "\\Sent", True),
                ("Trash", "\\Trash", True),
            ],
        )
        self.assertTrue(all(f.uid_next == 1 and f.uid_validity > 0 for f in folders))
        inbox = await store.get_folder(mailbox.id, "inbox")
        self.assertEqual(inbox.name, "INBOX")
        self.assertIsNone(await store.get_folder(mailbox.id, "sent"))

    async def test_duplicate_address_conflicts_ignoring_case(self):
        store = await self.make()
        await store.create_mailbox("bob@example.com")
        with self.assertRaises(Conflict):
            await store.create_mailbox("BOB@example.com")

    async def test_list_mailboxes_pages_newest_first(self):
        store = await self.make()
        made = [await store.create_mailbox(f"user{i}@example.com") for i in range(5)]
        first = await store.list_mailboxes(limit=2)
        self.assertEqual([m.id for m in first], [made[4].id, made[3].id])
        last = first[-1]
        rest = await store.list_mailboxes(limit=10, before=(last.created_at, last.id))
        self.assertEqual([m.id for m in rest], [made[2].id, made[1].id, made[0].id])
        await store.delete_mailbox(made[0].id)
        deleted = await store.list_mailboxes(status="deleted")
        self.assertEqual([m.id for m in deleted], [made[0].id])

    async def test_update_delete_restore(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        _, password = await store.create_app_password(mailbox.id, "phone", ["imap"])
        updated = await store.update_mailbox(
            mailbox.id, quota_bytes=1000, outbound_limits={"per_hour": 5}
        )
        self.assertEqual((updated.quota_bytes, updated.outbound_limits), (1000, {"per_hour": 5}))
        deleted = await store.delete_mailbox(mailbox.id)
        self.assertEqual(deleted.status, "deleted")
        self.assertIsNotNone(deleted.deleted_at)
        self.assertIsNone(await store.resolve_recipient("bob@example.com"))
        self.assertIsNone(await store.authenticate("bob@example.com", password, "imap"))
        restored = await store.restore_mailbox(mailbox.id)
        self.assertEqual((restored.status, restored.deleted_at), ("active", None))
        # App passwords are not restored with the mailbox.
        self.assertIsNone(await store.authenticate("bob@example.com", password, "imap"))
        self.assertIsNone(await store.update_mailbox("01NOSUCHMAILBOX00000000000", status="x"))
        self.assertIsNone(await store.delete_mailbox("01NOSUCHMAILBOX00000000000"))

    async def test_resolve_recipient_and_plus_addressing(self):
        store = await self.make()
        mailbox = await store.create_mailbox("Bob@Example.com")
        plain = await store.resolve_recipient("bob@example.com")
        self.assertEqual(
            (plain.mailbox_id, plain.base_rcpt, plain.plus_tag),
            (mailbox.id, "bob@example.com", ""),
        )
        tagged = await store.resolve_recipient("BOB+News@example.com")
        self.assertEqual(
            (tagged.mailbox_id, tagged.original_rcpt, tagged.base_rcpt, tagged.plus_tag),
            (mailbox.id, "BOB+News@example.com", "bob@example.com", "news"),
        )
        self.assertIsNone(await store.resolve_recipient("carol@example.com"))
        self.assertIsNone(await store.resolve_recipient("not-an-address"))
        await store.update_mailbox(mailbox.id, status="suspended")
        self.assertIsNone(await store.resolve_recipient("bob@example.com"))

    # -- app passwords ------------------------------------------------------------------

    async def test_app_password_lifecycle(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        record, password = await store.create_app_password(mailbox.id, "laptop", ["imap", "smtp"])
        self.assertEqual(len(password), 32)
        self.assertEqual(record.scopes, ("imap", "smtp"))
        self.assertIsNone(record.last_used_at)
        found = await store.authenticate("BOB@example.com", password, "imap")
        self.assertEqual(found.id, mailbox.id)
        self.assertIsNone(await store.authenticate("bob@example.com", password, "pop3"))
        self.assertIsNone(await store.authenticate("bob@example.com", password + "x", "imap"))
        self.assertIsNone(await store.authenticate("nobody@example.com", password, "imap"))
        (listed,) = await store.list_app_passwords(mailbox.id)
        self.assertIsNotNone(listed.last_used_at)
        revoked = await store.revoke_app_password(record.id)
        self.assertIsNotNone(revoked.revoked_at)
        self.assertIsNone(await store.authenticate("bob@example.com", password, "imap"))
        self.assertEqual(len(await store.list_app_passwords(mailbox.id)), 1)
        self.assertIsNone(await store.revoke_app_password("01NOSUCHPASSWORD0000000000"))

    async def test_password_hash_uses_the_original_encoding(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        record, _ = await store.create_app_password(mailbox.id, "laptop", ["imap"])

        async def read(txn):
            return await txn.execute_one(
                "SELECT password_hash FROM app_passwords WHERE id = ?", (record.id,)
            )

        row = await store.db.run("read hash", read, readonly=True)
        self.assertRegex(row["password_hash"], r"^argon2id\$v=19\$m=65536,t=1,p=4\$[^$]+\$[^$]+$")

    # -- delivery -----------------------------------------------------------------------

    async def test_deliver_is_byte_exact_and_allocates_uids(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        changes = []
        store.changes.subscribe(mailbox.id, changes.append)
        (first,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (second,) = await deliver_bytes(store, MESSAGE + b"more\r\n", mailbox.id, flags=["\\Seen"])
        self.assertEqual((first.uid, second.uid), (1, 2))
        self.assertGreater(second.modseq, first.modseq)
        self.assertEqual(second.flags, ("\\Seen",))
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(inbox.uid_next, 3)
        listed = await store.list_folder_messages(inbox.id)
        self.assertEqual([m.uid for m in listed], [1, 2])
        (pair,) = await store.get_messages(inbox.id, [1])
        mm, info = pair
        self.assertEqual(await self.read_whole(store, info), MESSAGE)
        self.assertEqual(await self.read_blob(store, info.blob_key), MESSAGE)
        self.assertEqual(info.size_bytes, len(MESSAGE))
        self.assertEqual(mm.size_bytes, len(MESSAGE))
        self.assertEqual(await store.read_message(info, 0, 7), b"From: A")
        self.assertEqual(info.layout, None)
        mailbox = await store.get_mailbox(mailbox.id)
        self.assertEqual(mailbox.used_bytes, len(MESSAGE) * 2 + 6)
        self.assertEqual([c["type"] for c in changes], ["exists", "exists"])
        self.assertEqual(changes[0]["folder_id"], inbox.id)

    async def test_one_delivery_to_many_mailboxes_stores_one_blob(self):
        store = await self.make()
        boxes = [await store.create_mailbox(f"u{i}@example.com") for i in range(3)]
        path = os.path.join(self.mktemp() + ".eml")
        with open(path, "wb") as f:
            f.write(MESSAGE)
        placed = await store.deliver(
            path, [Delivery(mailbox_id=b.id) for b in boxes] * 2, trace_id="T1"
        )
        self.assertEqual(len(placed), 3)
        self.assertEqual(len({p.message_id for p in placed}), 1)
        await deliver_bytes(store, MESSAGE, boxes[0].id)

        async def count(txn):
            blobs = await txn.execute_one("SELECT COUNT(*) AS n, MAX(refcount) AS r FROM blobs")
            messages = await txn.execute_one("SELECT COUNT(*) AS n FROM messages")
            return blobs["n"], blobs["r"], messages["n"]

        self.assertEqual(await store.db.run("count", count, readonly=True), (1, 2, 2))

    async def test_over_quota_delivery_is_refused_and_invisible(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com", quota_bytes=len(MESSAGE) + 10)
        await deliver_bytes(store, MESSAGE, mailbox.id)
        with self.assertRaises(OverQuota):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(len(await store.list_folder_messages(inbox.id)), 1)
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, len(MESSAGE))

    async def test_blob_failure_is_unavailable_and_invisible(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        # Root ignores permissions, so break the blob directory by putting a file in its place.
        root = store.blobs.root
        shutil.rmtree(root, ignore_errors=True)
        with open(root, "w") as f:
            f.write("not a directory")
        with self.assertRaises(StorageUnavailable):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(await store.list_folder_messages(inbox.id), [])
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 0)
        self.assertEqual(inbox.uid_next, 1)

    async def test_closed_database_is_unavailable(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        await store.db.close()
        with self.assertRaises(StorageUnavailable):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        with self.assertRaises(StorageUnavailable):
            await store.get_mailbox(mailbox.id)

    # -- flags and expunge --------------------------------------------------------------

    async def test_store_flags_modes(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (mm,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        changes = []
        store.changes.subscribe(mailbox.id, changes.append)
        (changed,) = await store.store_flags(mm.folder_id, [mm.uid], ["\\Seen", "$Work"], "+")
        self.assertEqual(changed.flags, ("\\Seen", "$Work"))
        self.assertGreater(changed.modseq, mm.modseq)
        (changed,) = await store.store_flags(mm.folder_id, [mm.uid], ["\\seen"], "-")
        self.assertEqual(changed.flags, ("$Work",))
        (changed,) = await store.store_flags(mm.folder_id, [mm.uid], ["\\Flagged"], "=")
        self.assertEqual(changed.flags, ("\\Flagged",))
        self.assertEqual(await store.store_flags(mm.folder_id, [mm.uid], ["\\Flagged"], "+"), [])
        self.assertEqual(await store.store_flags(mm.folder_id, [999], ["\\Seen"], "+"), [])
        self.assertEqual([c["type"] for c in changes], ["flags"] * 3)

    async def test_expunge_moves_to_trash_then_deletes(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (keep,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (gone,) = await deliver_bytes(store, MESSAGE + b"x\r\n", mailbox.id)
        await store.store_flags(gone.folder_id, [gone.uid], ["\\Deleted"], "+")
        self.assertEqual(await store.expunge(gone.folder_id), [gone.uid])
        inbox = await store.list_folder_messages(keep.folder_id)
        self.assertEqual([m.uid for m in inbox], [keep.uid])
        trash = await store.get_folder(mailbox.id, "Trash")
        (in_trash,) = await store.list_folder_messages(trash.id)
        self.assertEqual((in_trash.id, in_trash.uid, in_trash.imap_deleted), (gone.id, 1, False))
        used = (await store.get_mailbox(mailbox.id)).used_bytes
        await store.store_flags(trash.id, [1], ["\\Deleted"], "+")
        self.assertEqual(await store.expunge(trash.id, uids=[5]), [])
        self.assertEqual(await store.expunge(trash.id), [1])
        self.assertEqual(await store.list_folder_messages(trash.id), [])
        self.assertIsNone(await store.get_message_view(gone.id))
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, used - gone.size_bytes)

    async def test_list_messages_and_view(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        first = (await deliver_bytes(store, MESSAGE, mailbox.id))[0]
        second = (await deliver_bytes(store, MESSAGE, mailbox.id, flags=["\\Seen"]))[0]
        listed = await store.list_messages(mailbox.id)
        self.assertEqual([mm.id for mm, _ in listed], [second.id, first.id])
        unread = await store.list_messages(mailbox.id, read=False)
        self.assertEqual([mm.id for mm, _ in unread], [first.id])
        page = await store.list_messages(mailbox.id, limit=1, before=(second.created_at, second.id))
        self.assertEqual([mm.id for mm, _ in page], [first.id])
        mm, info = await store.get_message_view(first.id)
        self.assertEqual(mm.id, first.id)
        self.assertEqual(info.trace_id, "TRACE")


class SQLiteStoreTests(StoreContractMixin, unittest.TestCase):
    """The embedded default: SQLite and a blob directory."""

    async def make(self):
        return await make_store(self)
