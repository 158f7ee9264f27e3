"""RFC 3501 completeness: the RFC's own examples, edge cases of SEARCH keys, sequence sets and
FETCH sections, and the robustness the issue asks for (8-bit headers, over-long lines, a client
that goes away in the middle of a literal), as exact responses."""

from __future__ import annotations

import os

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import CAPS_AUTH, d

# 1994-02-08 05:52:25 UTC
DATE_NS = 760_686_745 * 1_000_000_000


def message(subject: bytes, sender: bytes = b"someone@example.test", date: bytes = b"") -> bytes:
    head = b"From: " + sender + b"\r\nSubject: " + subject + b"\r\n"
    if date:
        head += b"Date: " + date + b"\r\n"
    return head + b"\r\nbody of " + subject + b"\r\n"


NESTED = (
    b"From: a@example.test\r\n"
    b"Subject: forwarded\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B1"\r\n'
    b"\r\n"
    b"--B1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"outer text\r\n"
    b"--B1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.test\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--B1--\r\n"
)


class SearchKeyTests(IMAPTestCase):
    @d
    async def test_rfc3501_search_examples(self):
        # 6.4.4: SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        await self.deliver(message(b"one", b"Smith <smith@example.test>"), flags=["\\Flagged"])
        await self.deliver(message(b"two"), flags=["\\Flagged"], internal_date=DATE_NS)
        await self.deliver(message(b"three"), flags=["\\Flagged"])
        await self.deliver(message(b"four"))
        session = await self.selected()
        self.assertEqual(
            await session.command(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'),
            b"* SEARCH 2 3\r\nA282 OK SEARCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b'A283 SEARCH TEXT "string not in mailbox"'),
            b"* SEARCH\r\nA283 OK SEARCH completed\r\n",
        )
        session.send(b"A284 SEARCH CHARSET UTF-8 TEXT {5}\r\n")
        self.assertEqual(await session.wait_for(rb"^\+ "), b"+ Ready for literal data\r\n")
        session.send(b"three\r\n")
        self.assertEqual(
            await session.wait_for(rb"^A284 "), b"* SEARCH 3\r\nA284 OK SEARCH completed\r\n"
        )

    @d
    async def test_sent_dates_disregard_time_and_timezone(self):
        # SIMPLE's Date is Mon, 7 Feb 1994 21:52:25 -0800: 8 Feb in UTC, 7 Feb as written.
        await self.deliver(SIMPLE, internal_date=DATE_NS)
        await self.deliver(message(b"no date"), internal_date=DATE_NS)
        await self.deliver(message(b"bad date", date=b"sometime soon"), internal_date=DATE_NS)
        await self.deliver(message(b"late", date=b"Tue, 8 Feb 1994 23:59:59 +1400"))
        session = await self.selected()
        for keys, found in (
            (b"SENTON 7-Feb-1994", b" 1"),
            (b"SENTON 8-Feb-1994", b" 2 3 4"),
            (b"SENTBEFORE 8-Feb-1994", b" 1"),
            (b"SENTSINCE 8-Feb-1994", b" 2 3 4"),
            (b"SENTSINCE 9-Feb-1994", b""),
            (b"ON 8-Feb-1994", b" 1 2 3"),
        ):
            self.assertEqual(
                await session.command(b"a SEARCH " + keys),
                b"* SEARCH" + found + b"\r\na OK SEARCH completed\r\n",
                keys,
            )

    @d
    async def test_size_keyword_header_and_nesting(self):
        small = message(b"a")
        await self.deliver(small, flags=["$Label1"])
        await self.deliver(message(b"bb" * 50), flags=["\\Seen", "\\Answered"])
        await self.deliver(message(b"c"), flags=["\\Draft"])
        session = await self.selected()
        n = len(small)
        for keys, found in (
            (b"LARGER %d" % n, b" 2"),
            (b"LARGER %d" % (n - 1), b" 1 2 3"),
            (b"SMALLER %d" % n, b""),
            (b"SMALLER %d" % (n + 1), b" 1 3"),
            (b"KEYWORD $label1", b" 1"),
            (b"UNKEYWORD $LABEL1", b" 2 3"),
            (b'HEADER Subject ""', b" 1 2 3"),
            (b'HEADER X-Missing ""', b""),
            (b"HEADER subject BBBB", b" 2"),
            (b"OR (OR SEEN DRAFT) KEYWORD $Label1", b" 1 2 3"),
            (b"NOT (OR ANSWERED DRAFT)", b" 1"),
            (b"OR NOT SEEN NOT (UNANSWERED)", b" 1 2 3"),
            (b"NOT OR ANSWERED OR DRAFT KEYWORD $Label1", b""),
            (b"(UNSEEN (UNDRAFT))", b" 1"),
        ):
            self.assertEqual(
                await session.command(b"a SEARCH " + keys),
                b"* SEARCH" + found + b"\r\na OK SEARCH completed\r\n",
                keys,
            )

    @d
    async def test_sequence_sets_with_star_and_dollar(self):
        for i in range(4):
            await self.deliver(message(b"m%d" % i))
        session = await self.selected()
        for command, answer in (
            (b"a SEARCH 5:*", b"* SEARCH 4"),
            (b"a SEARCH *:3", b"* SEARCH 3 4"),
            (b"a SEARCH 2,*,1", b"* SEARCH 1 2 4"),
            (b"a UID SEARCH UID 3:*", b"* SEARCH 3 4"),
            (b"a UID SEARCH UID 9:*", b"* SEARCH 4"),
            (b"a SEARCH NOT 2:3", b"* SEARCH 1 4"),
        ):
            self.assertEqual(
                await session.command(command), answer + b"\r\na OK SEARCH completed\r\n"
            )
        self.assertEqual(
            await session.command(b"b SEARCH RETURN (SAVE) 2:3"),
            b"b OK SEARCH completed, result saved\r\n",
        )
        self.assertEqual(
            await session.command(b"c FETCH $ (UID)"),
            b"* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nc OK FETCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"d FETCH *:3 (UID)"),
            b"* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)\r\nd OK FETCH completed\r\n",
        )
        for bad in (b"0", b"1:0", b"*:", b"1,,2", b"4294967296", b"$:2", b"-1"):
            answer = await session.command(b"e FETCH " + bad + b" (UID)")
            self.assertTrue(answer.startswith(b"e BAD "), (bad, answer))


class StoreAndFetchExampleTests(IMAPTestCase):
    @d
    async def test_rfc3501_store_example(self):
        # 6.4.6: A003 STORE 2:4 +FLAGS (\Deleted)
        await self.deliver(message(b"1"))
        await self.deliver(message(b"2"), flags=["\\Seen"])
        await self.deliver(message(b"3"))
        await self.deliver(message(b"4"), flags=["\\Flagged", "\\Seen"])
        session = await self.selected()
        self.assertEqual(
            await session.command(b"A003 STORE 2:4 +FLAGS (\\Deleted)"),
            b"* 2 FETCH (FLAGS (\\Seen \\Deleted))\r\n"
            b"* 3 FETCH (FLAGS (\\Deleted))\r\n"
            b"* 4 FETCH (FLAGS (\\Seen \\Flagged \\Deleted))\r\n"
            b"A003 OK STORE completed\r\n",
        )

    @d
    async def test_rfc3501_fetch_example(self):
        # 6.4.5: A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
        await self.deliver(message(b"1"))
        for i in (2, 3, 4):
            await self.deliver(
                message(b"%d" % i, date=b"Wed, 17 Jul 1996 02:23:25 -0700"), flags=["\\Seen"]
            )
        session = await self.selected()
        fields = b"From: someone@example.test\r\nDate: Wed, 17 Jul 1996 02:23:25 -0700\r\n\r\n"
        item = b"BODY[HEADER.FIELDS (DATE FROM)] {%d}\r\n" % len(fields) + fields
        self.assertEqual(
            await session.command(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])"),
            b"".join(b"* %d FETCH (FLAGS (\\Seen) " % i + item + b")\r\n" for i in (2, 3, 4))
            + b"A654 OK FETCH completed\r\n",
        )

    @d
    async def test_rfc3501_uid_fetch_example(self):
        # 6.4.8: A999 UID FETCH 4827313:4828442 FLAGS
        await self.set_uid_next("INBOX", 4827313)
        await self.deliver(message(b"a"), flags=["\\Seen"])
        await self.deliver(message(b"b"), flags=["\\Seen"])
        await self.set_uid_next("INBOX", 4828442)
        await self.deliver(message(b"c"), flags=["\\Deleted"])
        session = await self.selected()
        self.assertEqual(
            await session.command(b"A999 UID FETCH 4827313:4828442 FLAGS"),
            b"* 1 FETCH (UID 4827313 FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (UID 4827314 FLAGS (\\Seen))\r\n"
            b"* 3 FETCH (UID 4828442 FLAGS (\\Deleted))\r\n"
            b"A999 OK FETCH completed\r\n",
        )


