"""The bulk paths of FETCH and SEARCH (light rows from ``store.message_summaries``, bodies
read many at a time) answer exactly what the per-message paths answer."""

from __future__ import annotations

import base64

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d

TWO_TEXTS = (
    b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: two texts\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
    b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"\x00\x01" * 40).replace(b"\n", b"\r\n")
    + b"RmluZFRoaXNJbkJhc2U2NA==\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\n" + b"filler line\r\n" * 800 + b"late Needle\r\n"
    b"--B--\r\n"
)


class BulkFetchTests(IMAPTestCase):
    @d
    async def test_fetch_of_metadata_items_matches_the_message_rows(self):
        await self.deliver(SIMPLE, flags=["\\Seen", "$Work"])
        await self.deliver(MULTIPART)
        await self.deliver(SIMPLE, flags=["\\Flagged"])
        session = await self.selected()
        answer = await session.command(b"a FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODY)")
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        pairs = await self.store.get_messages(folder.id, [1, 2, 3])
        lines = answer.split(b"\r\n")
        self.assertEqual(lines[-2], b"a OK FETCH completed")
        for seq, (mm, info) in enumerate(pairs, 1):
            expected = b"* %d FETCH (UID %d FLAGS (%s) RFC822.SIZE %d ENVELOPE %s BODY %s)" % (
                seq,
                mm.uid,
                " ".join(mm.flags).encode(),
                mm.size_bytes,
                info.envelope.encode(),
                info.body.encode(),
            )
            self.assertEqual(lines[seq - 1], expected)

    @d
    async def test_a_message_expunged_by_another_session_keeps_its_row_items(self):
        await self.deliver(SIMPLE)
        await self.deliver(SIMPLE)
        session = await self.selected()
        other = await self.selected()
        await other.command(b"x STORE 1 +FLAGS (\\Deleted)")
        await other.command(b"y EXPUNGE")
        # Not yet told about the expunge: the flags still come from the view; ENVELOPE of a
        # message that is gone is left out.
        answer = await session.command(b"a FETCH 1:2 (FLAGS)")
        self.assertIn(b"* 1 FETCH (FLAGS ())", answer)
        self.assertIn(b"* 2 FETCH (FLAGS ())", answer)
        answer = await session.command(b"b FETCH 1:2 (ENVELOPE)")
        self.assertNotIn(b"* 1 FETCH", answer)
        self.assertIn(b"* 2 FETCH (ENVELOPE", answer)


class BulkSearchTests(IMAPTestCase):
    @d
    async def test_body_searches_text_parts_not_attachments(self):
        await self.deliver(TWO_TEXTS)
        await self.deliver(SIMPLE)
        session = await self.selected()
        # In the second text part, beyond the stored extract of the first.
        answer = await session.command(b"a SEARCH BODY needle")
        self.assertEqual(answer, b"* SEARCH 1\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"b SEARCH BODY FIRST")
        self.assertEqual(answer, b"* SEARCH 1\r\nb OK SEARCH completed\r\n")
        # The raw base64 of an attachment is not searched.
        answer = await session.command(b"c SEARCH BODY RmluZFRoaXNJbkJhc2U2NA")
        self.assertEqual(answer, b"* SEARCH\r\nc OK SEARCH completed\r\n")
        answer = await session.command(b"d SEARCH NOT BODY needle")
        self.assertEqual(answer, b"* SEARCH 2\r\nd OK SEARCH completed\r\n")
        answer = await session.command(b"e SEARCH TEXT needle")
        self.assertEqual(answer, b"* SEARCH 1\r\ne OK SEARCH completed\r\n")

    @d
    async def test_subject_search_over_many_batches(self):
        self.patch(type(self.factory.buildProtocol(None)), "SUMMARY_BATCH", 3)
        for i in range(8):
            data = SIMPLE.replace(b"Lunch on Friday", b"Lunch %d" % i if i % 3 else b"Plan X")
            await self.deliver(data)
        session = await self.selected()
        answer = await session.command(b"a UID SEARCH SUBJECT plan")
        self.assertEqual(answer, b"* SEARCH 1 4 7\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"b SEARCH SUBJECT LUNCH NOT 5")
        self.assertEqual(answer, b"* SEARCH 2 3 6 8\r\nb OK SEARCH completed\r\n")
