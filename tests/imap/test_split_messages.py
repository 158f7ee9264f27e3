"""Messages stored as a skeleton plus part blobs, read back by the protocols: IMAP BODY[],
BODY[n], BODY[n.MIME], HEADER, TEXT, partials and SEARCH, and REST raw, byte for byte (DESIGN.md
invariant 3) on the dedup corpus delivered with a low threshold."""

from __future__ import annotations

from tests.api.client import APIClient
from tests.imap.helpers import IMAPTestCase
from tests.imap.test_session import d
from tests.storage.corpus import LOW_THRESHOLD, attachment_message, b64, full_corpus, payload


def literal(label: bytes, data: bytes) -> bytes:
    return label + b" {%d}\r\n" % len(data) + data


class SplitMessageReadingTests(IMAPTestCase):
    timeout = 120

    async def _setUp(self):
        await super()._setUp()
        self.store.attachment_dedup_threshold = LOW_THRESHOLD
        self.config = self.config.__class__(
            imap=self.config.imap,
            limits=self.config.limits.__class__(max_message_size_bytes=10**7),
        )
        self.api = APIClient(self.store)

    async def fetch_one(self, session, seq: int, item: bytes, label: bytes) -> bytes:
        answer = await session.command(b"f FETCH %d %s" % (seq, item))
        head = b"* %d FETCH (" % seq + label + b" {"
        self.assertTrue(answer.startswith(head), answer[:200])
        size_end = answer.index(b"}\r\n", len(head))
        size = int(answer[len(head) : size_end])
        body = answer[size_end + 3 : size_end + 3 + size]
        self.assertEqual(answer[size_end + 3 + size :], b")\r\nf OK FETCH completed\r\n")
        return body

    @d
    async def test_corpus_reads_back_exactly_over_imap_and_rest(self):
        corpus = full_corpus()
        placed = []
        for name, raw in corpus:
            placed.append((name, raw, await self.deliver(raw)))
        session = await self.selected()
        split = 0
        for seq, (name, raw, mm) in enumerate(placed, 1):
            info = await self.info(mm)
            split += bool(info.layout)
            got = await self.fetch_one(session, seq, b"BODY.PEEK[]", b"BODY[]")
            self.assertEqual(got, raw, name)
            header = await self.fetch_one(session, seq, b"BODY.PEEK[HEADER]", b"BODY[HEADER]")
            self.assertEqual(header, raw[: info.header_size], name)
            text = await self.fetch_one(session, seq, b"BODY.PEEK[TEXT]", b"BODY[TEXT]")
            self.assertEqual(text, raw[info.header_size :], name)
            middle = len(raw) // 3
            got = await self.fetch_one(
                session, seq, b"BODY.PEEK[]<%d.%d>" % (middle, middle), b"BODY[]<%d>" % middle
            )
            self.assertEqual(got, raw[middle : 2 * middle], name)
            if info.layout:
                for spec, part in info.parts.items():
                    label = b"BODY[%s]" % spec.encode()
                    got = await self.fetch_one(
                        session, seq, b"BODY.PEEK[%s]" % spec.encode(), label
                    )
                    self.assertEqual(got, raw[part["body_start"] : part["end"]], (name, spec))
                    if "." in spec or len(info.parts) > 1:
                        label = b"BODY[%s.MIME]" % spec.encode()
                        got = await self.fetch_one(
                            session, seq, b"BODY.PEEK[%s.MIME]" % spec.encode(), label
                        )
                        expected = raw[part["header_start"] : part["body_start"]]
                        self.assertEqual(got, expected, (name, spec))
            answer = await self.api.get(f"/api/v1/messages/{mm.id}/raw")
            self.assertEqual(answer.status, 200, name)
            self.assertEqual(answer.body, raw, name)
            self.assertEqual(answer.length, len(raw), name)
        self.assertGreater(split, 25)

    @d
    async def test_large_split_message_streams_whole_and_searches_its_text(self):
        self.store.attachment_dedup_threshold = 64 * 1024
        attachment = b64(payload(1_500_000, 21))
        raw = attachment_message(attachment, subject="Quarterly", text="needle in the text")
        mm = await self.deliver(raw)
        info = await self.info(mm)
        self.assertEqual(len(info.layout), 3)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 BODY.PEEK[]", timeout=30)
        self.assertEqual(
            answer, b"* 1 FETCH (" + literal(b"BODY[]", raw) + b")\r\na OK FETCH completed\r\n"
        )
        self.assertIsNone(session.transport.producer)
        answer = await session.command(b"s SEARCH BODY needle")
        self.assertEqual(answer, b"* SEARCH 1\r\ns OK SEARCH completed\r\n")
        answer = await self.api.get(f"/api/v1/messages/{mm.id}/raw")
        self.assertEqual(answer.body, raw)
