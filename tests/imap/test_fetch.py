"""FETCH and UID FETCH: every item, byte for byte, from the stored strings and blob ranges."""

from __future__ import annotations

import time

from haitatsu.imap.wire import format_internal_date
from tests.imap.helpers import EIGHT_BIT, MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d

# 1994-02-08 05:52:25 UTC
DATE_NS = 760_686_745 * 1_000_000_000
HEADER_END = SIMPLE.index(b"\r\n\r\n") + 4


def literal(label: bytes, data: bytes) -> bytes:
    return label + b" {%d}\r\n" % len(data) + data


class FetchMetadataTests(IMAPTestCase):
    @d
    async def test_flags_uid_internaldate_size(self):
        await self.deliver(SIMPLE, flags=["\\Flagged", "$Important"], internal_date=DATE_NS)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (FLAGS (\\Flagged $Important) UID 1 "
            b'INTERNALDATE " 8-Feb-1994 05:52:25 +0000" RFC822.SIZE %d)\r\n'
            b"a OK FETCH completed\r\n" % len(SIMPLE),
        )

    @d
    async def test_envelope_bodystructure_body_are_the_stored_strings(self):
        mm = await self.deliver(MULTIPART)
        info = await self.info(mm)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (ENVELOPE "
            + info.envelope.encode()
            + b" BODYSTRUCTURE "
            + info.bodystructure.encode()
            + b" BODY "
            + info.body.encode()
            + b")\r\na OK FETCH completed\r\n",
        )
        self.assertTrue(info.bodystructure.startswith('(("TEXT" "PLAIN"'))

    @d
    async def test_macros(self):
        mm = await self.deliver(SIMPLE, internal_date=DATE_NS)
        info = await self.info(mm)
        session = await self.selected()
        date = b'INTERNALDATE " 8-Feb-1994 05:52:25 +0000"'
        fast = b"FLAGS () " + date + b" RFC822.SIZE %d" % len(SIMPLE)
        self.assertEqual(
            await session.command(b"a FETCH 1 FAST"),
            b"* 1 FETCH (" + fast + b")\r\na OK FETCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"b FETCH 1 ALL"),
            b"* 1 FETCH (" + fast + b" ENVELOPE " + info.envelope.encode() + b")\r\n"
            b"b OK FETCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"c FETCH 1 FULL"),
            b"* 1 FETCH ("
            + fast
            + b" ENVELOPE "
            + info.envelope.encode()
            + b" BODY "
            + info.body.encode()
            + b")\r\nc OK FETCH completed\r\n",
        )

    @d
    async def test_eight_bit_headers_are_sent_raw(self):
        mm = await self.deliver(EIGHT_BIT)
        info = await self.info(mm)
        session = await self.selected()
        answer = await session.command(
            b"a FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"
        )
        fields = "From: Jürgen Müller <juergen@example.test>\r\nSubject: Grüße aus Köln\r\n\r\n"
        self.assertEqual(
            answer,
            b"* 1 FETCH (ENVELOPE "
            + info.envelope.encode()
            + b" "
            + literal(b"BODY[HEADER.FIELDS (SUBJECT FROM)]", fields.encode())
            + b")\r\na OK FETCH completed\r\n",
        )
        self.assertIn("Grüße".encode(), info.envelope.encode())
        # the session is still usable
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")


