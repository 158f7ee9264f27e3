"""``BODY.PEEK[HEADER.FIELDS (...)]`` answered from the header lines stored at delivery
(``haitatsu/mime/stored_fields.py``), through a real IMAP client on a listening server, on
SQLite and on PostgreSQL: byte for byte what the blob path answers, over folded, 8-bit, missing,
repeated and malformed header fields, with partial fetches; messages stored without the lines
(before schema 034) fall back to the blob; and the stored path opens no blob."""

from __future__ import annotations

import random

import imapclient
from twisted.internet import reactor, threads
from twisted.trial import unittest

from haitatsu.mime import parse_bytes
from haitatsu.mime.stored_fields import STORED_FIELDS, header_fields, select
from tests.imap.helpers import ADDRESS, MULTIPART, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, make_pg_store

CORPUS = [
    # Folded Subject and References, tab and space continuations.
    b"Received: from a by b; Sun, 22 Nov 2026 07:00:00 +0000\r\n"
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
    b"Subject: a subject that goes on\r\n\tand on\r\n  and on\r\n"
    b"Date: Sun, 22 Nov 2026 07:00:00 +0000\r\nMessage-ID: <folded@example.test>\r\n"
    b"References: <a@example.test>\r\n <b@example.test>\r\n\t<c@example.test>\r\n"
    b"In-Reply-To: <c@example.test>\r\nX-Priority: 1\r\n\r\nbody\r\n",
    # Raw 8-bit header values (UTF-8 and Latin-1), no Date, no Message-ID.
    b"From: J\xc3\xbcrgen <j@example.test>\r\nTo: Ren\xe9e <r@example.test>\r\n"
    b"Subject: Gr\xc3\xbc\xc3\x9fe \xe9t\xe9\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"\r\nGr\xc3\xbc\xc3\x9fe\r\n",
    # Repeated fields, mixed case names, a space before the colon, an empty value.
    b"to: one@example.test\r\nFROM: f@example.test\r\nCc: c1@example.test\r\n"
    b"X-Other: 1\r\nTo: two@example.test\r\nSubject : spaced\r\nCC: c2@example.test\r\n"
    b"Bcc:\r\nsUbJeCt: second subject\r\nX-TUID: abcdefghijkl\r\n\r\nbody\r\n",
    # Malformed: a continuation line first, a line without a colon, a bare CR, LF line ends.
    b" Subject: starts folded\nFrom: lf@example.test\ngarbage line without colon\n"
    b"Subject: after garbage\r\n\tcontinued\nDate: Sun, 22 Nov 2026 07:00:00 +0000\r"
    b"To: cr@example.test\nMessage-ID: <lf@example.test>\n\nbody\n",
    # Only a header, no blank line, no line end at the end.
    b"From: only@example.test\r\nSubject: no body",
    # No header at all.
    b"\r\nonly a body\r\n",
    # Nothing but fields outside the stored set.
    b"Received: from x\r\nX-Spam: yes\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n\r\nb\r\n",
    MULTIPART,
]

THUNDERBIRD = (
    b"BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority "
    b"References Newsgroups In-Reply-To Content-Type Reply-To)]"
)
REQUESTS = [
    THUNDERBIRD,
    # K-9
    b"BODY.PEEK[HEADER.FIELDS (date subject from content-type to cc reply-to message-id "
    b"references in-reply-to X-K9mail-Identity Chat-Version)]",
    # mutt's header cache
    b"BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER SUBJECT TO CC MESSAGE-ID REFERENCES "
    b"CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL)]",
    # mbsync
    b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-TUID)]",
    # Duplicates and quoted names in the request, fields no message has.
    b'BODY.PEEK[HEADER.FIELDS (subject "Subject" SUBJECT Newsgroups)]',
    b"BODY.PEEK[HEADER.FIELDS (Subject From)]<0.20>",
    b"BODY.PEEK[HEADER.FIELDS (Subject From To Cc)]<10.30>",
    b"BODY.PEEK[HEADER.FIELDS (Subject)]<100000.10>",
]
#: Requests the stored lines cannot answer: they go to the blob.
BLOB_REQUESTS = [
    b"BODY.PEEK[HEADER.FIELDS (From Received)]",
    b"BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
    b"BODY.PEEK[1.HEADER.FIELDS (Subject)]",
]
#: Added to a request to send it through the per-message path, which reads the blob.
FORCE_BLOB = b"BODY.PEEK[TEXT]<0.1>"


