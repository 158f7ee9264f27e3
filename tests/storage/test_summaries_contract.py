"""``message_summaries`` (store/summaries.py), on SQLite and on PostgreSQL: the light rows IMAP's
bulk FETCH and SEARCH read say what the full rows say, for dense and sparse UID sets, and
leave out what is not a live placement of the folder."""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.trial import unittest

from tests.support import PG_SKIP, deliver_bytes, make_pg_store, make_store

PLAIN = (
    b"From: Ann <ann@example.org>\r\nTo: box@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nHello there.\r\n"
)
MULTIPART = (
    b"From: b@example.org\r\nTo: box@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nplain words\r\n--b\r\nContent-Type: text/html\r\n\r\n"
    b"<p>html words</p>\r\n--b--\r\n"
)
ALL_FIELDS = (
    "envelope",
    "body",
    "bodystructure",
    "header_size",
    "subject",
    "text_body_extract",
    "html_body_extract",
    "blob_key",
    "layout",
)


def d(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))

    wrapper.__name__ = fn.__name__
    return wrapper


class SummariesContractMixin:
    async def make(self):
        raise NotImplementedError

    async def setup_inbox(self, count):
        store = await self.make()
        mailbox = await store.create_mailbox("summaries@example.com")
        for i in range(count):
            await deliver_bytes(store, MULTIPART if i % 2 else PLAIN, mailbox.id)
        inbox = await store.get_folder(mailbox.id, "INBOX")
        return store, mailbox, inbox

    @d
    async def test_summaries_say_what_the_full_rows_say(self):
        store, mailbox, inbox = await self.setup_inbox(4)
        await store.store_flags(inbox.id, [2], ["\\Seen", "\\Flagged", "$Work"], "+")
        await store.store_flags(inbox.id, [3], ["\\Deleted", "\\Answered", "\\Draft"], "+")
        summaries = await store.message_summaries(inbox.id, [1, 2, 3, 4], ALL_FIELDS)
        full = await store.get_messages(inbox.id, [1, 2, 3, 4])
        self.assertEqual(len(summaries), 4)
        for summary, (mm, info) in zip(summaries, full, strict=True):
            self.assertEqual(
                (summary.uid, summary.modseq, summary.flags, summary.internal_date),
                (mm.uid, mm.modseq, mm.flags, mm.internal_date),
            )
            self.assertEqual(summary.size_bytes, mm.size_bytes)
            self.assertEqual((summary.read, summary.keywords), (mm.read, mm.keywords))
            for field in ALL_FIELDS:
                self.assertEqual(getattr(summary, field), getattr(info, field), field)
            self.assertEqual(summary.segments, info.segments)
            self.assertEqual(
                await store.read_message(summary, 0, None), await store.read_message(info, 0, None)
            )
        self.assertEqual(summaries[0].subject, "Grüße")
        self.assertEqual(summaries[1].flags, ("\\Seen", "\\Flagged", "$Work"))
        self.assertEqual(summaries[2].flags, ("\\Answered", "\\Deleted", "\\Draft"))
        self.assertEqual(summaries[1].text_body_extract.strip(), "plain words")

    @d
    async def test_only_the_fields_asked_for_are_read(self):
        store, mailbox, inbox = await self.setup_inbox(2)
        [bare, with_envelope] = [
            (await store.message_summaries(inbox.id, [1], fields))[0]
            for fields in ((), ("envelope",))
        ]
        self.assertIsNone(bare.envelope)
        self.assertIsNone(bare.subject)
        self.assertTrue(with_envelope.envelope.startswith("("))
        self.assertIsNone(with_envelope.bodystructure)
        with self.assertRaises(ValueError):
            store.message_summaries(inbox.id, [1], ("headers",))

    @d
    async def test_dense_and_sparse_sets_leave_out_what_is_not_live_in_the_folder(self):
        store, mailbox, inbox = await self.setup_inbox(12)
        archive = await store.get_folder(mailbox.id, "Archive")
        await store.store_flags(inbox.id, [3], ["\\Deleted"], "+")
        await store.expunge(inbox.id)
        await store.move_messages(inbox.id, [5], archive.id)
        await store.delete_messages(inbox.id, [7], to_trash=False)

        async def uids(wanted, fields=()):
            return [s.uid for s in await store.message_summaries(inbox.id, wanted, fields)]

        live = [1, 2, 4, 6, 8, 9, 10, 11, 12]
        self.assertEqual(await uids(range(1, 13)), live)
        self.assertEqual(await uids(range(1, 13), ("subject",)), live)
        # A range with holes the client did not ask for: only the UIDs asked for.
        self.assertEqual(await uids([2, 3, 4, 6, 9, 10]), [2, 4, 6, 9, 10])
        # Sparse: the IN-list path.
        self.assertEqual(await uids([1, 12, 99, 5000]), [1, 12])
        self.assertEqual(await uids([12, 1, 1]), [1, 12])
        self.assertEqual(await uids([]), [])
        # Another folder's UIDs are its own.
        moved = await store.message_summaries(archive.id, [1], ("subject",))
        self.assertEqual([(s.uid, s.subject) for s in moved], [(1, "Grüße")])

    @d
    async def test_read_message_ranges_reads_what_read_message_reads(self):
        store, mailbox, inbox = await self.setup_inbox(2)
        store.attachment_dedup_threshold = 1024
        attachment = base64.encodebytes(bytes(range(256)) * 40).replace(b"\n", b"\r\n")
        split = (
            b"From: c@example.org\r\nSubject: split\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
            b"Content-Type: text/plain\r\n\r\nbefore\r\n--x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + attachment + b"--x\r\nContent-Type: text/plain\r\n\r\nafter\r\n--x--\r\n"
        )
        await deliver_bytes(store, split, mailbox.id)
        summaries = await store.message_summaries(inbox.id, [1, 2, 3], ("blob_key", "layout"))
        self.assertTrue(summaries[2].layout)
        requests = [
            (summaries[0], [(0, 10), (20, 5)]),
            (summaries[1], []),
            (summaries[2], [(0, 30), (len(split) - 40, 100), (500, 3000)]),
        ]
        answer = await store.read_message_ranges(requests)
        expected = [
            [await store.read_message(info, start, length) for start, length in ranges]
            for info, ranges in requests
        ]
        self.assertEqual(answer, expected)
        self.assertEqual(answer[2][0], split[:30])
        self.assertEqual(answer[2][1], split[-40:])
        self.assertEqual(answer[2][2], split[500:3500])

    @d
    async def test_folder_summaries_are_the_live_rows(self):
        store, mailbox, inbox = await self.setup_inbox(5)
        await store.store_flags(inbox.id, [4], ["\\Seen", "$Label"], "+")
        await store.delete_messages(inbox.id, [2], to_trash=False)
        summaries = await store.folder_summaries(inbox.id)
        rows = await store.list_folder_messages(inbox.id)
        self.assertEqual(
            [(s.uid, s.modseq, s.flags, s.internal_date, s.size_bytes) for s in summaries],
            [(r.uid, r.modseq, r.flags, r.internal_date, r.size_bytes) for r in rows],
        )
        self.assertEqual([s.uid for s in summaries], [1, 3, 4, 5])
        self.assertEqual(await store.folder_summaries("no-such-folder"), [])


