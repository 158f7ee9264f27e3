"""The storage contract: every ``IMailStore`` implementation passes these tests.

``StoreContractMixin`` holds the tests; each engine gets a ``TestCase`` that says how to build its
store. The same tests run against PostgreSQL + S3 once that engine exists; ``SQLiteS3StoreTests``
runs them on SQLite metadata with blobs in a real S3 endpoint (moto_server).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
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
from haitatsu.storage.engine import schema_files, split_statements
from haitatsu.storage.records import Delivery, now_ns
from haitatsu.storage.store import CLAIM_TIMEOUT_SECONDS
from tests.storage.corpus import LOW_THRESHOLD, attachment_message, b64, full_corpus, payload
from tests.support import (
    PG_SKIP,
    MotoS3Mixin,
    changes_settled,
    deliver_bytes,
    make_pg_store,
    make_s3_store,
    make_store,
)

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

    async def break_blobs(self, store):
        """Make the store's blob backend fail every write (each engine knows how)."""
        # Root ignores permissions, so break the blob directory by putting a file in its place.
        root = store.blobs.root
        shutil.rmtree(root, ignore_errors=True)
        with open(root, "w") as f:
            f.write("not a directory")

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

    # -- login throttling ---------------------------------------------------------------

    async def test_login_failures_lock_at_the_limit_until_the_lockout_ends(self):
        store = await self.make()
        minute, now = 60 * 10**9, 1_800_000_000 * 10**9
        ip = "198.51.100.1"
        for i in range(2):
            self.assertIsNone(await store.record_login_failure(ip, now + i, 10 * minute, 3, minute))
        self.assertIsNone(await store.login_locked(ip, now))
        until = await store.record_login_failure(ip, now + 2, 10 * minute, 3, minute)
        self.assertEqual(until, now + 2 + minute)
        self.assertEqual(await store.login_locked(ip, now + minute), until)
        self.assertIsNone(await store.login_locked("198.51.100.2", now))
        # failures while locked do not extend the lockout
        self.assertEqual(
            await store.record_login_failure(ip, now + 3, 10 * minute, 3, minute), until
        )
        self.assertIsNone(await store.login_locked(ip, until))
        # after the lockout the count starts again
        self.assertIsNone(await store.record_login_failure(ip, until, 10 * minute, 3, minute))
        await store.clear_login_failures(ip)
        await store.record_login_failure(ip, until, 10 * minute, 3, minute)
        self.assertIsNone(await store.record_login_failure(ip, until, 10 * minute, 3, minute))

    async def test_login_failure_window_restarts_the_count(self):
        store = await self.make()
        minute, now = 60 * 10**9, 1_800_000_000 * 10**9
        ip = "2001:db8::1"
        await store.record_login_failure(ip, now, 10 * minute, 2, minute)
        self.assertIsNone(
            await store.record_login_failure(ip, now + 10 * minute, 10 * minute, 2, minute)
        )
        self.assertIsNotNone(
            await store.record_login_failure(ip, now + 11 * minute, 10 * minute, 2, minute)
        )
        self.assertEqual(await store.prune_login_failures(now + 11 * minute), 0)
        self.assertEqual(await store.prune_login_failures(now + 13 * minute), 1)
        self.assertIsNone(await store.login_locked(ip, now + 11 * minute))

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
        await changes_settled(store)
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

    # -- quotas -------------------------------------------------------------------------

    async def test_quota_boundary_used_plus_size_equal_to_quota_is_allowed(self):
        store = await self.make()
        size = len(MESSAGE)
        mailbox = await store.create_mailbox("bob@example.com", quota_bytes=2 * size)
        await deliver_bytes(store, MESSAGE, mailbox.id)
        (placed,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        self.assertEqual(placed.uid, 2)
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 2 * size)
        with self.assertRaises(OverQuota):
            await deliver_bytes(store, b"x", mailbox.id)

    async def test_resolve_recipient_reports_a_full_mailbox(self):
        """API.md 5.2 step 8 needs ``used >= quota`` at RCPT: one byte of room still passes."""
        store = await self.make()
        size = len(MESSAGE)
        mailbox = await store.create_mailbox("bob@example.com", quota_bytes=size + 1)
        self.assertEqual((await store.resolve_recipient("bob@example.com")).over_quota, "")
        await deliver_bytes(store, MESSAGE, mailbox.id)
        self.assertEqual((await store.resolve_recipient("bob+x@example.com")).over_quota, "")
        await store.update_mailbox(mailbox.id, quota_bytes=size)
        full = await store.resolve_recipient("bob+x@example.com")
        self.assertEqual((full.mailbox_id, full.over_quota), (mailbox.id, "mailbox"))
        await store.update_mailbox(mailbox.id, quota_bytes=0)
        self.assertEqual((await store.resolve_recipient("bob@example.com")).over_quota, "")

    async def test_recompute_usage_repairs_drift(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (first,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        (second,) = await deliver_bytes(store, MESSAGE + b"two\r\n", mailbox.id)
        live = first.size_bytes + second.size_bytes
        await store.update_mailbox(mailbox.id, used_bytes=123456)
        self.assertEqual(await store.recompute_usage(mailbox.id), live)
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, live)
        # Expunged into Trash still counts; expunged from Trash does not.
        await store.store_flags(second.folder_id, [second.uid], ["\\Deleted"], "+")
        await store.expunge(second.folder_id)
        trash = await store.get_folder(mailbox.id, "Trash")
        await store.store_flags(trash.id, [1], ["\\Deleted"], "+")
        await store.expunge(trash.id)
        await store.update_mailbox(mailbox.id, used_bytes=-5)
        self.assertEqual(await store.recompute_usage(mailbox.id), first.size_bytes)
        empty = await store.create_mailbox("carol@example.com")
        await store.update_mailbox(empty.id, used_bytes=77)
        self.assertEqual(await store.recompute_usage(empty.id), 0)
        self.assertIsNone(await store.recompute_usage("01NOSUCHMAILBOX00000000000"))

    async def test_domain_quota_across_two_mailboxes(self):
        store = await self.make()
        size = len(MESSAGE)
        alice = await store.create_mailbox("Alice@Example.COM")
        bob = await store.create_mailbox("bob@example.com")
        other = await store.create_mailbox("erin@other.example")
        self.assertIsNone(await store.get_domain("example.com"))
        domain, created = await store.set_domain_quota("EXAMPLE.com", 2 * size)
        self.assertTrue(created)
        self.assertEqual(
            (domain.name, domain.quota_bytes, domain.used_bytes, domain.mailbox_count),
            ("example.com", 2 * size, 0, 2),
        )
        await deliver_bytes(store, MESSAGE, alice.id)
        self.assertEqual((await store.resolve_recipient("bob@example.com")).over_quota, "")
        await deliver_bytes(store, MESSAGE, bob.id)
        self.assertEqual((await store.get_domain("Example.com")).used_bytes, 2 * size)
        # Full: neither mailbox takes more, the other domain is untouched.
        self.assertEqual((await store.resolve_recipient("bob@example.com")).over_quota, "domain")
        self.assertEqual((await store.resolve_recipient("alice@example.com")).over_quota, "domain")
        self.assertEqual((await store.resolve_recipient("erin@other.example")).over_quota, "")
        with self.assertRaises(OverQuota):
            await deliver_bytes(store, MESSAGE, alice.id)
        path = self.mktemp() + ".eml"
        with open(path, "wb") as f:
            f.write(MESSAGE)
        placed = await store.deliver(
            path, [Delivery(mailbox_id=bob.id), Delivery(mailbox_id=other.id)], trace_id="T"
        )
        self.assertEqual([p.mailbox_id for p in placed], [other.id])
        self.assertEqual((await store.get_mailbox(alice.id)).used_bytes, size)
        self.assertEqual((await store.get_mailbox(bob.id)).used_bytes, size)
        # Freeing space in one mailbox makes room for the other.
        inbox = await store.get_folder(alice.id, "INBOX")
        trash = await store.get_folder(alice.id, "Trash")
        await store.store_flags(inbox.id, [1], ["\\Deleted"], "+")
        await store.expunge(inbox.id)
        await store.store_flags(trash.id, [1], ["\\Deleted"], "+")
        await store.expunge(trash.id)
        self.assertEqual((await store.get_domain("example.com")).used_bytes, size)
        await deliver_bytes(store, MESSAGE, bob.id)
        # 0 lifts the cap; setting it again updates the row.
        domain, created = await store.set_domain_quota("example.com", 0)
        self.assertFalse(created)
        self.assertEqual((domain.quota_bytes, domain.used_bytes), (0, 2 * size))
        await deliver_bytes(store, MESSAGE, alice.id)

    async def test_domain_quota_with_room_for_one_of_two_placements(self):
        """One delivery to two mailboxes of a domain with room for one message: exactly one
        placement is stored, and the domain's cap holds."""
        store = await self.make()
        size = len(MESSAGE)
        boxes = [await store.create_mailbox(f"u{i}@example.com") for i in range(2)]
        await store.set_domain_quota("example.com", size + size // 2)
        path = self.mktemp() + ".eml"
        with open(path, "wb") as f:
            f.write(MESSAGE)
        placed = await store.deliver(path, [Delivery(mailbox_id=b.id) for b in boxes], "T")
        self.assertEqual(len(placed), 1)
        self.assertEqual((await store.get_domain("example.com")).used_bytes, size)

    async def test_domain_quota_applies_to_append_style_deliveries_too(self):
        """The store enforces the cap itself, for any caller (IMAP APPEND into Sent here)."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        await store.set_domain_quota("example.com", len(MESSAGE) - 1)
        with self.assertRaises(OverQuota):
            await deliver_bytes(store, MESSAGE, mailbox.id, folder="Sent")
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, 0)

    async def test_list_domains_pages_newest_first(self):
        store = await self.make()
        names = [f"d{i}.example" for i in range(4)]
        for name in names:
            await store.set_domain_quota(name, 1000)
        first = await store.list_domains(limit=2)
        self.assertEqual([d.name for d in first], [names[3], names[2]])
        rest = await store.list_domains(limit=10, before=(first[-1].created_at, first[-1].name))
        self.assertEqual([d.name for d in rest], [names[1], names[0]])

    async def _deliver_at_once(self, store, mailbox_ids):
        """Start one delivery per entry without waiting between them; return the outcomes
        (the placements, or the exception)."""
        ds = [
            defer.Deferred.fromCoroutine(
                # Distinct messages of one size, so every delivery writes its own blob.
                deliver_bytes(store, MESSAGE + b"X-N: %d\r\n" % (i % 10), mailbox_id)
            )
            for i, mailbox_id in enumerate(mailbox_ids)
        ]
        results = await defer.DeferredList(ds, consumeErrors=True)
        outcomes = []
        for ok, value in results:
            if ok:
                outcomes.append(value)
            else:
                self.assertIsInstance(value.value, OverQuota, value.getTraceback())
                outcomes.append(value.value)
        return outcomes

    async def test_concurrent_deliveries_never_exceed_the_mailbox_quota(self):
        store = await self.make()
        size = len(MESSAGE) + len(b"X-N: 0\r\n")
        mailbox = await store.create_mailbox("bob@example.com", quota_bytes=3 * size + size // 2)
        outcomes = await self._deliver_at_once(store, [mailbox.id] * 8)
        self.assertEqual(sum(isinstance(o, list) for o in outcomes), 3)
        used = (await store.get_mailbox(mailbox.id)).used_bytes
        self.assertEqual(used, 3 * size)
        self.assertEqual(await store.recompute_usage(mailbox.id), used)

    async def test_enqueue_outbound_and_count(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (placed,) = await deliver_bytes(store, MESSAGE, mailbox.id, folder="Sent")
        before = now_ns()

        async def enqueue(txn):
            return await store._enqueue(
                txn,
                placed.message_id,
                mailbox.id,
                "bounces+x@example.com",
                ["a@remote.test", "A@remote.test", "b@remote.test"],
                trace_id="T",
            )

        job_id = await store.db.run("enqueue", enqueue)

        async def rows(txn):
            job = await txn.execute_one("SELECT * FROM outbound_jobs WHERE id = ?", (job_id,))
            rcpts = await txn.execute(
                "SELECT rcpt, status FROM outbound_recipients WHERE job_id = ? ORDER BY rcpt",
                (job_id,),
            )
            return job, rcpts

        job, rcpts = await store.db.run("read", rows, readonly=True)
        self.assertEqual(
            (job["status"], job["attempts"], job["mail_from"]),
            ("queued", 0, "bounces+x@example.com"),
        )
        self.assertEqual(
            rcpts,
            [
                {"rcpt": "a@remote.test", "status": "pending"},
                {"rcpt": "b@remote.test", "status": "pending"},
            ],
        )
        self.assertEqual(await store.count_outbound_since(mailbox.id, before), 1)
        self.assertEqual(await store.count_outbound_since(mailbox.id, now_ns()), 0)

    async def test_many_concurrent_deliveries_to_one_mailbox_all_succeed(self):
        """Every delivery updates the same folder and mailbox rows: none may fail for it."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        outcomes = await self._deliver_at_once(store, [mailbox.id] * 20)
        failures = [o for o in outcomes if not isinstance(o, list)]
        self.assertEqual(failures, [])
        inbox = await store.get_folder(mailbox.id, "INBOX")
        uids = [m.uid for m in await store.list_folder_messages(inbox.id)]
        self.assertEqual(uids, list(range(1, 21)))

    async def test_concurrent_deliveries_never_exceed_the_domain_quota(self):
        store = await self.make()
        size = len(MESSAGE) + len(b"X-N: 0\r\n")
        boxes = [(await store.create_mailbox(f"u{i}@example.com")).id for i in range(3)]
        await store.set_domain_quota("example.com", 4 * size + size // 2)
        outcomes = await self._deliver_at_once(store, boxes * 4)
        self.assertEqual(sum(isinstance(o, list) for o in outcomes), 4)
        domain = await store.get_domain("example.com")
        self.assertEqual(domain.used_bytes, 4 * size)
        self.assertLessEqual(domain.used_bytes, domain.quota_bytes)
        self.assertEqual(sum([await store.recompute_usage(b) for b in boxes]), domain.used_bytes)

    async def test_domain_column_backfill_matches_the_store(self):
        """Schema 002 fills ``mailboxes.domain`` for mailboxes made before it, with one SQL
        statement for every engine; it must agree with what ``create_mailbox`` writes."""
        store = await self.make()
        for address in ("Bob@Example.COM", "odd@host@Sub.Example.org", "plain", "x@"):
            await store.create_mailbox(address)
        (statement,) = [
            s
            for _, _, text in schema_files(store.db.engine.name)
            for s in split_statements(text)
            if s.startswith("UPDATE mailboxes SET domain")
        ]

        async def rerun(txn):
            before = await txn.execute("SELECT address_lower, domain FROM mailboxes")
            await txn.execute("UPDATE mailboxes SET domain = ''")
            await txn.execute(statement)
            after = await txn.execute("SELECT address_lower, domain FROM mailboxes")
            return sorted((r["address_lower"], r["domain"]) for r in before), sorted(
                (r["address_lower"], r["domain"]) for r in after
            )

        before, after = await store.db.run("rerun backfill", rerun)
        self.assertEqual(before, after)
        self.assertEqual(
            dict(after),
            {
                "bob@example.com": "example.com",
                "odd@host@sub.example.org": "sub.example.org",
                "plain": "plain",
                "x@": "",
            },
        )

    async def test_blob_failure_is_unavailable_and_invisible(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        await self.break_blobs(store)
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
        await changes_settled(store)
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
        await changes_settled(store)
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

    async def test_delete_messages_ignores_flags_and_moves_to_trash_or_soft_deletes(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (flagged,) = await deliver_bytes(store, MESSAGE, mailbox.id, flags=["\\Deleted"])
        (one,) = await deliver_bytes(store, MESSAGE + b"1\r\n", mailbox.id)
        (two,) = await deliver_bytes(store, MESSAGE + b"22\r\n", mailbox.id)
        changes = []
        store.changes.subscribe(mailbox.id, changes.append)
        inbox = one.folder_id
        self.assertEqual(await store.delete_messages(inbox, [one.uid, 999]), [one.uid])
        self.assertEqual(
            [m.uid for m in await store.list_folder_messages(inbox)], [flagged.uid, two.uid]
        )
        trash = await store.get_folder(mailbox.id, "Trash")
        (in_trash,) = await store.list_folder_messages(trash.id)
        self.assertEqual(in_trash.id, one.id)
        used = (await store.get_mailbox(mailbox.id)).used_bytes
        self.assertEqual(used, flagged.size_bytes + one.size_bytes + two.size_bytes)
        # Change buses may deliver asynchronously (PostgreSQL's NOTIFY): wait, bounded.
        mine = await _changes_about(changes, one.id, 2)
        self.assertEqual(
            [(c["type"], c["folder_id"]) for c in mine], [("expunge", inbox), ("exists", trash.id)]
        )
        self.assertEqual(await store.delete_messages(inbox, [two.uid], to_trash=False), [two.uid])
        self.assertIsNone(await store.get_message_view(two.id))
        self.assertEqual((await store.get_mailbox(mailbox.id)).used_bytes, used - two.size_bytes)
        self.assertEqual(await store.delete_messages(trash.id, [in_trash.uid]), [in_trash.uid])
        self.assertEqual(await store.list_folder_messages(trash.id), [])
        self.assertEqual(await store.delete_messages(inbox, []), [])

    async def test_concurrent_delete_messages_remove_a_message_once(self):
        """Two POP3 sessions QUIT at once having both DELE'd the same message."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (mm,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        results = await defer.gatherResults(
            [store.delete_messages(mm.folder_id, [mm.uid]) for _ in range(4)]
        )
        self.assertEqual(sorted(results), [[], [], [], [mm.uid]])
        trash = await store.get_folder(mailbox.id, "Trash")
        self.assertEqual([m.id for m in await store.list_folder_messages(trash.id)], [mm.id])

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

    # -- deduplication: skeleton and part blobs ------------------------------------------

    async def count_rows(self, store):
        async def count(txn):
            blobs = await txn.execute("SELECT blob_key, refcount FROM blobs ORDER BY blob_key")
            messages = await txn.execute_one("SELECT COUNT(*) AS n FROM messages")
            return {r["blob_key"]: r["refcount"] for r in blobs}, messages["n"]

        return await store.db.run("count", count, readonly=True)

    async def stored_keys(self, store) -> set[str]:
        """Every object in the blob store, paging through ``list_keys``."""
        keys, after = set(), ""
        while True:
            page = await store.blobs.list_keys(after, 7)
            keys.update(key for key, _ in page)
            if len(page) < 7:
                return keys
            after = page[-1][0]

    async def expected_refcounts(self, store) -> dict[str, int]:
        """Reference counts recomputed from the message rows: blob_key plus layout keys."""

        async def rows(txn):
            return await txn.execute("SELECT blob_key, layout FROM messages")

        counts: dict[str, int] = {}
        for row in await store.db.run("layouts", rows, readonly=True):
            keys = {row["blob_key"]}
            keys.update(k for k, _, _ in json.loads(row["layout"] or "[]"))
            for key in keys:
                counts[key] = counts.get(key, 0) + 1
        return counts

    async def test_one_message_to_50_recipients_is_one_message_row_and_one_blob_set(self):
        store = await self.make()
        store.attachment_dedup_threshold = 1024
        boxes = [await store.create_mailbox(f"u{i}@example.com") for i in range(50)]
        raw = attachment_message(b64(payload(20_000, 7)))
        path = self.mktemp() + ".eml"
        with open(path, "wb") as f:
            f.write(raw)
        placed = await store.deliver(path, [Delivery(mailbox_id=b.id) for b in boxes], "T50")
        self.assertEqual(len(placed), 50)
        self.assertEqual(len({p.message_id for p in placed}), 1)
        refcounts, messages = await self.count_rows(store)
        self.assertEqual(messages, 1)
        # A skeleton and the attachment, each referenced by the one message row.
        self.assertEqual(sorted(refcounts.values()), [1, 1])
        self.assertEqual(await self.stored_keys(store), set(refcounts))
        for mm in (placed[0], placed[-1]):
            _, info = await store.get_message_view(mm.id)
            self.assertEqual(await self.read_whole(store, info), raw)
            self.assertEqual(info.sha256, hashlib.sha256(raw).hexdigest())
            self.assertEqual(info.size_bytes, len(raw))

    async def test_same_attachment_in_20_messages_is_stored_once(self):
        store = await self.make()
        store.attachment_dedup_threshold = 1024
        mailbox = await store.create_mailbox("bob@example.com")
        attachment = b64(payload(30_000, 8))
        raws = [
            attachment_message(attachment, subject=f"Report {i}", text=f"Version {i}.")
            for i in range(20)
        ]
        placed = [(await deliver_bytes(store, raw, mailbox.id))[0] for raw in raws]
        refcounts, messages = await self.count_rows(store)
        self.assertEqual(messages, 20)
        self.assertEqual(len(refcounts), 21)  # 20 skeletons and one attachment
        self.assertEqual(sorted(refcounts.values()), [1] * 20 + [20])
        self.assertEqual(await self.stored_keys(store), set(refcounts))
        self.assertEqual(refcounts, await self.expected_refcounts(store))
        # The attachment blob holds the encoded bytes as received, not decoded ones.
        (shared,) = [key for key, n in refcounts.items() if n == 20]
        self.assertEqual(await self.read_blob(store, shared), attachment[: -len(b"\r\n")])
        infos = [(await store.get_message_view(mm.id))[1] for mm in placed]
        self.assertEqual({info.blob_key for info in infos} & {shared}, set())
        for raw, info in zip(raws, infos, strict=True):
            self.assertEqual(await self.read_whole(store, info), raw)
            self.assertEqual(info.sha256, hashlib.sha256(raw).hexdigest())
        used = (await store.get_mailbox(mailbox.id)).used_bytes
        self.assertEqual(used, sum(len(r) for r in raws))

    async def test_threshold_zero_stores_whole_messages(self):
        store = await self.make()
        store.attachment_dedup_threshold = 0
        mailbox = await store.create_mailbox("bob@example.com")
        raw = attachment_message(b64(payload(100_000, 9)))
        (mm,) = await deliver_bytes(store, raw, mailbox.id)
        _, info = await store.get_message_view(mm.id)
        self.assertIsNone(info.layout)
        self.assertEqual(info.blob_key, hashlib.sha256(raw).hexdigest())
        self.assertEqual(await self.read_blob(store, info.blob_key), raw)

    async def test_reassembly_is_byte_exact_on_the_corpus(self):
        """CPython's email test data and generated messages (base64 and quoted-printable
        attachments, nested multiparts, message/rfc822 with attachments, LF-only and mixed line
        endings, a missing final boundary, truncated base64): every one reads back exactly,
        whole and by part ranges."""
        store = await self.make()
        store.attachment_dedup_threshold = LOW_THRESHOLD
        mailbox = await store.create_mailbox("bob@example.com")
        split = set()
        rng = random.Random(3)
        for name, raw in full_corpus():
            (mm,) = await deliver_bytes(store, raw, mailbox.id)
            _, info = await store.get_message_view(mm.id)
            self.assertEqual(info.size_bytes, len(raw), name)
            self.assertEqual(info.sha256, hashlib.sha256(raw).hexdigest(), name)
            self.assertEqual(await self.read_whole(store, info), raw, name)
            if info.layout:
                split.add(name)
                self.assertEqual(sum(n for _, _, n in info.layout), len(raw), name)
                self.assertEqual(info.blob_key, info.layout[0][0], name)
            for spec, part in info.parts.items():
                start, end = part["header_start"], part["end"]
                got = await store.read_message(info, start, end - start)
                self.assertEqual(got, raw[start:end], (name, spec))
            for _ in range(5):
                start = rng.randrange(len(raw) + 1)
                length = rng.randrange(len(raw) - start + 2)
                got = await store.read_message(info, start, length)
                self.assertEqual(got, raw[start : start + length], (name, start, length))
            self.assertEqual(await store.read_message(info, 0), raw, name)
            f = await store.open_message(info)
            try:
                for _ in range(5):
                    start = rng.randrange(len(raw) + 1)
                    f.seek(start)
                    self.assertEqual(f.read(333), raw[start : start + 333], (name, start))
            finally:
                f.close()
        for name in (
            "base64-attachment",
            "quoted-printable-attachment",
            "nested-multipart",
            "rfc822-with-attachment",
            "lf-only",
            "mixed-line-endings",
            "missing-final-boundary",
            "truncated-base64",
            "same-attachment-twice",
        ):
            self.assertIn(name, split)
        self.assertGreater(len([n for n in split if n.startswith("msg_")]), 10)
        refcounts, _ = await self.count_rows(store)
        self.assertEqual(refcounts, await self.expected_refcounts(store))
        self.assertEqual(await self.stored_keys(store), set(refcounts))

    async def test_nul_characters_in_text_are_stored_and_served_exactly(self):
        """PostgreSQL TEXT refuses NUL: the extract gets U+FFFD, the stored bytes stay exact."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        raw = b"From: a@example.test\r\nSubject: nul\x00here\r\n\r\nbefore\x00after\r\n"
        (mm,) = await deliver_bytes(store, raw, mailbox.id)
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(info.text_body_extract, "before\ufffdafter\r\n")
        self.assertNotIn("\x00", info.subject)
        self.assertEqual(await self.read_whole(store, info), raw)

    async def test_same_part_twice_in_one_message_is_one_reference(self):
        store = await self.make()
        store.attachment_dedup_threshold = LOW_THRESHOLD
        mailbox = await store.create_mailbox("bob@example.com")
        raw = dict(full_corpus())["same-attachment-twice"]
        (mm,) = await deliver_bytes(store, raw, mailbox.id)
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(len(info.layout), 5)  # skeleton, part, skeleton, part, skeleton
        self.assertEqual(info.layout[1][0], info.layout[3][0])
        refcounts, _ = await self.count_rows(store)
        self.assertEqual(sorted(refcounts.values()), [1, 1])

    # -- purge and garbage collection ----------------------------------------------------

    async def remove_everywhere(self, store, mm):
        """Expunge a placement from its folder and then from Trash: soft-deleted."""
        await store.store_flags(mm.folder_id, [mm.uid], ["\\Deleted"], "+")
        await store.expunge(mm.folder_id)
        trash = await store.get_folder(mm.mailbox_id, "Trash")
        for row in await store.list_folder_messages(trash.id):
            await store.store_flags(trash.id, [row.uid], ["\\Deleted"], "+")
        await store.expunge(trash.id)

    async def test_purge_drops_references_only_when_no_placement_is_live(self):
        store = await self.make()
        store.attachment_dedup_threshold = 1024
        a = await store.create_mailbox("a@example.com")
        b = await store.create_mailbox("b@example.com")
        attachment = b64(payload(10_000, 10))
        first, second = attachment_message(attachment, "one"), attachment_message(attachment, "two")
        path = self.mktemp() + ".eml"
        with open(path, "wb") as f:
            f.write(first)
        placed = await store.deliver(path, [Delivery(a.id), Delivery(b.id)], "T")
        (other,) = await deliver_bytes(store, second, a.id)
        message_id = placed[0].message_id
        self.assertFalse(await store.purge_message(message_id))
        await self.remove_everywhere(store, placed[0])
        self.assertFalse(await store.purge_message(message_id))  # still live in b
        await self.remove_everywhere(store, placed[1])
        before, _ = await self.count_rows(store)
        self.assertTrue(await store.purge_message(message_id))
        self.assertFalse(await store.purge_message(message_id))
        after, messages = await self.count_rows(store)
        self.assertEqual(messages, 1)
        expected = await self.expected_refcounts(store)
        self.assertEqual({k: n for k, n in after.items() if n}, expected)
        self.assertEqual(sorted(after.values()), [0, 1, 1])  # first's skeleton now unreferenced
        shared = [k for k, n in before.items() if n == 2]
        self.assertEqual([after[k] for k in shared], [1])
        _, info = await store.get_message_view(other.id)
        self.assertEqual(await self.read_whole(store, info), second)

    async def test_garbage_collection_keeps_referenced_and_removes_after_grace(self):
        store = await self.make()
        store.attachment_dedup_threshold = 1024
        mailbox = await store.create_mailbox("bob@example.com")
        attachment = b64(payload(10_000, 11))
        keep_raw, gone_raw = (
            attachment_message(attachment, "keep"),
            attachment_message(attachment, "gone"),
        )
        (keep,) = await deliver_bytes(store, keep_raw, mailbox.id)
        (gone,) = await deliver_bytes(store, gone_raw, mailbox.id)
        # Referenced blobs survive a collection with no grace at all.
        report = await store.collect_garbage(grace_seconds=0)
        self.assertEqual((report["unreferenced"], report["orphans"]), (0, 0))
        self.assertEqual(len(await self.stored_keys(store)), 3)
        await self.remove_everywhere(store, gone)
        self.assertTrue(await store.purge_message(gone.message_id))
        # Within the grace period the unreferenced skeleton stays.
        report = await store.collect_garbage(grace_seconds=3600)
        self.assertEqual(report["unreferenced"], 0)
        self.assertEqual(len(await self.stored_keys(store)), 3)
        report = await store.collect_garbage(grace_seconds=0)
        self.assertEqual(report["unreferenced"], 1)
        self.assertEqual(report["bytes"], len(gone_raw) - len(attachment) + 2)
        refcounts, _ = await self.count_rows(store)
        self.assertEqual(sorted(refcounts.values()), [1, 1])
        self.assertEqual(await self.stored_keys(store), set(refcounts))
        _, info = await store.get_message_view(keep.id)
        self.assertEqual(await self.read_whole(store, info), keep_raw)

    async def test_garbage_collection_removes_orphan_objects_only_after_grace(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (mm,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        # An object with no row, as a delivery whose transaction failed leaves behind.
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"orphan bytes")
        orphan = (await store.blobs.put_file(path)).key
        self.assertIn(orphan, await self.stored_keys(store))
        report = await store.collect_garbage(grace_seconds=3600)
        self.assertEqual(report["orphans"], 0)
        self.assertIn(orphan, await self.stored_keys(store))
        report = await store.collect_garbage(grace_seconds=0)
        self.assertEqual((report["orphans"], report["unreferenced"]), (1, 0))
        refcounts, _ = await self.count_rows(store)
        self.assertEqual(await self.stored_keys(store), set(refcounts))
        self.assertNotIn(orphan, refcounts)
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)

    async def test_failed_delivery_leaves_a_lease_that_is_collected_after_grace(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com", quota_bytes=10)
        with self.assertRaises(OverQuota):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        refcounts, messages = await self.count_rows(store)
        self.assertEqual((list(refcounts.values()), messages), ([0], 0))
        self.assertEqual((await store.collect_garbage(grace_seconds=3600))["unreferenced"], 0)
        self.assertEqual((await store.collect_garbage(grace_seconds=0))["unreferenced"], 1)
        self.assertEqual(await self.count_rows(store), ({}, 0))
        self.assertEqual(await self.stored_keys(store), set())

    def pause_before_commit(self, store):
        """Make the next delivery stop after its blob puts, before its metadata commit.

        Returns ``(reached, release, calls)``: ``reached`` fires with the blob keys when the
        delivery is paused; firing ``release`` lets it go on. Later passes are not paused.
        """
        reached, release, calls = defer.Deferred(), defer.Deferred(), []

        def hook(keys):
            calls.append(keys)
            if len(calls) == 1:
                reached.callback(keys)
                return release
            return None

        store.before_commit = hook
        return reached, release, calls

    async def age_blob_rows(self, store, seconds):
        """Pretend every blob row was last touched ``seconds`` earlier."""

        async def age(txn):
            await txn.execute(
                "UPDATE blobs SET updated_at = updated_at - ?", (seconds * 1_000_000_000,)
            )

        await store.db.run("age blobs", age)

    async def test_gc_during_delivery_of_an_unreferenced_blob_never_loses_it(self):
        """The race the lease exists for: a message purged long ago left its blob unreferenced
        and past the grace period; the same message is delivered again and paused between its
        blob put (which found the object already there) and its commit; collection runs."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (old,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        await self.remove_everywhere(store, old)
        self.assertTrue(await store.purge_message(old.message_id))
        await self.age_blob_rows(store, 7200)
        reached, release, calls = self.pause_before_commit(store)
        delivery = defer.Deferred.fromCoroutine(deliver_bytes(store, MESSAGE, mailbox.id))
        keys = await reached
        report = await store.collect_garbage(grace_seconds=3600)
        self.assertEqual((report["unreferenced"], report["orphans"]), (0, 0))
        self.assertEqual(await self.stored_keys(store), set(keys))
        release.callback(None)
        (mm,) = await delivery
        self.assertEqual(len(calls), 1)
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)
        self.assertEqual(await self.count_rows(store), ({info.blob_key: 1}, 1))
        # And nothing a later collection does takes it away.
        await store.collect_garbage(grace_seconds=0)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)

    async def test_gc_taking_a_leased_blob_makes_the_delivery_store_it_again(self):
        """A delivery slower than the grace period (here: grace 0) loses its lease to
        collection, which removes the blob; the commit notices the row it leased is gone, and
        the delivery leases and stores the blob again instead of referencing a missing one."""
        store = await self.make()
        store.attachment_dedup_threshold = 1024
        mailbox = await store.create_mailbox("bob@example.com")
        raw = attachment_message(b64(payload(10_000, 12)))
        reached, release, calls = self.pause_before_commit(store)
        delivery = defer.Deferred.fromCoroutine(deliver_bytes(store, raw, mailbox.id))
        keys = await reached
        report = await store.collect_garbage(grace_seconds=0)
        self.assertEqual(report["unreferenced"], 2)
        self.assertEqual(await self.stored_keys(store), set())
        release.callback(None)
        (mm,) = await delivery
        self.assertEqual(len(calls), 2)
        self.assertEqual(sorted(calls[1]), sorted(keys))
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), raw)
        refcounts, _ = await self.count_rows(store)
        self.assertEqual(refcounts, {key: 1 for key in keys})
        self.assertEqual(await self.stored_keys(store), set(keys))
        self.flushLoggedErrors()

    async def test_delivery_waits_while_gc_deletes_the_same_blob(self):
        """Collection paused between claiming an unreferenced blob and deleting its object; a
        delivery of the same bytes cannot lease it meanwhile, retries, and once the object and
        row are gone stores the blob again: nothing refers to a deleted object."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (old,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        await self.remove_everywhere(store, old)
        self.assertTrue(await store.purge_message(old.message_id))
        claimed, release = defer.Deferred(), defer.Deferred()

        def hook(key):
            claimed.callback(key)
            return release

        store.before_blob_delete = hook
        collection = store.collect_garbage(grace_seconds=0)
        key = await claimed
        busy = []

        def observe(event):
            if "being collected" in event.get("log_format", ""):
                busy.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        delivery = defer.Deferred.fromCoroutine(deliver_bytes(store, MESSAGE, mailbox.id))
        for _ in range(500):
            if busy:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(busy[0]["key"], key)
        self.assertNoResult(delivery)
        release.callback(None)
        self.assertEqual((await collection)["unreferenced"], 1)
        (mm,) = await delivery
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)
        self.assertEqual(await self.count_rows(store), ({key: 1}, 1))

    async def test_a_claim_left_by_a_dead_collection_is_finished_by_a_later_one(self):
        """A pass that died after claiming a blob leaves the row claimed: deliveries of those
        bytes fail temporarily (nothing visible) until a later pass, once the claim is stale,
        finishes the deletion; then they store it afresh."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        (old,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        await self.remove_everywhere(store, old)
        self.assertTrue(await store.purge_message(old.message_id))

        async def claim(txn):
            await txn.execute("UPDATE blobs SET refcount = -1, generation = 'dead-pass'")

        await store.db.run("dead claim", claim)
        with self.assertRaises(StorageUnavailable):
            await deliver_bytes(store, MESSAGE, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(await store.list_folder_messages(inbox.id), [])
        # A fresh claim is left alone (its pass may still be deleting); a stale one is finished.
        self.assertEqual((await store.collect_garbage(grace_seconds=0))["unreferenced"], 0)
        await self.age_blob_rows(store, CLAIM_TIMEOUT_SECONDS + 1)
        self.assertEqual((await store.collect_garbage(grace_seconds=3600))["unreferenced"], 1)
        self.assertEqual(await self.count_rows(store), ({}, 0))
        (mm,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)
        self.flushLoggedErrors()

    async def test_gc_of_an_orphan_during_delivery_of_the_same_bytes_never_loses_it(self):
        """An orphan object (no row) and a delivery of the same bytes paused after its put:
        the delivery's lease row keeps collection away from the object."""
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(MESSAGE)
        await store.blobs.put_file(path)
        reached, release, calls = self.pause_before_commit(store)
        delivery = defer.Deferred.fromCoroutine(deliver_bytes(store, MESSAGE, mailbox.id))
        keys = await reached
        report = await store.collect_garbage(grace_seconds=3600)
        self.assertEqual(report["orphans"], 0)
        self.assertEqual(await self.stored_keys(store), set(keys))
        release.callback(None)
        (mm,) = await delivery
        _, info = await store.get_message_view(mm.id)
        self.assertEqual(await self.read_whole(store, info), MESSAGE)

    # -- search -------------------------------------------------------------------------

    async def test_search_messages_same_results_on_every_engine(self):
        store = await self.make()
        mailbox = await store.create_mailbox("bob@example.com")
        other = await store.create_mailbox("carol@example.com")

        def message(sender, subject, body, html=False):
            kind = "text/html" if html else "text/plain"
            return (
                f"From: {sender}\r\nTo: bob@example.com\r\nSubject: {subject}\r\n"
                f"Content-Type: {kind}; charset=utf-8\r\n\r\n{body}\r\n"
            ).encode()

        (budget,) = await deliver_bytes(
            store,
            message("Alice <alice@example.org>", "Quarterly budget", "Numbers inside."),
            mailbox.id,
        )
        (meetings,) = await deliver_bytes(
            store,
            message("Dave <dave@corp.example>", "Lunch", "Two meetings moved to Friday."),
            mailbox.id,
        )
        (html,) = await deliver_bytes(
            store,
            message("dave@corp.example", "Report", "<p>The <b>budget</b> report</p>", html=True),
            mailbox.id,
        )
        await deliver_bytes(store, message("x@y.example", "budget", "not Bob's"), other.id)
        gone = (await deliver_bytes(store, message("z@y.example", "budget", "gone"), mailbox.id))[0]
        await store.store_flags(gone.folder_id, [gone.uid], ["\\Deleted"], "+")
        await store.expunge(gone.folder_id)
        trash = await store.get_folder(mailbox.id, "Trash")
        await store.store_flags(trash.id, [1], ["\\Deleted"], "+")
        await store.expunge(trash.id)

        async def ids(terms, **kw):
            return [mm.id for mm, _ in await store.search_messages(mailbox.id, terms, **kw)]

        self.assertEqual(await ids("budget"), [html.id, budget.id])
        self.assertEqual(await ids("Budget quarterly"), [budget.id])
        self.assertEqual(await ids("meeting"), [meetings.id])  # stemmed
        self.assertEqual(await ids("alice"), [budget.id])
        self.assertEqual(await ids("alice@example.org"), [budget.id])
        self.assertEqual(await ids("corp.example"), [html.id, meetings.id])
        self.assertEqual(await ids('"moved to friday"'), [meetings.id])
        self.assertEqual(await ids('"friday moved"'), [])
        self.assertEqual(await ids("budget -report"), [budget.id])
        self.assertEqual(await ids("lunch or quarterly"), [meetings.id, budget.id])
        self.assertEqual(await ids("budget", limit=1), [html.id])
        self.assertEqual(await ids("budget", before=(html.created_at, html.id)), [budget.id])
        self.assertEqual(await ids("budget", folder_id=trash.id), [])
        self.assertEqual(await ids("nothing-like-this"), [])
        self.assertEqual(await ids(""), [])
        self.assertEqual(await ids('NEAR( AND "'), [])
        (pair,) = await store.search_messages(mailbox.id, "numbers")
        self.assertEqual(pair[1].subject, "Quarterly budget")


async def _changes_about(changes, row_id, count, timeout=5.0):
    """The changes about one message row, once ``count`` of them arrived (or the timeout)."""
    from twisted.internet import reactor, task

    for _ in range(int(timeout / 0.01)):
        mine = [c for c in changes if c.get("id") == row_id]
        if len(mine) >= count:
            return mine
        await task.deferLater(reactor, 0.01, lambda: None)
    return [c for c in changes if c.get("id") == row_id]


class SQLiteStoreTests(StoreContractMixin, unittest.TestCase):
    """The embedded default: SQLite and a blob directory."""

    async def make(self):
        return await make_store(self)


class PostgresStoreTests(StoreContractMixin, unittest.TestCase):
    """PostgreSQL (a fresh database per test, copied from a migrated template), the LISTEN/NOTIFY
    change bus and a blob directory."""

    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class S3BlobsMixin(MotoS3Mixin):
    """Blobs in a real S3 endpoint: moto_server for the class, a bucket of its own per test."""

    timeout = 60

    async def break_blobs(self, store):
        # The bucket disappears: every write answers NoSuchBucket.
        bucket = store.blobs.config.bucket

        def remove_bucket():
            s3 = self.moto.s3()
            for name in self.moto.object_names(bucket):
                s3.delete_object(Bucket=bucket, Key=name)
            s3.delete_bucket(Bucket=bucket)

        await deferToThread(remove_bucket)


class SQLiteS3StoreTests(S3BlobsMixin, StoreContractMixin, unittest.TestCase):
    """SQLite metadata, blobs in S3."""

    async def make(self):
        return await make_s3_store(self, self.moto)


class PostgresS3StoreTests(S3BlobsMixin, StoreContractMixin, unittest.TestCase):
    """Production storage: PostgreSQL metadata and change bus, blobs in S3."""

    skip = PG_SKIP

    async def make(self):
        return await make_s3_store(self, self.moto, postgres=True)