def _key(request: bytes) -> bytes:
    """The key imapclient gives the item's answer: the label without PEEK and partial
    length, names as sent upper-cased."""
    label = request.replace(b".PEEK", b"")
    if label.endswith(b">"):
        label = label[: label.rindex(b".")] + b">"
    head, sep, rest = label.partition(b"(")
    if sep:
        names, close = rest.split(b")", 1)
        label = head + b"(" + names.replace(b'"', b"").upper() + b")" + close
    return label


class StoredHeaderFieldsTests(IMAPTestCase):
    timeout = 120

    def listen(self) -> int:
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def deliver_corpus(self):
        for data in CORPUS:
            await self.deliver(data)
        return len(CORPUS)

    def fetch(self, requests, extra=(), uids=None, select="SELECT"):
        """Fire with ``{uid: {key: bytes}}`` for each of ``requests`` over imapclient."""
        port, password = self.listen(), self.password

        def client():
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=20) as c:
                c.login(ADDRESS, password)
                c.select_folder("INBOX", readonly=select == "EXAMINE")
                out = {}
                wanted = uids or c.search(["ALL"])
                for request in requests:
                    answer = c.fetch(wanted, [request, *extra])
                    for uid, items in answer.items():
                        out.setdefault(uid, {})[request] = items[_key(request)]
                return out

        return threads.deferToThread(client)

    async def blob_headers(self):
        """Each message's top-level header as stored in the blob, by UID."""
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        pairs = await self.store.get_messages(folder.id, [r.uid for r in rows])
        return {
            mm.uid: await self.store.read_message(info, 0, info.header_size) for mm, info in pairs
        }

    @d
    async def test_stored_lines_are_kept_for_the_corpus(self):
        """Every corpus message gets its lines at delivery, and they are the stored fields'
        lines of the header in the blob, as the blob path cuts them."""
        await self.deliver_corpus()
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.message_summaries(
            folder.id, range(1, len(CORPUS) + 1), ("header_fields",)
        )
        headers = await self.blob_headers()
        self.assertEqual(len(rows), len(CORPUS))
        for row in rows:
            self.assertIsNotNone(row.header_fields, row.uid)
            self.assertEqual(
                row.header_fields + b"\r\n",
                header_fields(headers[row.uid], STORED_FIELDS, False),
                row.uid,
            )

    @d
    async def test_stored_path_matches_the_blob_path_byte_for_byte(self):
        count = await self.deliver_corpus()
        stored = await self.fetch(REQUESTS)
        blob = await self.fetch(REQUESTS, extra=[FORCE_BLOB])
        self.assertEqual(sorted(stored), list(range(1, count + 1)))
        self.assertEqual(stored, blob)
        # EXAMINE (read-only) takes the same path.
        self.assertEqual(await self.fetch(REQUESTS, select="EXAMINE"), stored)

    @d
    async def test_exact_bytes_for_hand_checked_cases(self):
        await self.deliver_corpus()
        got = await self.fetch(
            [
                b"BODY.PEEK[HEADER.FIELDS (Subject To)]",
                b"BODY.PEEK[HEADER.FIELDS (Subject From)]<0.20>",
                b"BODY.PEEK[HEADER.FIELDS (Newsgroups)]",
            ]
        )
        self.assertEqual(
            got[1][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"],
            b"To: bob@example.test\r\n"
            b"Subject: a subject that goes on\r\n\tand on\r\n  and on\r\n\r\n",
        )
        self.assertEqual(
            got[2][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"],
            b"To: Ren\xe9e <r@example.test>\r\nSubject: Gr\xc3\xbc\xc3\x9fe \xe9t\xe9\r\n\r\n",
        )
        self.assertEqual(
            got[3][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"],
            b"to: one@example.test\r\nTo: two@example.test\r\nSubject : spaced\r\n"
            b"sUbJeCt: second subject\r\n\r\n",
        )
        self.assertEqual(
            got[4][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"],
            b" Subject: starts folded\n"
            b"Subject: after garbage\r\n\tcontinued\nTo: cr@example.test\n\r\n",
        )
        self.assertEqual(
            got[5][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"], b"Subject: no body\r\n\r\n"
        )
        self.assertEqual(got[6][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"], b"\r\n")
        self.assertEqual(got[7][b"BODY.PEEK[HEADER.FIELDS (Subject To)]"], b"\r\n")
        self.assertEqual(
            got[1][b"BODY.PEEK[HEADER.FIELDS (Subject From)]<0.20>"], b"From: Alice <alice@e"
        )
        self.assertEqual(got[1][b"BODY.PEEK[HEADER.FIELDS (Newsgroups)]"], b"\r\n")

    @d
    async def test_messages_without_stored_lines_fall_back_to_the_blob(self):
        """Messages stored before schema 034 (the column NULL) are answered from their blobs,
        read for the batch, with the same bytes; a mix of both kinds in one FETCH too."""
        await self.deliver_corpus()
        before = await self.fetch(REQUESTS)

        async def txn_fn(txn):
            await txn.execute(
                "UPDATE messages SET header_fields = NULL WHERE id IN (SELECT message_id "
                "FROM mailbox_messages WHERE uid - (uid / 2) * 2 = 1)"
            )

        await self.store.db.run("test_forget_header_fields", txn_fn)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.message_summaries(
            folder.id, range(1, len(CORPUS) + 1), ("header_fields",)
        )
        self.assertEqual([r.header_fields is None for r in rows], [True, False] * 4)
        self.assertEqual(await self.fetch(REQUESTS), before)

    @d
    async def test_requests_outside_the_stored_fields_read_the_blob(self):
        await self.deliver_corpus()
        headers = await self.blob_headers()
        got = await self.fetch(BLOB_REQUESTS[:2])
        for uid, header in headers.items():
            self.assertEqual(
                got[uid][BLOB_REQUESTS[0]],
                header_fields(header, (b"FROM", b"RECEIVED"), False),
            )
            self.assertEqual(got[uid][BLOB_REQUESTS[1]], header_fields(header, (b"SUBJECT",), True))
        self.assertIn(b"Received: from a by b", got[1][BLOB_REQUESTS[0]])
        # The part's header of the forwarded message in MULTIPART is not the message's.
        nested = await self.fetch([BLOB_REQUESTS[2]], uids=[len(CORPUS)])
        self.assertIn(len(CORPUS), nested)

    @d
    async def test_the_stored_path_opens_no_blob(self):
        """With every blob of the folder deleted, the stored fields are still served, and a
        section that needs the blob is not."""
        await self.deliver_corpus()
        before = await self.fetch(REQUESTS)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        pairs = await self.store.get_messages(folder.id, [r.uid for r in rows])
        for _, info in pairs:
            for key in {key for key, _, _ in info.segments}:
                await self.store.blobs.delete(key)
        self.assertEqual(await self.fetch(REQUESTS), before)
        with self.assertRaises(imapclient.exceptions.IMAPClientError):
            await self.fetch([b"BODY.PEEK[HEADER.FIELDS (From Received)]"], uids=[1])
        self.assertTrue(self.flushLoggedErrors(KeyError))

    @d
    async def test_a_label_view_serves_the_stored_lines_by_link_uid(self):
        """In ``Labels/<name>`` (UIDs are the label's), stored and fallen-back lines alike."""
        placed = [await self.deliver(data) for data in CORPUS[:3]]
        label = await self.store.create_label(self.mailbox.id, "Work")
        for mm in (placed[2], placed[0]):
            await self.store.add_message_label(mm.id, label.id)
        session = await self.selected(b"Labels/Work")
        request = b"BODY.PEEK[HEADER.FIELDS (Subject)]"
        expected = (
            b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {45}\r\n"
            b"Subject : spaced\r\nsUbJeCt: second subject\r\n\r\n)\r\n"
            b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {54}\r\n"
            b"Subject: a subject that goes on\r\n\tand on\r\n  and on\r\n\r\n)\r\n"
            b"a OK FETCH completed\r\n"
        )
        self.assertEqual(await session.command(b"a UID FETCH 1:* (" + request + b")"), expected)

        async def txn_fn(txn):
            await txn.execute("UPDATE messages SET header_fields = NULL")

        await self.store.db.run("test_forget_header_fields", txn_fn)
        answer = await session.command(b"a UID FETCH 1:* (" + request + b")")
        self.assertEqual(answer, expected)

    @d
    async def test_non_peek_fetch_sets_seen_from_the_blob_path(self):
        """``BODY[HEADER.FIELDS ...]`` without PEEK on a read-write folder sets \\Seen (and
        reports FLAGS): the per-message path, with the same bytes."""
        await self.deliver_corpus()
        stored = await self.fetch([THUNDERBIRD])
        request = THUNDERBIRD.replace(b".PEEK", b"")
        port, password = self.listen(), self.password

        def client():
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=20) as c:
                c.login(ADDRESS, password)
                c.select_folder("INBOX")
                return c.fetch(c.search(["ALL"]), [request])

        answer = await threads.deferToThread(client)
        for uid, items in answer.items():
            self.assertEqual(items[_key(request)], stored[uid][THUNDERBIRD])
            self.assertIn(b"\\Seen", items[b"FLAGS"])


class StoredHeaderFieldsPostgresTests(StoredHeaderFieldsTests):
    skip = PG_SKIP

    async def open_store(self, root):
        return await make_pg_store(self, root)


class SelectTests(unittest.TestCase):
    """``stored_fields.select`` on its own: what a parse at delivery keeps."""

    def test_parse_keeps_the_lines_of_the_stored_fields(self):
        parsed = parse_bytes(CORPUS[0])
        self.assertEqual(
            parsed.header_fields,
            b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
            b"Subject: a subject that goes on\r\n\tand on\r\n  and on\r\n"
            b"Date: Sun, 22 Nov 2026 07:00:00 +0000\r\nMessage-ID: <folded@example.test>\r\n"
            b"References: <a@example.test>\r\n <b@example.test>\r\n\t<c@example.test>\r\n"
            b"In-Reply-To: <c@example.test>\r\nX-Priority: 1\r\n",
        )

    def test_too_long_lines_are_not_kept(self):
        header = b"Subject: " + b"x" * (70 * 1024) + b"\r\n\r\n"
        self.assertIsNone(select(header))
        self.assertIsNone(parse_bytes(header + b"body\r\n").header_fields)


def _reference_header_fields(header: bytes, names, negate: bool) -> bytes:
    """The blob path's cutter as it was before the stored lines (haitatsu/imap/fetch.py),
    kept here to hold the faster one to the same bytes."""
    wanted = {n.lower() for n in names}
    if header.endswith(b"\r\n\r\n"):
        header = header[:-2]
    elif header.endswith(b"\n\n"):
        header = header[:-1]
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    out = []
    for field in fields:
        name = field.split(b":", 1)[0].strip().lower()
        if (name in wanted) != negate:
            out.append(field if field.endswith(b"\n") else field + b"\r\n")
    return b"".join(out) + b"\r\n"


class CutterTests(unittest.TestCase):
    def test_random_headers_cut_as_the_reference_does(self):
        """Random header blocks from pieces that stress splitting (CR, LF, CRLF, folds,
        blank and whitespace lines, no colon, 8-bit): the cutter over the whole block equals
        the reference, and over the stored lines it equals the cutter over the whole block
        for every request inside the stored set."""
        rng = random.Random(34)
        pieces = [
            b"Subject: s",
            b"subject : t",
            b"From: f",
            b"To: a",
            b"Received: r",
            b"X-Other: o",
            b"References: <a>",
            b"garbage",
            b" folded",
            b"\tfolded",
            b"",
            b" ",
            b"\xc3\xa4: x",
            b"Message-ID:",
        ]
        ends = [b"\r\n", b"\n", b"\r", b"\r\r\n"]
        requests = [
            (b"SUBJECT",),
            (b"FROM", b"TO", b"REFERENCES"),
            (b"MESSAGE-ID", b"SUBJECT", b"X-TUID"),
            (b"RECEIVED",),
            (b"GARBAGE", b"SUBJECT"),
        ]
        for _ in range(3000):
            lines = [rng.choice(pieces) + rng.choice(ends) for _ in range(rng.randrange(8))]
            header = b"".join(lines) + rng.choice([b"", b"\r\n", b"\n", b"end"])
            for names in requests:
                for negate in (False, True):
                    self.assertEqual(
                        header_fields(header, names, negate),
                        _reference_header_fields(header, names, negate),
                        (header, names, negate),
                    )
            stored = select(header)
            if stored is None:
                continue
            for names in requests:
                if all(n.lower() in STORED_FIELDS for n in names):
                    self.assertEqual(
                        header_fields(stored, names, False),
                        header_fields(header, names, False),
                        (header, names),
                    )
