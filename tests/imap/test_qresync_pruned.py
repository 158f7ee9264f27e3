"""QRESYNC after housekeeping pruned ``expunged_uids`` (RFC 7162 3.2.5.1, 3.2.6): a client whose
MODSEQ is below the pruned horizon is told, as ``VANISHED (EARLIER)``, every UID of its known
UIDs (or ``1:UIDNEXT-1``) that is gone: perhaps more than left since its MODSEQ, never less.
Raw responses on a ``StringTransport`` and imaplib on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import imaplib

from twisted.internet import reactor, threads
from twisted.trial import unittest

from haitatsu.imap.qresync import matched_floor, missing_spans, vanished_earlier
from haitatsu.storage.store.sync import VanishedReport
from tests.imap.helpers import ADDRESS, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import OnPostgres, changes_settled


async def prune_everything_vanished(store, folder_id) -> int:
    """Make every vanished UID of the folder so far old, and prune: as housekeeping does 30 days
    later. Return the folder's pruned horizon."""

    async def backdate(txn):
        await txn.execute(
            "UPDATE expunged_uids SET expunged_at = 1 WHERE folder_id = ?", (folder_id,)
        )

    await store.db.run("test_backdate_vanished", backdate)
    await store.prune_vanished(1000)
    return (await store.vanished_report(folder_id, 0)).pruned_modseq


class PrunedQresyncMixin:
    async def scenario(self):
        """Six messages; UID 3 expunged before the client's last sync (it knew), then UIDs 2
        and 4 expunged and 6 moved away after it; all of that pruned; then UID 7 arrives.
        Return (inbox, the client's MODSEQ, the horizon)."""
        for _ in range(6):
            await self.deliver(SIMPLE)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        await self.store.store_flags(inbox.id, [3], ["\\Deleted"], "+")
        await self.store.expunge(inbox.id, [3])
        known = (await self.store.get_folder_by_id(inbox.id)).highest_modseq
        await self.store.store_flags(inbox.id, [2, 4], ["\\Deleted"], "+")
        await self.store.expunge(inbox.id, [2, 4])
        await self.store.move_messages(inbox.id, [6], (await self.archive()).id)
        horizon = await prune_everything_vanished(self.store, inbox.id)
        self.assertGreater(horizon, known)
        await self.deliver(SIMPLE)  # UID 7
        return inbox, known, horizon

    async def archive(self):
        return await self.store.get_folder(self.mailbox.id, "Archive")

    async def qresync_session(self):
        session = await self.login()
        answer = await session.command(b"e ENABLE QRESYNC")
        self.assertEqual(answer, b"* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n")
        return session

    @d
    async def test_select_below_the_horizon_reports_every_known_uid_that_is_gone(self):
        inbox, known, horizon = await self.scenario()
        # The store cannot list what left since ``known`` any more, and says so.
        report = await self.store.vanished_report(inbox.id, known)
        self.assertFalse(report.complete)
        self.assertEqual(report.uids, ())
        session = await self.qresync_session()
        uv = inbox.uid_validity
        # Known UIDs 1:6: 2, 3, 4 and 6 are gone (3 left before the client's MODSEQ: an
        # over-report RFC 7162 allows; the exact answer would have been 2,4,6).
        answer = await session.command(b"a SELECT INBOX (QRESYNC (%d %d 1:6))" % (uv, known))
        self.assertIn(b"* VANISHED (EARLIER) 2:4,6\r\n", answer)
        self.assertIn(b"a OK [READ-WRITE]", answer)
        self.assertNotIn(b"FETCH", answer)  # 1 and 5 did not change; 7 is not among 1:6
        # Without known UIDs: 1:UIDNEXT-1; UID 7 is new since then: a FETCH, not vanished.
        answer = await session.command(b"b SELECT INBOX (QRESYNC (%d %d))" % (uv, known))
        self.assertIn(b"* VANISHED (EARLIER) 2:4,6\r\n", answer)
        self.assertRegex(answer, rb"\* 3 FETCH \(UID 7 FLAGS \(\) MODSEQ \(\d+\)\)\r\n")
        self.assertNotIn(b"UID 5 ", answer)
        # Known UIDs beyond UIDNEXT are never reported: no such UID ever existed.
        answer = await session.command(
            b"c SELECT INBOX (QRESYNC (%d %d 5:100,200:300))" % (uv, known)
        )
        self.assertIn(b"* VANISHED (EARLIER) 6\r\n", answer)
        # At the horizon the list is exact again: nothing left after it.
        answer = await session.command(b"d SELECT INBOX (QRESYNC (%d %d 1:6))" % (uv, horizon))
        self.assertNotIn(b"VANISHED", answer)

    @d
    async def test_sequence_match_data_narrows_the_over_report(self):
        inbox, known, _ = await self.scenario()
        session = await self.qresync_session()
        # The client's view was 1,2,4,5,6 (seqs 1..5). Message 1 is still message 1: nothing
        # below UID 1 left, which changes nothing here; message 4 (UID 5) is message 2 now.
        answer = await session.command(
            b"a SELECT INBOX (QRESYNC (%d %d 1:6 (1,4 1,5)))" % (inbox.uid_validity, known)
        )
        self.assertIn(b"* VANISHED (EARLIER) 2:4,6\r\n", answer)
        # Expunge UID 7 now (above the horizon: remembered exactly) and claim a view where
        # message 2 is UID 5, as it still is: only UIDs above 5 may be reported.
        await self.store.store_flags(inbox.id, [7], ["\\Deleted"], "+")
        await self.store.expunge(inbox.id, [7])
        answer = await session.command(
            b"b SELECT INBOX (QRESYNC (%d %d 1:7 (2 5)))" % (inbox.uid_validity, known)
        )
        self.assertIn(b"* VANISHED (EARLIER) 6:7\r\n", answer)

    @d
    async def test_uid_fetch_vanished_below_the_horizon(self):
        inbox, known, horizon = await self.scenario()
        session = await self.qresync_session()
        await session.command(b"s SELECT INBOX")
        answer = await session.command(
            b"f1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % known
        )
        self.assertTrue(answer.startswith(b"* VANISHED (EARLIER) 2:4,6\r\n"), answer)
        self.assertRegex(answer, rb"\* 3 FETCH \(UID 7 FLAGS \(\) MODSEQ \(\d+\)\)\r\n")
        answer = await session.command(
            b"f2 UID FETCH 4:5 (FLAGS) (CHANGEDSINCE %d VANISHED)" % known
        )
        self.assertEqual(answer, b"* VANISHED (EARLIER) 4\r\nf2 OK FETCH completed\r\n")
        # Above the horizon: the exact list (nothing left since).
        answer = await session.command(
            b"f3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % horizon
        )
        self.assertNotIn(b"VANISHED", answer)

    @d
    async def test_a_selected_session_behind_the_horizon_still_hears_every_expunge(self):
        for _ in range(4):
            await self.deliver(SIMPLE)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.selected()
        qresync = await self.qresync_session()
        await qresync.command(b"s SELECT INBOX")
        # Another client expunges 2 and 3; before either session looks, it is pruned.
        await self.store.store_flags(inbox.id, [2, 3], ["\\Deleted", "\\Seen"], "+")
        await self.store.expunge(inbox.id, [2, 3])
        await self.store.store_flags(inbox.id, [4], ["\\Flagged"], "+")
        await prune_everything_vanished(self.store, inbox.id)
        await changes_settled(self.store)
        answer = await session.command(b"n NOOP")
        self.assertEqual(
            answer,
            b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 2 FETCH (FLAGS (\\Flagged) UID 4)\r\n"
            b"n OK NOOP completed\r\n",
        )
        answer = await qresync.command(b"n NOOP")
        self.assertTrue(answer.startswith(b"* VANISHED 2:3\r\n"), answer)

    @d
    async def test_imaplib_resynchronises_after_pruning(self):
        inbox, known, _ = await self.scenario()
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        password = self.password
        host_port = port.getHost().port

        def client():
            with imaplib.IMAP4("127.0.0.1", host_port, timeout=10) as c:
                c.login(ADDRESS, password)
                c._simple_command("ENABLE", "QRESYNC")
                typ, _ = c._simple_command(
                    "SELECT", "INBOX", f"(QRESYNC ({inbox.uid_validity} {known}))"
                )
                return (
                    typ,
                    c.untagged_responses.pop("VANISHED", None),
                    c.untagged_responses.pop("FETCH", None),
                )

        typ, vanished, fetched = await threads.deferToThread(client)
        self.assertEqual(typ, "OK")
        self.assertEqual(vanished, [b"(EARLIER) 2:4,6"])
        [line] = fetched
        self.assertRegex(line, rb"^3 \(UID 7 FLAGS \(\) MODSEQ \(\d+\)\)$")