class SectionTests(IMAPTestCase):
    @d
    async def test_nested_part_mime_header_and_partial(self):
        alternative = (
            b"Subject: nested\r\n"
            b'Content-Type: multipart/mixed; boundary="out"\r\n'
            b"\r\n"
            b"--out\r\n"
            b'Content-Type: multipart/alternative; boundary="in"\r\n'
            b"\r\n"
            b"--in\r\n"
            b"Content-Type: text/plain\r\n"
            b"\r\n"
            b"plain\r\n"
            b"--in\r\n"
            b"Content-Type: text/html\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n"
            b"\r\n"
            b"<p>html</p>\r\n"
            b"--in--\r\n"
            b"--out--\r\n"
        )
        await self.deliver(alternative)
        session = await self.selected(command=b"EXAMINE")
        mime = b"Content-Type: text/html\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        self.assertEqual(
            await session.command(
                b"a FETCH 1 (BODY[1.2.MIME] BODY[1.2]<3.4> BODY[1.1] BODY[1.2.MIME]<14.4>)"
            ),
            b"* 1 FETCH (BODY[1.2.MIME] {%d}\r\n" % len(mime)
            + mime
            + b" BODY[1.2]<3> {4}\r\nhtml BODY[1.1] {5}\r\nplain"
            + b" BODY[1.2.MIME]<14> {4}\r\ntext)\r\n"
            + b"a OK FETCH completed\r\n",
        )

    @d
    async def test_header_and_text_of_a_message_part_and_of_other_parts(self):
        await self.deliver(NESTED)
        session = await self.selected(command=b"EXAMINE")
        inner_header = b"From: inner@example.test\r\nSubject: inner\r\n\r\n"
        self.assertEqual(
            await session.command(
                b"a FETCH 1 (BODY[2.HEADER] BODY[2.TEXT] BODY[2.HEADER.FIELDS.NOT (FROM)] "
                b"BODY[2.MIME] BODY[2.1]<0.5>)"
            ),
            b"* 1 FETCH (BODY[2.HEADER] {%d}\r\n" % len(inner_header)
            + inner_header
            + b" BODY[2.TEXT] {10}\r\ninner body"
            + b" BODY[2.HEADER.FIELDS.NOT (FROM)] {18}\r\nSubject: inner\r\n\r\n"
            + b" BODY[2.MIME] {32}\r\nContent-Type: message/rfc822\r\n\r\n"
            + b" BODY[2.1]<0> {5}\r\ninner)\r\n"
            + b"a OK FETCH completed\r\n",
        )
        # HEADER and TEXT after the number of a part that is not a message: nothing.
        self.assertEqual(
            await session.command(
                b"b FETCH 1 (BODY[1.HEADER] BODY[1.TEXT] BODY[1.HEADER.FIELDS (SUBJECT)])"
            ),
            b"* 1 FETCH (BODY[1.HEADER] {0}\r\n BODY[1.TEXT] {0}\r\n"
            b" BODY[1.HEADER.FIELDS (SUBJECT)] {0}\r\n)\r\n"
            b"b OK FETCH completed\r\n",
        )

    @d
    async def test_malformed_message_structure(self):
        # No final boundary, a last part whose header never ends, 8-bit bytes that are not
        # UTF-8: sections are still byte ranges of what was stored.
        broken = (
            b"Subject: broken \xe9t\xe9\r\n"
            b'Content-Type: multipart/mixed; boundary="zz"\r\n'
            b"\r\n"
            b"--zz\r\n"
            b"Content-Type: text/plain; charset=latin-1\r\n"
            b"\r\n"
            b"caf\xe9\r\n"
            b"--zz\r\n"
            b"Content-Type: text/plain\r\n"
            b"no blank line, so this is still the header\r\n"
        )
        await self.deliver(broken)
        session = await self.selected(command=b"EXAMINE")
        answer = await session.command(b"a FETCH 1 (BODY[1] BODY[] BODYSTRUCTURE)")
        self.assertTrue(
            answer.startswith(
                b"* 1 FETCH (BODY[1] {4}\r\ncaf\xe9 BODY[] {%d}\r\n" % len(broken)
                + broken
                + b" BODYSTRUCTURE (("
            ),
            answer,
        )
        self.assertTrue(
            answer.endswith(b'"MIXED" ("BOUNDARY" "zz") NIL NIL NIL))\r\na OK FETCH completed\r\n'),
            answer,
        )
        # Latin-1 header bytes: the header comes back byte for byte, ENVELOPE stays readable.
        header = broken[: broken.index(b"\r\n\r\n") + 4]
        self.assertEqual(
            await session.command(b"b FETCH 1 BODY[HEADER]"),
            b"* 1 FETCH (BODY[HEADER] {%d}\r\n" % len(header)
            + header
            + b")\r\nb OK FETCH completed\r\n",
        )
        answer = await session.command(b"c FETCH 1 ENVELOPE")
        self.assertIn("(NIL {14}\r\nbroken \ufffdt\ufffd NIL".encode(), answer)
        self.assertEqual(
            await session.command(b"d SEARCH SUBJECT broken"),
            b"* SEARCH 1\r\nd OK SEARCH completed\r\n",
        )


