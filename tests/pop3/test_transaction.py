"""POP3 TRANSACTION and UPDATE: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, QUIT against the store."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from haitatsu.pop3.server import DotStuffer, TopFilter
from tests.pop3.helpers import DOTS, PEER, SIMPLE, POP3TestCase, d, unstuff

LF_ONLY = b"From: x@example.test\nSubject: unix\n\nline one\n.dot line\nline three\n"


class ListingTests(POP3TestCase):
    @d
    async def test_stat_list_uidl(self):
        first = await self.deliver(SIMPLE)
        second = await self.deliver(DOTS)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        v = folder.uid_validity
        session = await self.login()
        total = len(SIMPLE) + len(DOTS)
        self.assertEqual(await session.command(b"STAT"), b"+OK 2 %d\r\n" % total)
        self.assertEqual(
            await session.command(b"LIST", multiline=True),
            b"+OK 2 messages (%d octets)\r\n1 %d\r\n2 %d\r\n.\r\n"
            % (total, len(SIMPLE), len(DOTS)),
        )
        self.assertEqual(await session.command(b"LIST 2"), b"+OK 2 %d\r\n" % len(DOTS))
        self.assertEqual(
            await session.command(b"UIDL", multiline=True),
            b"+OK Unique-ID listing follows\r\n1 %d.%d\r\n2 %d.%d\r\n.\r\n"
            % (v, first.uid, v, second.uid),
        )
        self.assertEqual(await session.command(b"UIDL 1"), b"+OK 1 %d.%d\r\n" % (v, first.uid))
        self.assertEqual(await session.command(b"NOOP"), b"+OK\r\n")

    @d
    async def test_only_inbox_is_the_maildrop(self):
        await self.deliver(SIMPLE, folder="Sent")
        await self.deliver(DOTS, folder="INBOX")
        session = await self.login()
        self.assertEqual(await session.command(b"STAT"), b"+OK 1 %d\r\n" % len(DOTS))

    @d
    async def test_uidl_is_stable_across_sessions(self):
        await self.deliver(SIMPLE)
        await self.deliver(DOTS)
        session = await self.login()
        before = await session.command(b"UIDL", multiline=True)
        await session.command(b"DELE 1")
        await session.command(b"QUIT")
        session.close()
        await self.deliver(SIMPLE)
        later = await self.login()
        after = await later.command(b"UIDL", multiline=True)
        # message 2 of the first session is message 1 now, with the same unique id
        old_id = before.split(b"\r\n")[2].split(b" ")[1]
        lines = after.split(b"\r\n")
        self.assertEqual(lines[1], b"1 " + old_id)
        self.assertEqual(len(lines), 5)  # +OK, two messages, ".", ""
        self.assertNotEqual(lines[2].split(b" ")[1], old_id)


class RetrieveTests(POP3TestCase):
    @d
    async def test_retr_is_byte_exact(self):
        await self.deliver(SIMPLE)
        session = await self.login()
        self.assertEqual(
            await session.command(b"RETR 1", multiline=True),
            b"+OK %d octets\r\n" % len(SIMPLE) + SIMPLE + b".\r\n",
        )

    @d
    async def test_retr_dot_stuffs_and_ends_an_unterminated_last_line(self):
        await self.deliver(DOTS)
        session = await self.login()
        answer = await session.command(b"RETR 1", multiline=True)
        self.assertEqual(
            answer,
            b"+OK %d octets\r\n" % len(DOTS) + b"From: Carol <carol@example.test>\r\n"
            b"Subject: Dots\r\n"
            b"\r\n"
            b"..leading dot\r\n"
            b"...two dots\r\n"
            b"..\r\n"
            b"middle . dot\r\n"
            b"last line without newline\r\n"
            b".\r\n",
        )
        body = answer.split(b"\r\n", 1)[1]
        self.assertEqual(unstuff(body), DOTS + b"\r\n")

    @d
    async def test_bare_lf_lines_go_out_as_crlf(self):
        await self.deliver(LF_ONLY)
        session = await self.login()
        answer = await session.command(b"RETR 1", multiline=True)
        self.assertEqual(
            answer.split(b"\r\n", 1)[1],
            b"From: x@example.test\r\nSubject: unix\r\n\r\nline one\r\n..dot line\r\n"
            b"line three\r\n.\r\n",
        )

    @d
    async def test_top(self):
        await self.deliver(SIMPLE)
        await self.deliver(DOTS)
        session = await self.login()
        self.assertEqual(
            await session.command(b"TOP 1 0", multiline=True),
            b"+OK Top of message follows\r\n" + SIMPLE.split(b"\r\n\r\n")[0] + b"\r\n\r\n.\r\n",
        )
        self.assertEqual(
            await session.command(b"TOP 2 2", multiline=True),
            b"+OK Top of message follows\r\nFrom: Carol <carol@example.test>\r\n"
            b"Subject: Dots\r\n\r\n..leading dot\r\n...two dots\r\n.\r\n",
        )
        # more lines than the body has: the whole message
        self.assertEqual(
            await session.command(b"TOP 1 100", multiline=True),
            b"+OK Top of message follows\r\n" + SIMPLE + b".\r\n",
        )

    @d
    async def test_large_message_streams_in_chunks_and_honours_pauses(self):
        line = b"0123456789" * 7 + b"\r\n"
        message = b"Subject: big\r\n\r\n" + line * 40000  # about 2.9 MB
        await self.deliver(message)
        session = await self.login()
        pausing = _PausingTransport(peerAddress=PEER)
        session.protocol.transport = pausing
        session.protocol.dataReceived(b"RETR 1\r\n")
        for _ in range(500):
            if pausing.producer is not None:
                break
            await _tick()
        self.assertIsNotNone(pausing.producer, "RETR did not start streaming")
        # The sender stopped at the first pause: at most one chunk beyond it is buffered.
        self.assertLess(len(pausing.value()), 200_000)
        while pausing.producer is not None:
            pausing.producer.resumeProducing()
            await _tick()
        data = pausing.value()
        header, body = data.split(b"\r\n", 1)
        self.assertEqual(header, b"+OK %d octets" % len(message))
        self.assertEqual(body, message + b".\r\n")
        self.assertGreater(pausing.pauses, 10)

    @d
    async def test_message_gone_since_login(self):
        mm = await self.deliver(SIMPLE)
        session = await self.login()
        await self.store.delete_messages(mm.folder_id, [mm.uid], to_trash=False)
        self.assertEqual(await session.command(b"RETR 1"), b"-ERR Message 1 no longer exists\r\n")
        await session.command(b"DELE 1")
        self.assertEqual(
            await session.command(b"QUIT"),
            b"+OK haitatsu POP3 server signing off (0 deleted)\r\n",
        )

    @d
    async def test_storage_down_during_retr_is_sys_temp(self):
        await self.deliver(SIMPLE)
        session = await self.login()
        await self.store.close()
        self.assertEqual(await session.command(b"STAT"), b"+OK 1 %d\r\n" % len(SIMPLE))
        self.assertEqual(
            await session.command(b"RETR 1"),
            b"-ERR [SYS/TEMP] Storage is temporarily unavailable, try again\r\n",
        )
        await session.command(b"DELE 1")
        self.assertEqual(
            await session.command(b"QUIT"),
            b"-ERR [SYS/TEMP] Some deleted messages not removed, try again\r\n",
        )
        self.assertTrue(session.transport.disconnecting)


class DeleteTests(POP3TestCase):
    @d
    async def test_dele_marks_rset_unmarks(self):
        await self.deliver(SIMPLE)
        await self.deliver(DOTS)
        session = await self.login()
        self.assertEqual(await session.command(b"DELE 1"), b"+OK Message 1 deleted\r\n")
        self.assertEqual(await session.command(b"DELE 1"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(await session.command(b"STAT"), b"+OK 1 %d\r\n" % len(DOTS))
        self.assertEqual(
            await session.command(b"LIST", multiline=True),
            b"+OK 1 messages (%d octets)\r\n2 %d\r\n.\r\n" % (len(DOTS), len(DOTS)),
        )
        self.assertEqual(await session.command(b"LIST 1"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(await session.command(b"RETR 1"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(await session.command(b"TOP 1 0"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(await session.command(b"UIDL 1"), b"-ERR Message 1 is deleted\r\n")
        uidl = await session.command(b"UIDL", multiline=True)
        self.assertEqual(uidl.count(b"\r\n"), 3)
        total = len(SIMPLE) + len(DOTS)
        self.assertEqual(
            await session.command(b"RSET"), b"+OK Maildrop has 2 messages (%d octets)\r\n" % total
        )
        self.assertEqual(await session.command(b"STAT"), b"+OK 2 %d\r\n" % total)

    @d
    async def test_quit_moves_deleted_messages_to_trash(self):
        first = await self.deliver(SIMPLE)
        await self.deliver(DOTS)
        session = await self.login()
        await session.command(b"DELE 1")
        self.assertEqual(
            await session.command(b"QUIT"),
            b"+OK haitatsu POP3 server signing off (1 deleted)\r\n",
        )
        self.assertTrue(session.transport.disconnecting)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        self.assertEqual([m.uid for m in await self.store.list_folder_messages(inbox.id)], [2])
        [moved] = await self.store.list_folder_messages(trash.id)
        self.assertEqual(moved.id, first.id)
        self.assertFalse(moved.imap_deleted)
        # Trash keeps counting towards the quota until it is emptied
        mailbox = await self.store.get_mailbox(self.mailbox.id)
        self.assertEqual(mailbox.used_bytes, len(SIMPLE) + len(DOTS))
        again = await self.login()
        self.assertEqual(await again.command(b"STAT"), b"+OK 1 %d\r\n" % len(DOTS))

    @d
    async def test_disconnect_without_quit_deletes_nothing(self):
        await self.deliver(SIMPLE)
        session = await self.login()
        await session.command(b"DELE 1")
        session.close()
        again = await self.login()
        self.assertEqual(await again.command(b"STAT"), b"+OK 1 %d\r\n" % len(SIMPLE))

    @d
    async def test_imap_deleted_flag_does_not_widen_dele(self):
        keep = await self.deliver(SIMPLE, flags=["\\Deleted"])
        await self.deliver(DOTS)
        session = await self.login()
        await session.command(b"DELE 2")
        await session.command(b"QUIT")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(
            [m.uid for m in await self.store.list_folder_messages(inbox.id)], [keep.uid]
        )


class StreamingUnitTests(POP3TestCase):
    def test_dot_stuffer_across_chunk_boundaries(self):
        message = b"a\r\n.b\r\n\r\n.\r\nc\n.d\r"
        expected = b"a\r\n..b\r\n\r\n..\r\nc\r\n..d\r\n.\r\n"
        for size in range(1, len(message) + 1):
            stuffer = DotStuffer()
            out = b"".join(
                stuffer.feed(message[i : i + size]) for i in range(0, len(message), size)
            )
            self.assertEqual(out + stuffer.end(), expected, size)

    def test_top_filter_across_chunk_boundaries(self):
        message = b"H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"
        for lines, expected in [
            (0, b"H: 1\r\nH: 2\r\n\r\n"),
            (2, b"H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n"),
            (9, message),
        ]:
            for size in range(1, len(message) + 1):
                top = TopFilter(lines)
                out = b""
                for i in range(0, len(message), size):
                    out += top.feed(message[i : i + size])
                    if top.done:
                        break
                self.assertEqual(out, expected, (lines, size))


class _PausingTransport(StringTransport):
    """Pauses its producer after every 64 KiB written, like a socket with a full buffer."""

    pauses = 0
    _since_pause = 0

    def write(self, data):
        super().write(data)
        self._since_pause += len(data)
        if self.producer is not None and self._since_pause >= 64 * 1024:
            self._since_pause = 0
            self.pauses += 1
            self.producer.pauseProducing()


async def _tick():
    from twisted.internet import reactor, task

    await task.deferLater(reactor, 0.001, lambda: None)
