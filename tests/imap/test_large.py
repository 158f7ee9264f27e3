"""A selected folder of 20,000 messages: a session catches up with a change by reading that
change (``store.folder_delta`` since the MODSEQ it reported), never the folder again, and
still tells its client exactly the right EXPUNGE / FETCH FLAGS / EXISTS, in the right order.
Sessions waiting on the same folder share one read per change."""

from __future__ import annotations

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d

SIZE = 20_000


class LargeFolderTests(IMAPTestCase):
    timeout = 120

    async def fill_inbox(self, count=SIZE):
        """``count`` messages in INBOX: one delivery, then COPYs of everything into INBOX
        itself (each copy shares the stored message; one transaction per doubling)."""
        await self.deliver(SIMPLE)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        have = 1
        while have < count:
            take = min(have, count - have)
            await self.store.copy_messages(inbox.id, list(range(1, take + 1)), inbox.id)
            have += take
        return inbox

    async def big_session(self):
        inbox = await self.fill_inbox()
        session = await self.selected()
        self.assertEqual(session.protocol.view.exists, SIZE)
        return inbox, session

    @d
    async def test_noop_after_one_flag_change_reads_one_row(self):
        inbox, session = await self.big_session()
        reads = session.protocol.fanout.reads_started
        await self.store.store_flags(inbox.id, [12_345], ["\\Flagged"], "+")
        self.assertEqual(
            await session.command(b"a NOOP"),
            b"* 12345 FETCH (FLAGS (\\Flagged) UID 12345)\r\na OK NOOP completed\r\n",
        )
        self.assertEqual(session.protocol.last_update.read, 1)
        self.assertEqual(session.protocol.fanout.reads_started, reads + 1)
        # Nothing more happened: the next NOOP reads nothing at all.
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")
        self.assertEqual(session.protocol.fanout.reads_started, reads + 1)

    @d
    async def test_expunges_flags_and_a_delivery_reported_exactly(self):
        inbox, session = await self.big_session()
        # Another client: three expunged (one of them the last), one flag changed, one new.
        await self.store.store_flags(inbox.id, [2, 10_000, SIZE], ["\\Deleted"], "+")
        self.assertEqual(await self.store.expunge(inbox.id), [2, 10_000, SIZE])
        await self.store.store_flags(inbox.id, [15_000], ["\\Seen"], "+")
        await self.deliver(MULTIPART)
        answer = await session.command(b"a NOOP")
        # Highest sequence number first, so each is valid when the client applies it; the
        # FETCH uses the numbers after the expunges; EXISTS counts the new message.
        self.assertEqual(
            answer,
            b"* 20000 EXPUNGE\r\n* 10000 EXPUNGE\r\n* 2 EXPUNGE\r\n"
            b"* 14998 FETCH (FLAGS (\\Seen) UID 15000)\r\n"
            b"* 19998 EXISTS\r\na OK NOOP completed\r\n",
        )
        # Read: the flag row, the new row, and the three vanished UIDs (the \Deleted flags
        # set before the expunge are no longer rows of the folder).
        self.assertEqual(session.protocol.last_update.read, 5)
        view = session.protocol.view
        self.assertEqual((view.exists, view.uids[-1], view.uids[1]), (19_998, SIZE + 1, 3))
        answer = await session.command(b"b FETCH 19998 (UID)")
        self.assertEqual(answer, b"* 19998 FETCH (UID %d)\r\nb OK FETCH completed\r\n" % (SIZE + 1))

    @d
    async def test_idle_sessions_share_one_read_per_change(self):
        await self.fill_inbox()
        sessions = [await self.selected() for _ in range(3)]
        fanout = sessions[0].protocol.fanout
        self.assertTrue(all(s.protocol.fanout is fanout for s in sessions))
        self.assertEqual(fanout.subscribers(self.mailbox.id), 3)
        for i, session in enumerate(sessions):
            session.send(b"i%d IDLE\r\n" % i)
            await session.wait_for(rb"^\+ idling\r\n")
        reads = fanout.reads_started
        await self.deliver(MULTIPART)
        for session in sessions:
            answer = await session.wait_for(rb"EXISTS\r\n")
            self.assertEqual(answer, b"* %d EXISTS\r\n" % (SIZE + 1))
            self.assertEqual(session.protocol.last_update.read, 1)
        self.assertEqual(fanout.reads_started, reads + 1)
        for i, session in enumerate(sessions):
            session.send(b"DONE\r\n")
            await session.wait_for(rb"^i%d OK" % i)

    @d
    async def test_no_expunge_during_fetch_store_or_search(self):
        """RFC 3501 7.4.1: an EXPUNGE must not be sent while FETCH, STORE or SEARCH runs;
        sequence numbers stay as the client knows them until NOOP reports the change."""
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART)
        await self.deliver(SIMPLE)
        session = await self.selected()
        other = await self.selected()
        await other.command(b"x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await other.command(b"y EXPUNGE")
        answer = await session.command(b"a FETCH 1:* (UID)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n"
            b"a OK FETCH completed\r\n",
        )
        answer = await session.command(b"b STORE 3 +FLAGS (\\Seen)")
        self.assertNotIn(b"EXPUNGE", answer)
        self.assertIn(b"* 3 FETCH (FLAGS (\\Seen))", answer)
        answer = await session.command(b"c SEARCH ALL")
        self.assertEqual(answer, b"* SEARCH 1 2 3\r\nc OK SEARCH completed\r\n")
        answer = await session.command(b"d NOOP")
        self.assertEqual(answer, b"* 1 EXPUNGE\r\nd OK NOOP completed\r\n")
        self.assertNotIn(b"FETCH", answer, "its own STORE is not reported again")
        self.assertEqual(
            await session.command(b"e FETCH 1:* (UID)"),
            b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\ne OK FETCH completed\r\n",
        )

    @d
    async def test_status_counts_a_large_folder_without_listing_it(self):
        inbox = await self.fill_inbox()
        await self.store.store_flags(inbox.id, list(range(1, 101)), ["\\Seen"], "+")
        await self.store.store_flags(inbox.id, [7, 8], ["\\Deleted"], "+")
        session = await self.login()
        answer = await session.command(
            b"a STATUS INBOX (MESSAGES UNSEEN UIDNEXT SIZE DELETED DELETED-STORAGE)"
        )
        size = len(SIMPLE) * SIZE
        expected = (
            b"MESSAGES 20000 UNSEEN 19900 UIDNEXT 20001 SIZE %d DELETED 2 DELETED-STORAGE 1" % size
        )
        self.assertEqual(
            answer, b'* STATUS "INBOX" (' + expected + b")\r\na OK STATUS completed\r\n"
        )