class FetchBodyTests(IMAPTestCase):
    @d
    async def test_body_peek_is_byte_for_byte_and_leaves_seen(self):
        await self.deliver(MULTIPART)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 BODY.PEEK[]")
        self.assertEqual(
            answer,
            b"* 1 FETCH (" + literal(b"BODY[]", MULTIPART) + b")\r\na OK FETCH completed\r\n",
        )
        answer = await session.command(b"b FETCH 1 FLAGS")
        self.assertEqual(answer, b"* 1 FETCH (FLAGS ())\r\nb OK FETCH completed\r\n")

    @d
    async def test_body_sets_seen_and_reports_flags(self):
        mm = await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 BODY[]")
        self.assertEqual(
            answer,
            b"* 1 FETCH (" + literal(b"BODY[]", SIMPLE) + b" FLAGS (\\Seen))\r\n"
            b"a OK FETCH completed\r\n",
        )
        [row] = await self.store.list_folder_messages(mm.folder_id)
        self.assertTrue(row.read)
        # already seen: no FLAGS added the second time
        answer = await session.command(b"b FETCH 1 BODY[]")
        self.assertEqual(
            answer, b"* 1 FETCH (" + literal(b"BODY[]", SIMPLE) + b")\r\nb OK FETCH completed\r\n"
        )

    @d
    async def test_examine_never_sets_seen(self):
        mm = await self.deliver(SIMPLE)
        session = await self.selected(command=b"EXAMINE")
        answer = await session.command(b"a FETCH 1 RFC822")
        self.assertEqual(
            answer, b"* 1 FETCH (" + literal(b"RFC822", SIMPLE) + b")\r\na OK FETCH completed\r\n"
        )
        [row] = await self.store.list_folder_messages(mm.folder_id)
        self.assertFalse(row.read)

    @d
    async def test_header_text_and_field_sections(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        header, text = SIMPLE[:HEADER_END], SIMPLE[HEADER_END:]
        answer = await session.command(
            b"a FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] "
            b"BODY.PEEK[HEADER.FIELDS (Subject x-custom)] "
            b'BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Date "Message-ID")])'
        )
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BODY[HEADER]", header)
            + b" "
            + literal(b"BODY[TEXT]", text)
            + b" "
            + literal(
                b"BODY[HEADER.FIELDS (SUBJECT X-CUSTOM)]",
                b"Subject: Lunch on Friday\r\nX-Custom: one\r\n\r\n",
            )
            + b" "
            + literal(
                b"BODY[HEADER.FIELDS.NOT (FROM TO CC DATE MESSAGE-ID)]",
                b"Subject: Lunch on Friday\r\nX-Custom: one\r\n\r\n",
            )
            + b")\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_rfc822_header_and_text_and_size(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (RFC822.HEADER RFC822.SIZE)")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"RFC822.HEADER", SIMPLE[:HEADER_END])
            + b" RFC822.SIZE %d)\r\na OK FETCH completed\r\n" % len(SIMPLE),
        )
        answer = await session.command(b"b FETCH 1 RFC822.TEXT")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"RFC822.TEXT", SIMPLE[HEADER_END:])
            + b" FLAGS (\\Seen))\r\nb OK FETCH completed\r\n",
        )

    @d
    async def test_partial_fetches(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(
            b"a FETCH 1 (BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<6.3> BODY.PEEK[]<200.100000> "
            b"BODY.PEEK[HEADER]<0.4> BODY.PEEK[]<100000.5>)"
        )
        text = SIMPLE[HEADER_END:]
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BODY[]<0>", SIMPLE[:10])
            + b" "
            + literal(b"BODY[TEXT]<6>", text[6:9])
            + b" "
            + literal(b"BODY[]<200>", SIMPLE[200:])
            + b" "
            + literal(b"BODY[HEADER]<0>", b"From")
            + b" "
            + literal(b"BODY[]<100000>", b"")
            + b")\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_numbered_parts_and_mime_headers(self):
        mm = await self.deliver(MULTIPART)
        info = await self.info(mm)
        p1, p2 = info.parts["1"], info.parts["2"]
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME])")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BODY[1]", b"See the attached report.")
            + b" "
            + literal(b"BODY[2]", MULTIPART[p2["body_start"] : p2["end"]])
            + b" "
            + literal(
                b"BODY[2.MIME]",
                b"Content-Type: application/octet-stream; name=report.bin\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n",
            )
            + b")\r\na OK FETCH completed\r\n",
        )
        self.assertEqual(MULTIPART[p1["body_start"] : p1["end"]], b"See the attached report.")
        self.assertEqual(MULTIPART[p2["body_start"] : p2["end"]], b"AAECAwQFBgcICQ==")

    @d
    async def test_single_part_message_part_one_is_the_body(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 BODY.PEEK[1]")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BODY[1]", SIMPLE[HEADER_END:])
            + b")\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_large_body_streams_in_chunks(self):
        big = SIMPLE[:HEADER_END] + (b"0123456789abcdef" * 63 + b"\r\n") * 2000  # ~2 MB
        self.config = self.config.__class__(
            imap=self.config.imap, limits=self.config.limits.__class__(max_message_size_bytes=10**7)
        )
        await self.deliver(big)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 BODY.PEEK[]", timeout=20)
        self.assertEqual(
            answer, b"* 1 FETCH (" + literal(b"BODY[]", big) + b")\r\na OK FETCH completed\r\n"
        )
        # nothing registered as a producer once the literal is done
        self.assertIsNone(session.transport.producer)


