"""IMAP sessions on PostgreSQL, where a change reaches a session through LISTEN/NOTIFY (after
its commit, on its own schedule) and each statement of a read sees the data committed when it
starts: the view of a selected folder is still brought up to date by MODSEQ delta, exactly."""

from __future__ import annotations

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, changes_settled, make_pg_store


class PostgresIMAPTests(IMAPTestCase):
    skip = PG_SKIP
    timeout = 120

    async def open_store(self, root):
        return await make_pg_store(self, root)

    @d
    async def test_append_to_the_selected_folder_reports_exists_before_ok(self):
        """The APPEND's own announcement comes back through PostgreSQL and may arrive after
        the store has answered; the session refreshes after its APPEND either way, so EXISTS
        comes before the OK and is not repeated when the announcement arrives."""
        await self.deliver(SIMPLE)
        session = await self.selected()
        await changes_settled(self.store)
        session.send(b"a APPEND INBOX {%d+}\r\n" % len(MULTIPART) + MULTIPART + b"\r\n")
        answer = await session.wait_for(rb"^a OK[^\r]*\r\n")
        self.assertTrue(answer.startswith(b"* 2 EXISTS\r\na OK [APPENDUID "), answer)
        await changes_settled(self.store)
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")

    @d
    async def test_noop_and_idle_report_other_sessions_changes_exactly(self):
        for _ in range(3):
            await self.deliver(SIMPLE)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        # A few hundred more, so the delta is a small part of the folder.
        await self.store.copy_messages(inbox.id, [1, 2, 3], inbox.id)
        for _ in range(6):
            rows = await self.store.list_folder_messages(inbox.id)
            await self.store.copy_messages(inbox.id, [r.uid for r in rows], inbox.id)
        size = len(await self.store.list_folder_messages(inbox.id))
        self.assertEqual(size, 384)
        watcher = await self.selected()
        idler = await self.selected()
        await changes_settled(self.store)
        idler.send(b"i IDLE\r\n")
        await idler.wait_for(rb"^\+ idling\r\n")

        await self.store.store_flags(inbox.id, [2, 300], ["\\Deleted"], "+")
        await self.store.expunge(inbox.id)
        await self.store.store_flags(inbox.id, [100], ["$Work"], "+")
        await self.deliver(MULTIPART)
        await changes_settled(self.store)
        expected = (
            b"* 300 EXPUNGE\r\n* 2 EXPUNGE\r\n"
            b"* 99 FETCH (FLAGS ($Work) UID 100)\r\n"
            b"* 383 EXISTS\r\n"
        )
        answer = await watcher.command(b"a NOOP")
        self.assertEqual(answer, expected + b"a OK NOOP completed\r\n")
        self.assertEqual(watcher.protocol.last_update.read, 4)
        # The idler heard the same, possibly over several refreshes (one per notification):
        # what it was told adds up to the same view.
        await idler.wait_for(rb"\* 383 EXISTS\r\n")
        idler.send(b"DONE\r\n")
        await idler.wait_for(rb"^i OK")
        self.assertEqual(list(idler.protocol.view.uids), list(watcher.protocol.view.uids))
        self.assertEqual(idler.protocol.view.row(100).flags, watcher.protocol.view.row(100).flags)