class SQLiteSummariesContractTests(SummariesContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)

    @d
    async def test_subjects_are_read_from_the_covering_index(self):
        store = await self.make()

        async def plan(txn):
            hint = txn.index_hint("messages_id_subject")
            return await txn.execute(
                "EXPLAIN QUERY PLAN SELECT mm.uid, m.subject FROM mailbox_messages mm "
                f"JOIN messages m{hint} ON m.id = mm.message_id WHERE mm.folder_id = ?",
                ("x",),
            )

        details = " ".join(row["detail"] for row in await store.db.run("plan", plan))
        self.assertIn("COVERING INDEX messages_id_subject", details)

    @d
    async def test_reads_of_subject_or_envelope_alone_use_their_covering_index(self):
        """The store's own query (``_select``) for a field a covering index holds reads the
        index, not the rows; one for other fields reads the rows."""
        from haitatsu.storage.store.summaries import _select

        store = await self.make()

        def details_for(fields):
            async def plan(txn):
                rows = await txn.execute(
                    "EXPLAIN QUERY PLAN " + _select(txn, fields) + "mm.uid >= ? AND mm.uid <= ?",
                    ("x", 1, 10),
                )
                return " ".join(row["detail"] for row in rows)

            return store.db.run("plan", plan)

        self.assertIn("COVERING INDEX messages_id_envelope", await details_for(("envelope",)))
        self.assertIn("COVERING INDEX messages_id_subject", await details_for(("subject",)))
        other = await details_for(("envelope", "bodystructure"))
        self.assertNotIn("COVERING INDEX messages_id", other)


class PostgresSummariesContractTests(SummariesContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
