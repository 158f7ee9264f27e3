"""CONDSTORE and QRESYNC (RFC 7162): MODSEQ in SELECT, STATUS, FETCH, STORE and SEARCH,
VANISHED, and one session resynchronising after another changed the folder."""

from __future__ import annotations

import re

from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.imap.test_session import d


class CondstoreTests(IMAPTestCase):
    async def seed(self, count=3):
        for _ in range(count):
            await self.deliver(SIMPLE)
        return await self.store.get_folder(self.mailbox.id, "INBOX")

    async def modseqs(self, folder):
        return {r.uid: r.modseq for r in await self.store.list_folder_messages(folder.id)}

    @d
    async def test_select_condstore_reports_highestmodseq_and_enables(self):
        inbox = await self.seed()
        session = await self.login()
        answer = await session.command(b"a SELECT INBOX (CONDSTORE)")
        self.assertIn(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % inbox.highest_modseq, answer)
        self.assertTrue(answer.endswith(b"a OK [READ-WRITE] SELECT completed\r\n"))
        modseqs = await self.modseqs(inbox)
        # Enabled: FETCH FLAGS carries MODSEQ.
        answer = await session.command(b"b FETCH 1 (FLAGS)")
        self.assertEqual(
            answer, b"* 1 FETCH (FLAGS () MODSEQ (%d))\r\nb OK FETCH completed\r\n" % modseqs[1]
        )

    @d
    async def test_enable_condstore_in_a_selected_mailbox_reports_highestmodseq_once(self):
        inbox = await self.seed()
        session = await self.selected()
        answer = await session.command(b"a ENABLE CONDSTORE")
        self.assertEqual(
            answer,
            b"* ENABLED CONDSTORE\r\n"
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
            b"a OK ENABLE completed\r\n" % inbox.highest_modseq,
        )
        self.assertEqual(
            await session.command(b"b ENABLE CONDSTORE"), b"* ENABLED\r\nb OK ENABLE completed\r\n"
        )

    @d
    async def test_fetch_modseq_enables_condstore(self):
        inbox = await self.seed(1)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (MODSEQ)")
        self.assertEqual(
            answer,
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
            b"* 1 FETCH (MODSEQ (%d))\r\n"
            b"a OK FETCH completed\r\n" % (inbox.highest_modseq, inbox.highest_modseq),
        )
        self.assertTrue(session.protocol.condstore)

    @d
    async def test_status_highestmodseq(self):
        inbox = await self.seed(2)
        session = await self.login()
        answer = await session.command(b"a STATUS INBOX (MESSAGES HIGHESTMODSEQ)")
        self.assertEqual(
            answer,
            b'* STATUS "INBOX" (MESSAGES 2 HIGHESTMODSEQ %d)\r\na OK STATUS completed\r\n'
            % inbox.highest_modseq,
        )

    @d
    async def test_fetch_changedsince_returns_only_changed_messages_with_modseq(self):
        # RFC 7162 3.1.4.1: FETCH 1:* (FLAGS) (CHANGEDSINCE n)
        inbox = await self.seed(3)
        session = await self.selected()
        base = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        await self.store.store_flags(inbox.id, [2], ["\\Seen"], "+")
        modseqs = await self.modseqs(inbox)
        await session.command(b"n NOOP")
        answer = await session.command(b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % base)
        self.assertEqual(
            answer,
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))\r\n"
            b"s100 OK FETCH completed\r\n" % (modseqs[2], modseqs[2]),
        )
        answer = await session.command(b"s101 FETCH 1:* FLAGS (CHANGEDSINCE %d)" % modseqs[2])
        self.assertEqual(answer, b"s101 OK FETCH completed\r\n")

    @d
    async def test_store_unchangedsince_reports_modified_and_silent_modseq(self):
        # RFC 7162 3.1.3, example: UID STORE ... (UNCHANGEDSINCE n) +FLAGS.SILENT (\Deleted)
        inbox = await self.seed(4)
        session = await self.selected(b"INBOX (CONDSTORE)")
        base = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        await self.store.store_flags(inbox.id, [3], ["$Other"], "+")  # another client
        answer = await session.command(
            b"a103 UID STORE 1,2,3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % base
        )
        modseqs = await self.modseqs(inbox)
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 MODSEQ (%d))\r\n"
            b"* 2 FETCH (UID 2 MODSEQ (%d))\r\n"
            b"a103 OK [MODIFIED 3] Conditional STORE failed\r\n" % (modseqs[1], modseqs[2]),
        )
        # Non-UID STORE: MODIFIED lists sequence numbers; non-silent answers carry FLAGS.
        answer = await session.command(
            b"a104 STORE 3:4 (UNCHANGEDSINCE %d) FLAGS (\\Flagged)" % base
        )
        modseqs = await self.modseqs(inbox)
        self.assertEqual(
            answer,
            b"* 4 FETCH (FLAGS (\\Flagged) MODSEQ (%d))\r\n"
            b"a104 OK [MODIFIED 3] Conditional STORE failed\r\n" % modseqs[4],
        )
        answer = await session.command(b"a105 STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
        self.assertEqual(answer, b"a105 OK [MODIFIED 1] Conditional STORE failed\r\n")

    @d
    async def test_search_modseq_reports_the_highest_matched(self):
        # RFC 7162 3.1.5: SEARCH MODSEQ "/flags/\\draft" all n -> * SEARCH ... (MODSEQ m)
        inbox = await self.seed(3)
        session = await self.selected(b"INBOX (CONDSTORE)")
        modseqs = await self.modseqs(inbox)
        answer = await session.command(b'a SEARCH MODSEQ "/flags/\\\\draft" all %d' % modseqs[2])
        self.assertEqual(
            answer, b"* SEARCH 2 3 (MODSEQ %d)\r\na OK SEARCH completed\r\n" % modseqs[3]
        )
        answer = await session.command(b"b SEARCH MODSEQ %d" % (modseqs[3] + 1))
        self.assertEqual(answer, b"* SEARCH\r\nb OK SEARCH completed\r\n")
        answer = await session.command(b"c SEARCH RETURN (COUNT) MODSEQ 1")
        self.assertEqual(
            answer,
            b'* ESEARCH (TAG "c") COUNT 3 MODSEQ %d\r\nc OK SEARCH completed\r\n' % modseqs[3],
        )

    @d
    async def test_expunge_with_condstore_answers_highestmodseq(self):
        await self.seed(2)
        session = await self.selected(b"INBOX (CONDSTORE)")
        await session.command(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
        answer = await session.command(b"b EXPUNGE")
        self.assertRegex(answer, rb"^\* 1 EXPUNGE\r\nb OK \[HIGHESTMODSEQ \d+\] EXPUNGE completed")

    @d
    async def test_malformed_condstore_arguments_are_bad_and_the_session_lives(self):
        await self.seed(1)
        session = await self.selected()
        for line, reason in [
            (b"a SELECT INBOX (QRESYNC (1 1))", b"QRESYNC must be enabled first"),
            (b"a SELECT INBOX (FOO)", b"unknown SELECT parameter"),
            (b"a SELECT INBOX CONDSTORE", b"SELECT parameters must be a parenthesised list"),
            (b"a FETCH 1 FLAGS (CHANGEDSINCE x)", b"CHANGEDSINCE must be a number"),
            (b"a FETCH 1 FLAGS (CHANGEDSINCE)", b"unknown FETCH modifier"),
            (b"a FETCH 1 FLAGS (VANISHED)", b"VANISHED needs UID FETCH"),
            (b"a UID FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", b"VANISHED needs UID FETCH"),
            (b"a STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", b"unknown STORE modifier"),
            (b"a STORE 1 (FOO 1) +FLAGS (\\Seen)", b"unknown STORE modifier"),
            (b"a SEARCH MODSEQ", b"missing search argument"),
            (b'a SEARCH MODSEQ "/flags/x" bogus 5', b"MODSEQ entry type"),
        ]:
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD " + reason), (line, answer))
        answer = await session.command(b"z NOOP")
        self.assertEqual(answer, b"z OK NOOP completed\r\n")


class QresyncTests(IMAPTestCase):
    async def seed(self, count):
        for _ in range(count):
            await self.deliver(SIMPLE)
        return await self.store.get_folder(self.mailbox.id, "INBOX")

    async def qresync_session(self):
        session = await self.login()
        answer = await session.command(b"e ENABLE QRESYNC")
        self.assertEqual(answer, b"* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n")
        self.assertTrue(session.protocol.condstore)
        return session

    @d
    async def test_two_sessions_resync_sees_exactly_the_vanished_and_changed(self):
        inbox = await self.seed(6)
        # The client's last state: UIDVALIDITY and HIGHESTMODSEQ after six messages.
        known = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        other = await self.selected()
        await other.command(b"a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        await other.command(b"b EXPUNGE")  # UIDs 2 and 4 vanish
        await other.command(b"c UID STORE 5 +FLAGS.SILENT (\\Seen $Done)")
        await other.command(b"d UID MOVE 6 Archive")  # UID 6 vanishes
        await self.deliver(SIMPLE)  # UID 7 arrives
        rows = {r.uid: r for r in await self.store.list_folder_messages(inbox.id)}
        highest = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        session = await self.qresync_session()
        answer = await session.command(
            b"A03 SELECT INBOX (QRESYNC (%d %d 1:6))" % (inbox.uid_validity, known)
        )
        self.assertEqual(
            answer,
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Done)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Done \\*)]"
            b" Flags permitted\r\n"
            b"* 4 EXISTS\r\n"
            b"* 0 RECENT\r\n"
            b"* OK [UNSEEN 1] First unseen message\r\n"
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
            b"* OK [UIDNEXT 8] Predicted next UID\r\n"
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
            b"* VANISHED (EARLIER) 2,4,6\r\n"
            b"* 3 FETCH (UID 5 FLAGS (\\Seen $Done) MODSEQ (%d))\r\n"
            b"A03 OK [READ-WRITE] SELECT completed\r\n"
            % (inbox.uid_validity, highest, rows[5].modseq),
        )
        # Without known UIDs the new message (UID 7) is a change since the client's MODSEQ.
        answer = await session.command(
            b"A04 SELECT INBOX (QRESYNC (%d %d))" % (inbox.uid_validity, known)
        )
        self.assertIn(b"* OK [CLOSED] Previous mailbox closed\r\n", answer)
        self.assertIn(b"* VANISHED (EARLIER) 2,4,6\r\n", answer)
        self.assertIn(b"* 4 FETCH (UID 7 FLAGS () MODSEQ (%d))\r\n" % rows[7].modseq, answer)
        # Up to date: nothing to report. Another UIDVALIDITY: nothing either (full resync).
        for uv, modseq in ((inbox.uid_validity, highest), (inbox.uid_validity + 1, known)):
            answer = await session.command(b"A05 SELECT INBOX (QRESYNC (%d %d))" % (uv, modseq))
            self.assertNotIn(b"VANISHED", answer)
            self.assertNotIn(b"FETCH", answer)
            self.assertIn(b"A05 OK [READ-WRITE]", answer)

    @d
    async def test_qresync_session_gets_vanished_instead_of_expunge(self):
        inbox = await self.seed(4)
        session = await self.qresync_session()
        await session.command(b"s SELECT INBOX")
        other = await self.selected()
        await other.command(b"a STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        await other.command(b"b EXPUNGE")
        await other.command(b"c UID STORE 4 +FLAGS.SILENT (\\Flagged)")
        rows = {r.uid: r for r in await self.store.list_folder_messages(inbox.id)}
        answer = await session.command(b"n NOOP")
        self.assertEqual(
            answer,
            b"* VANISHED 1,3\r\n"
            b"* 2 FETCH (FLAGS (\\Flagged) UID 4 MODSEQ (%d))\r\n"
            b"n OK NOOP completed\r\n" % rows[4].modseq,
        )
        # Its own EXPUNGE too, with HIGHESTMODSEQ in the tagged answer.
        await session.command(b"d STORE 1 +FLAGS.SILENT (\\Deleted)")
        answer = await session.command(b"e EXPUNGE")
        self.assertRegex(answer, rb"^\* VANISHED 2\r\ne OK \[HIGHESTMODSEQ \d+\] EXPUNGE")
        # And MOVE.
        answer = await session.command(b"f MOVE 1 Archive")
        self.assertIn(b"* VANISHED 4\r\n", answer)
        self.assertNotIn(b"EXPUNGE\r\n", answer)

    @d
    async def test_uid_fetch_changedsince_vanished(self):
        # RFC 7162 3.2.6: UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)
        inbox = await self.seed(5)
        session = await self.qresync_session()
        await session.command(b"s SELECT INBOX")
        base = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        await self.store.store_flags(inbox.id, [1, 4], ["\\Deleted"], "+")
        await self.store.expunge(inbox.id, [1, 4])
        await self.store.store_flags(inbox.id, [3], ["\\Seen"], "+")
        await session.command(b"n NOOP")
        rows = {r.uid: r for r in await self.store.list_folder_messages(inbox.id)}
        answer = await session.command(
            b"s100 UID FETCH 2:5 (FLAGS) (CHANGEDSINCE %d VANISHED)" % base
        )
        self.assertEqual(
            answer,
            b"* VANISHED (EARLIER) 4\r\n"
            b"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (%d))\r\n"
            b"s100 OK FETCH completed\r\n" % rows[3].modseq,
        )
        answer = await session.command(b"s101 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        self.assertTrue(answer.startswith(b"* VANISHED (EARLIER) 1,4\r\n"), answer)

    @d
    async def test_qresync_parameter_errors(self):
        await self.seed(1)
        session = await self.qresync_session()
        for line in (
            b"a SELECT INBOX (QRESYNC)",
            b"a SELECT INBOX (QRESYNC (1))",
            b"a SELECT INBOX (QRESYNC (0 1))",
            b"a SELECT INBOX (QRESYNC (1 1 1:*))",
            b"a SELECT INBOX (QRESYNC (1 1 1:5 (1:2)))",
            b"a SELECT INBOX (QRESYNC (x 1))",
        ):
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD "), (line, answer))
        # Sequence match data is accepted (and not needed).
        answer = await session.command(b"b SELECT INBOX (QRESYNC (1 1 1:5 (1:2 1:2)))")
        self.assertIn(b"b OK [READ-WRITE]", answer)
        self.assertIsNotNone(re.search(rb"HIGHESTMODSEQ", answer))
