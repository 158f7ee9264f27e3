"""FETCH of row items alone (UID, FLAGS, MODSEQ, RFC822.SIZE, INTERNALDATE) written a column at
a time, and SELECT's FLAGS and UNSEEN from the shared read's distinct flags: exact responses,
the session's own changes and another session's once reported, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import socket

from twisted.internet import reactor, threads

from haitatsu.imap.wire import format_internal_date
from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, changes_settled, make_pg_store


def _after_condstore(answer: bytes) -> bytes:
    """The answer without the ``HIGHESTMODSEQ`` a first CONDSTORE enabling command brings."""
    first, rest = answer.split(b"\r\n", 1)
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] Highest", first), answer
    return rest


class RowItemFetchTests(IMAPTestCase):
    async def _mailbox(self):
        placed = [
            await self.deliver(SIMPLE, flags=["\\Seen"]),
            await self.deliver(MULTIPART, flags=["\\Seen", "\\Flagged", "$Work"]),
            await self.deliver(SIMPLE),
            await self.deliver(MULTIPART, flags=["\\Seen"]),
        ]
        return placed, await self.selected()

    @d
    async def test_uid_fetch_flags_of_the_whole_folder(self):
        placed, session = await self._mailbox()
        answer = await session.command(b"a UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged $Work))\r\n"
            b"* 3 FETCH (UID 3 FLAGS ())\r\n"
            b"* 4 FETCH (UID 4 FLAGS (\\Seen))\r\n"
            b"a OK FETCH completed\r\n",
        )
        # Every row item, in the order asked, on a set past the last message.
        answer = await session.command(b"b FETCH 2:9 (RFC822.SIZE INTERNALDATE FLAGS UID MODSEQ)")
        answer = _after_condstore(answer)
        lines = [
            b"* %d FETCH (RFC822.SIZE %d INTERNALDATE %s FLAGS %s UID %d MODSEQ (%d))\r\n"
            % (
                mm.uid,
                mm.size_bytes,
                format_internal_date(mm.internal_date),
                b"(" + " ".join(mm.flags).encode() + b")",
                mm.uid,
                mm.modseq,
            )
            for mm in placed[1:]
        ]
        self.assertEqual(answer, b"".join(lines) + b"b OK FETCH completed\r\n")

    @d
    async def test_flags_as_the_session_knows_them(self):
        _, session = await self._mailbox()
        other = await self.selected()
        answer = await session.command(b"s STORE 3 +FLAGS.SILENT ($Later)")
        self.assertEqual(answer, b"s OK STORE completed\r\n")
        await other.command(b"x STORE 1 -FLAGS (\\Seen)")
        await other.command(b"y STORE 4 +FLAGS (\\Deleted)")
        await other.command(b"z EXPUNGE")
        await changes_settled(self.store)
        # Its own change is there; the other session's are not reported yet.
        answer = await session.command(b"a UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged $Work))\r\n"
            b"* 3 FETCH (UID 3 FLAGS ($Later))\r\n"
            b"* 4 FETCH (UID 4 FLAGS (\\Seen))\r\n"
            b"a OK FETCH completed\r\n",
        )
        answer = await session.command(b"n NOOP")
        self.assertEqual(
            answer, b"* 4 EXPUNGE\r\n* 1 FETCH (FLAGS () UID 1)\r\nn OK NOOP completed\r\n"
        )
        answer = await session.command(b"b UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS ())\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged $Work))\r\n"
            b"* 3 FETCH (UID 3 FLAGS ($Later))\r\n"
            b"b OK FETCH completed\r\n",
        )

    @d
    async def test_sets_with_gaps_and_condstore(self):
        _, session = await self._mailbox()
        await session.command(b"s STORE 2 +FLAGS.SILENT (\\Deleted)")
        await session.command(b"e EXPUNGE")
        # UIDs 1, 3, 4 remain: a UID set with a hole, and UIDs that do not exist.
        answer = await session.command(b"a UID FETCH 2,4,7:9,1 (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
            b"* 3 FETCH (UID 4 FLAGS (\\Seen))\r\n"
            b"a OK FETCH completed\r\n",
        )
        answer = await session.command(b"b UID FETCH 2 (FLAGS)")
        self.assertEqual(answer, b"b OK FETCH completed\r\n")
        # With CONDSTORE on, FLAGS brings MODSEQ along.
        rows = await self.store.list_folder_messages(
            (await self.store.get_folder(self.mailbox.id, "INBOX")).id
        )
        answer = await session.command(b"c FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
        self.assertEqual(
            _after_condstore(answer),
            b"".join(
                b"* %d FETCH (FLAGS (%s) MODSEQ (%d))\r\n"
                % (seq, " ".join(mm.flags).encode(), mm.modseq)
                for seq, mm in enumerate(rows, 1)
            )
            + b"c OK FETCH completed\r\n",
        )

    @d
    async def test_malformed_fetch_items(self):
        _, session = await self._mailbox()
        for line in (
            b"a UID FETCH 1:* (FLAGS",
            b"a UID FETCH 1:* (FLAGS BOGUS)",
            b"a UID FETCH 1:* ()",
            b"a UID FETCH x:* (FLAGS)",
            b"a FETCH 1:*",
        ):
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD "), (line, answer))
        answer = await session.command(b"b UID FETCH 3 (FLAGS)")
        self.assertEqual(answer, b"* 3 FETCH (UID 3 FLAGS ())\r\nb OK FETCH completed\r\n")


class SelectFlagsTests(IMAPTestCase):
    @d
    async def test_keywords_and_first_unseen(self):
        await self.deliver(SIMPLE, flags=["\\Seen", "$Work"])
        await self.deliver(SIMPLE, flags=["\\Seen"])
        await self.deliver(SIMPLE, flags=["Later"])
        session = await self.login()
        answer = await session.command(b"s SELECT INBOX")
        self.assertIn(
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work Later)\r\n", answer
        )
        self.assertIn(b"* OK [UNSEEN 3] First unseen message\r\n", answer)
        # Seen by this session, then the folder re-selected: no UNSEEN any more; the read is
        # new (the folder's state moved) and holds the change.
        await session.command(b"t STORE 3 +FLAGS.SILENT (\\Seen)")
        answer = await session.command(b"u SELECT INBOX")
        self.assertNotIn(b"UNSEEN", answer)
        answer = await session.command(b"f FETCH 3 (FLAGS)")
        self.assertEqual(answer, b"* 3 FETCH (FLAGS (\\Seen Later))\r\nf OK FETCH completed\r\n")

    @d
    async def test_reselect_in_the_same_state_shares_the_read(self):
        await self.deliver(SIMPLE, flags=["\\Seen"])
        await self.deliver(SIMPLE)
        session = await self.selected()
        shared = session.protocol.view.view_rows._shared
        answer = await session.command(b"s SELECT INBOX")
        self.assertIn(b"* OK [UNSEEN 2] First unseen message\r\n", answer)
        self.assertIs(session.protocol.view.view_rows._shared, shared)
        # Another session's change moves the folder's state: the next SELECT reads it.
        other = await self.selected()
        await other.command(b"x STORE 2 +FLAGS (\\Seen $Done)")
        await changes_settled(self.store)
        answer = await session.command(b"t SELECT INBOX")
        self.assertIsNot(session.protocol.view.view_rows._shared, shared)
        self.assertIn(b"$Done)\r\n", answer)
        self.assertNotIn(b"UNSEEN", answer)
        answer = await session.command(b"f UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Seen $Done))\r\n"
            b"f OK FETCH completed\r\n",
        )

    @d
    async def test_select_after_changes_brings_a_held_read_up_to_date(self):
        for flags in (["\\Seen"], [], ["\\Seen"], [], ["\\Seen"]):
            await self.deliver(SIMPLE, flags=flags)
        holder = await self.selected()  # holds the folder's read
        shared = holder.protocol.view.view_rows._shared
        changer = await self.selected()
        await changer.command(b"a STORE 2 +FLAGS ($Read \\Seen)")
        await changer.command(b"b STORE 1,3 +FLAGS (\\Deleted)")
        await changer.command(b"c EXPUNGE")
        await self.deliver(MULTIPART, flags=["$New"])
        await self.deliver(SIMPLE)
        await changes_settled(self.store)
        # A new session's SELECT: the held read plus the delta, not the whole folder again.
        fresh = await self.login()
        answer = await fresh.command(b"s SELECT INBOX")
        view = fresh.protocol.view
        self.assertIsNot(view.view_rows._shared, shared)
        self.assertIn(b"* 5 EXISTS\r\n", answer)
        self.assertIn(b"$New $Read)\r\n", answer)
        self.assertIn(b"* OK [UNSEEN 2] First unseen message\r\n", answer)
        self.assertIn(b"* OK [UIDNEXT 8] Predicted next UID\r\n", answer)
        answer = await fresh.command(b"f UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 2 FLAGS (\\Seen $Read))\r\n"
            b"* 2 FETCH (UID 4 FLAGS ())\r\n"
            b"* 3 FETCH (UID 5 FLAGS (\\Seen))\r\n"
            b"* 4 FETCH (UID 6 FLAGS ($New))\r\n"
            b"* 5 FETCH (UID 7 FLAGS ())\r\n"
            b"f OK FETCH completed\r\n",
        )
        # The same answer as a read of the whole folder.
        rows = await self.store.folder_summaries(view.folder.id)
        self.assertEqual(list(view.rows), rows)
        # Nothing is reported to it on NOOP: its view is the folder as it is.
        self.assertEqual(await fresh.command(b"n NOOP"), b"n OK NOOP completed\r\n")
        answer = await fresh.command(b"h STATUS INBOX (MESSAGES UIDNEXT)")
        self.assertIn(b"(MESSAGES 5 UIDNEXT 8)", answer)


class NoDelayTests(IMAPTestCase):
    @d
    async def test_sessions_on_tcp_send_without_waiting_for_acks(self):
        """SELECT writes its untagged lines, reads the store, then writes the rest: with
        Nagle's algorithm on, the rest waited for the client's delayed ACK (40 ms)."""
        sessions = []
        build = self.factory.buildProtocol

        def keep(addr):
            sessions.append(build(addr))
            return sessions[-1]

        self.factory.buildProtocol = keep
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
        self.addCleanup(client.close)
        greeting = await threads.deferToThread(client.recv, 1024)
        self.assertTrue(greeting.startswith(b"* OK"), greeting)
        handle = sessions[0].transport.getHandle()
        self.assertNotEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)


class PostgresRowItemFetchTests(RowItemFetchTests):
    skip = PG_SKIP
    timeout = 120

    async def open_store(self, root):
        return await make_pg_store(self, root)


class PostgresSelectFlagsTests(SelectFlagsTests):
    skip = PG_SKIP
    timeout = 120

    async def open_store(self, root):
        return await make_pg_store(self, root)