class MessageSetTests(IMAPTestCase):
    @d
    async def test_uid_fetch_adds_uid_and_sequence_numbers_track(self):
        for _ in range(3):
            await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(b"a UID FETCH 2:* FLAGS")
        self.assertEqual(
            answer,
            b"* 2 FETCH (UID 2 FLAGS ())\r\n* 3 FETCH (UID 3 FLAGS ())\r\na OK FETCH completed\r\n",
        )
        answer = await session.command(b"b FETCH 3,1 (UID)")
        self.assertEqual(
            answer, b"* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\nb OK FETCH completed\r\n"
        )
        answer = await session.command(b"c UID FETCH 7 FLAGS")
        self.assertEqual(answer, b"c OK FETCH completed\r\n")

    @d
    async def test_star_on_huge_uid_gaps_does_not_walk_every_number(self):
        await self.deliver(SIMPLE)
        await self.set_uid_next("INBOX", 4_000_000_000)
        await self.deliver(SIMPLE)
        await self.set_uid_next("INBOX", 4_294_967_290)
        await self.deliver(SIMPLE)
        session = await self.selected()
        started = time.monotonic()
        answer = await session.command(b"a UID FETCH 1:4294967295 (UID)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 4000000000)\r\n* 3 FETCH (UID 4294967290)\r\n"
            b"a OK FETCH completed\r\n",
        )
        answer = await session.command(b"b FETCH 1:* (UID)")
        self.assertIn(b"* 3 FETCH (UID 4294967290)\r\nb OK", answer)
        answer = await session.command(b"c UID FETCH 4000000000:* (UID)")
        self.assertEqual(
            answer,
            b"* 2 FETCH (UID 4000000000)\r\n* 3 FETCH (UID 4294967290)\r\nc OK FETCH completed\r\n",
        )
        answer = await session.command(b"d UID SEARCH UID 2:4294967295")
        self.assertEqual(answer, b"* SEARCH 4000000000 4294967290\r\nd OK SEARCH completed\r\n")
        answer = await session.command(b"e FETCH 1:4294967295 (UID)")
        self.assertIn(b"e OK FETCH completed", answer)
        self.assertLess(time.monotonic() - started, 5)

    @d
    async def test_bad_fetch_syntax(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a FETCH 1 (BOGUS)"), b"a BAD unknown fetch item BOGUS\r\n"
        )
        self.assertEqual(
            await session.command(b"b FETCH 0 FLAGS"), b"b BAD invalid sequence set '0'\r\n"
        )
        self.assertEqual(
            await session.command(b"c FETCH 1 BODY[HEADER.FIELDS]"),
            b"c BAD header list expected\r\n",
        )
        self.assertEqual(
            await session.command(b"d FETCH 1 BODY[]<0.0>"),
            b"d BAD partial length must be positive\r\n",
        )
        self.assertEqual(
            await session.command(b"e FETCH 1"), b"e BAD FETCH needs a sequence set and items\r\n"
        )
        self.assertEqual(await session.command(b"f NOOP"), b"f OK NOOP completed\r\n")

    def test_internal_date_format(self):
        self.assertEqual(format_internal_date(DATE_NS), b'" 8-Feb-1994 05:52:25 +0000"')