class RobustnessTests(IMAPTestCase):
    @d
    async def test_capabilities_offer_literal_plus_not_literal_minus(self):
        session = await self.login()
        answer = await session.command(b"a CAPABILITY")
        self.assertEqual(
            answer, b"* CAPABILITY " + CAPS_AUTH + b"\r\na OK CAPABILITY completed\r\n"
        )
        self.assertNotIn(b"LITERAL-", answer)
        # LITERAL+ holds for every command, not only APPEND.
        session.send(b"b LIST {0+}\r\n {5+}\r\nINBOX\r\n")
        self.assertEqual(
            await session.wait_for(rb"^b "),
            b'* LIST (\\HasNoChildren) "/" "INBOX"\r\nb OK LIST completed\r\n',
        )

    @d
    async def test_overlong_line_after_a_literal_is_bad_with_the_tag(self):
        session = await self.login()
        session.send(b"a SELECT {5}\r\n")
        await session.wait_for(rb"^\+ ")
        session.send(b"INBOX" + b" x" * 40000 + b"\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a BAD Command line too long\r\n")
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")

    @d
    async def test_overlong_line_drops_the_nonsync_literal_it_announced(self):
        session = await self.login()
        session.send(b"a SEARCH " + b"ALL " * 20000 + b"SUBJECT {8+}\r\nb LOGOUT\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a BAD Command line too long\r\n")
        # "b LOGOUT" was the literal's data, not a command: the session goes on.
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")
        self.assertFalse(session.transport.disconnecting)

    @d
    async def test_eight_bit_bytes_in_a_command_line(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a SELECT \xff\xfe"),
            b"a NO [NONEXISTENT] No such mailbox\r\n",
        )
        answer = await session.command(b"b LIST \x00 *")
        self.assertTrue(answer.startswith(b"b BAD "), answer)
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")

    async def inbox(self):
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        return await self.store.list_folder_messages(folder.id)

    @d
    async def test_disconnect_in_the_second_literal_of_a_multiappend(self):
        session = await self.login()
        session.send(
            b"a APPEND INBOX {%d+}\r\n" % len(SIMPLE)
            + SIMPLE
            + b" (\\Seen) ~{%d+}\r\n" % len(MULTIPART)
            + MULTIPART[:40]
        )
        self.assertEqual(len(os.listdir(self.spool_dir)), 2)
        session.close()
        self.assertEqual(os.listdir(self.spool_dir), [])
        self.assertEqual(await self.inbox(), [])

    @d
    async def test_disconnect_in_a_literal_of_another_command(self):
        session = await self.login()
        session.send(b"a LOGIN {100+}\r\nalice")
        session.close()
        self.assertEqual(os.listdir(self.spool_dir), [])
        session = await self.login()
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")