class SQLitePrunedQresyncTests(PrunedQresyncMixin, IMAPTestCase):
    pass


class PostgresPrunedQresyncTests(OnPostgres, PrunedQresyncMixin, IMAPTestCase):
    pass


class _View:
    def __init__(self, uids, uid_next):
        self.uids = list(uids)
        self.by_uid = dict.fromkeys(self.uids)
        self.folder = type("F", (), {"uid_next": uid_next})()


class VanishedEarlierTests(unittest.SynchronousTestCase):
    def test_complete_report_is_exact_within_the_known_uids(self):
        report = VanishedReport((2, 3, 4, 9), complete=True, uid_next=11)
        view = _View([1, 5, 10], 11)
        self.assertEqual(vanished_earlier(report, None, view), b"2:4,9")
        self.assertEqual(vanished_earlier(report, [(3, 9)], view), b"3:4,9")
        self.assertEqual(vanished_earlier(report, [(5, 8)], view), b"")

    def test_incomplete_report_over_reports_in_ranges_not_per_uid(self):
        report = VanishedReport((), complete=False, uid_next=4_000_000_000)
        view = _View([1, 5, 10], 11)
        # The client's range is clipped at the UIDNEXT the session announced.
        self.assertEqual(vanished_earlier(report, [(1, 4_294_967_295)], view), b"2:4,6:9")
        self.assertEqual(vanished_earlier(report, [(None, None)], view), b"2:4,6:9")
        self.assertEqual(vanished_earlier(report, [(7, None), (3, 2)], view), b"2:3,7:9")
        # Nothing the folder never had: an empty folder with UIDNEXT 1.
        self.assertEqual(vanished_earlier(report, None, _View([], 1)), b"")

    def test_missing_spans_and_floor(self):
        self.assertEqual(missing_spans([(1, 10)], [1, 2, 5, 10]), [(3, 4), (6, 9)])
        self.assertEqual(missing_spans([(3, 3)], [3]), [])
        live = [1, 5, 7]
        self.assertEqual(matched_floor(([(1, 3)], [(1, 1), (5, 5), (7, 7)]), live), 7)
        self.assertEqual(matched_floor(([(2, 2)], [(4, 4)]), live), 0)
        # Unusable data (sizes differ, or *) narrows nothing.
        self.assertEqual(matched_floor(([(1, 2)], [(1, 1)]), live), 0)
        self.assertEqual(matched_floor(([(1, None)], [(1, 1)]), live), 0)
