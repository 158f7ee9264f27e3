"""Robustness over a real socket: a 50 MiB APPEND streamed to a spool file (the session never
holds more than a small, fixed amount of input) and fetched back byte for byte; a client that
disconnects in the middle of a literal; command lines far over the limit; raw 8-bit headers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time

from twisted.internet import reactor, task, threads

from haitatsu.imap.server import IMAPServer
from tests.imap.helpers import IMAPTestCase, make_config
from tests.imap.sockets import SocketClient
from tests.imap.test_session import d

MiB = 1024 * 1024

HEADER = (
    b"From: Big Sender <big@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: fifty mebibytes\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
)
LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
BLOCK = LINE * 1000


def big_message(total: int):
    """``total`` bytes of a plain text message, as 72 KB blocks (never whole in memory)."""
    yield HEADER
    remaining = total - len(HEADER)
    while remaining >= len(BLOCK):
        yield BLOCK
        remaining -= len(BLOCK)
    tail = BLOCK[: remaining - 2] + b"\r\n" if remaining >= 2 else b"\n" * remaining
    yield tail


class _SocketTests(IMAPTestCase):
    timeout = 180

    def listen(self) -> int:
        self.sessions: list[IMAPServer] = []
        build = self.factory.buildProtocol

        def remember(addr):
            p = build(addr)
            self.sessions.append(p)
            return p

        self.factory.buildProtocol = remember
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client(self, port) -> SocketClient:
        c = SocketClient(port, timeout=120)
        greeting = c.line()
        assert greeting.startswith(b"* OK"), greeting
        [ok] = c.command(b"L", self.login_args())
        assert ok.startswith(b"L OK"), ok
        return c

    async def until(self, predicate, what, seconds=20.0):
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await task.deferLater(reactor, 0.01, lambda: None)

    def spooled(self) -> list[int]:
        """Sizes of the files in the spool directory (one may vanish while we look)."""
        sizes = []
        for name in os.listdir(self.spool_dir):
            with contextlib.suppress(FileNotFoundError):
                sizes.append(os.path.getsize(os.path.join(self.spool_dir, name)))
        return sizes


class LargeAppendTests(_SocketTests):
    SIZE = 50 * MiB

    @d
    async def test_fifty_mebibyte_append_streams_to_a_spool_file_and_back(self):
        self.config = make_config(max_message_size=60 * MiB)
        port = self.listen()

        def run():
            c = self.client(port)
            try:
                c.send(b"A APPEND INBOX (\\Seen) {%d}\r\n" % self.SIZE)
                assert c.line().startswith(b"+ "), "continuation expected"
                digest, sent, spooled_midway = hashlib.sha256(), 0, None
                for chunk in big_message(self.SIZE):
                    c.send(chunk)
                    digest.update(chunk)
                    sent += len(chunk)
                    if spooled_midway is None and sent >= 40 * MiB:
                        spooled_midway = self.spooled()
                c.send(b"\r\n")
                appended = c.tagged(b"A")
                after = self.spooled()
                c.command(b"S", b"SELECT INBOX")
                fetched = c.command(b"F", b"UID FETCH 1 (RFC822.SIZE BODY.PEEK[])")
                c.command(b"Z", b"LOGOUT")
                return sent, digest.hexdigest(), spooled_midway, appended, after, fetched
            finally:
                c.close()

        sent, sha, midway, appended, after, fetched = await threads.deferToThread(run)
        self.assertEqual(sent, self.SIZE)
        self.assertEqual(appended[-1], b"A OK [APPENDUID %d 1] APPEND completed" % self.uidv())
        # While the client was still sending, the literal was on disk: the kernel's socket
        # buffers hold a few MiB at most, the session far less (below), so most of the
        # 40 MiB sent by then had reached the spool file.
        [midway_size] = midway
        self.assertGreater(midway_size, 20 * MiB)
        self.assertEqual(after, [], "the spool file is removed once stored")
        self.assertEqual(
            fetched[0],
            b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d} sha256:%s %d)"
            % (self.SIZE, self.SIZE, sha.encode(), self.SIZE),
        )
        self.assertEqual(fetched[-1], b"F OK FETCH completed")
        [session] = self.sessions
        self.assertLessEqual(session.max_buffered, 2 * 64 * 1024)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        [row] = await self.store.list_folder_messages(inbox.id)
        self.assertEqual((row.size_bytes, row.read), (self.SIZE, True))

    def uidv(self):
        return self._inbox_uidvalidity

    async def _setUp(self):
        await super()._setUp()
        self._inbox_uidvalidity = (
            await self.store.get_folder(self.mailbox.id, "INBOX")
        ).uid_validity


class BrokenClientTests(_SocketTests):
    @d
    async def test_disconnect_mid_literal_stores_nothing_and_removes_the_spool_file(self):
        self.config = make_config(max_message_size=20 * MiB)
        port = self.listen()

        def run():
            c = self.client(port)
            c.send(b"A APPEND INBOX {%d}\r\n" % (10 * MiB))
            assert c.line().startswith(b"+ ")
            for chunk in big_message(3 * MiB):
                c.send(chunk)
            return c

        c = await threads.deferToThread(run)
        await self.until(lambda: self.spooled() and self.spooled()[0] >= MiB, "the spool file")
        c.close()
        [session] = self.sessions
        await self.until(lambda: not session.transport.connected, "the session to end")
        await self.until(lambda: self.spooled() == [], "the spool file to go")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(await self.store.list_folder_messages(inbox.id), [])
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)

    @d
    async def test_overlong_lines_are_bad_and_the_connection_is_kept(self):
        port = self.listen()

        def run():
            c = self.client(port)
            try:
                answers = []
                # Five MiB without a line end, sent in pieces, then the end of the line.
                c.send(b"A NOOP ")
                for _ in range(80):
                    c.send(b"x" * 64 * 1024)
                c.send(b"\r\n")
                answers.append(c.tagged(b"A"))
                answers.append(c.command(b"B", b"NOOP"))
                # Just over the limit, in one piece; and a long line after a literal.
                answers.append(c.command(b"C", b'LIST "" ' + b"y" * (64 * 1024 + 1)))
                c.send(b"D LOGIN {5}\r\n")
                assert c.line().startswith(b"+ ")
                c.send(b"alice " + b"z" * (100 * 1024) + b"\r\n")
                answers.append(c.tagged(b"D"))
                answers.append(c.command(b"E", b"SELECT INBOX"))
                return answers
            finally:
                c.close()

        answers = await threads.deferToThread(run)
        self.assertEqual(answers[0], [b"A BAD Command line too long"])
        self.assertEqual(answers[1], [b"B OK NOOP completed"])
        self.assertEqual(answers[2], [b"C BAD Command line too long"])
        self.assertEqual(answers[3], [b"D BAD Command line too long"])
        self.assertEqual(answers[4][-1], b"E OK [READ-WRITE] SELECT completed")
        [session] = self.sessions
        # The five MiB line was dropped as it came, not gathered.
        self.assertLessEqual(session.max_buffered, IMAPServer.MAX_LINE_LENGTH + 2 * 64 * 1024)


RAW_8BIT = (
    "From: Jürgen Müller <juergen@example.test>\r\n"
    "To: Zoë <zoe@example.test>\r\n"
    "Subject: Grüße aus Köln – 東京\r\n"
).encode() + (
    # Not UTF-8 at all: a Latin-1 header from an old mailer.
    b"X-Old: caf\xe9 cr\xe8me\r\n"
    b"Message-ID: <raw-8bit@example.test>\r\n"
    b"\r\n"
    b"Body with raw bytes: \xff\xfe and \xc3\xa9.\r\n"
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


class EightBitTests(_SocketTests):
    @d
    async def test_raw_8bit_headers_append_fetch_search(self):
        port = self.listen()

        def run():
            c = self.client(port)
            try:
                out = []
                c.send(b"A APPEND INBOX {%d}\r\n" % len(RAW_8BIT))
                assert c.line().startswith(b"+ ")
                c.send(RAW_8BIT + b"\r\n")
                out.append(c.tagged(b"A"))
                out.append(c.command(b"S", b"SELECT INBOX"))
                out.append(
                    c.command(
                        b"F",
                        b"FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT X-OLD)] BODY.PEEK[])",
                    )
                )
                subject = "Köln".encode()
                c.send(b"G SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(subject))
                assert c.line().startswith(b"+ ")
                c.send(subject + b"\r\n")
                out.append(c.tagged(b"G"))
                out.append(c.command(b"H", b"SEARCH HEADER X-Old caf"))
                out.append(c.command(b"N", b"NOOP"))
                return out
            finally:
                c.close()

        appended, _, fetched, search, header_search, noop = await threads.deferToThread(run)
        self.assertTrue(appended[-1].startswith(b"A OK [APPENDUID"), appended)
        fields = "Subject: Grüße aus Köln – 東京\r\n".encode() + b"X-Old: caf\xe9 cr\xe8me\r\n\r\n"
        expected_fields, whole = sha(fields), sha(RAW_8BIT)
        [response, done] = fetched
        self.assertEqual(done, b"F OK FETCH completed")
        # ENVELOPE: the 8-bit strings go as literals, exactly the header's bytes.
        subject = "Grüße aus Köln – 東京".encode()
        self.assertIn(
            b"ENVELOPE (NIL {%d} sha256:%s %d ((" % (len(subject), sha(subject), len(subject)),
            response,
        )
        self.assertIn(b"sha256:%s %d" % (expected_fields, len(fields)), response)
        self.assertIn(b"sha256:%s %d" % (whole, len(RAW_8BIT)), response)
        self.assertEqual(search, [b"* SEARCH 1", b"G OK SEARCH completed"])
        self.assertEqual(header_search, [b"* SEARCH 1", b"H OK SEARCH completed"])
        self.assertEqual(noop, [b"N OK NOOP completed"])
