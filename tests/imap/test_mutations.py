"""STORE, SEARCH, EXPUNGE, APPEND and IDLE against the real store."""

from __future__ import annotations

import os
import shutil

from tests.imap.helpers import EIGHT_BIT, MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_fetch import DATE_NS
from tests.imap.test_session import d
from tests.support import deliver_bytes

OTHER = (
    b"From: Erin <erin@example.test>\r\n"
    b"To: bob@example.test\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"X-Priority: 1\r\n"
    b"\r\n"
    b"The numbers are in. Revenue is up.\r\n"
)


class StoreTests(IMAPTestCase):
    @d
    async def test_store_modes_and_silent(self):
        await self.deliver(SIMPLE)
        await self.deliver(SIMPLE)
        session = await self.selected()
        answer = await session.command(b"a STORE 1:2 +FLAGS (\\Seen \\Flagged)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (FLAGS (\\Seen \\Flagged))\r\n* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n"
            b"a OK STORE completed\r\n",
        )
        answer = await session.command(b"b STORE 2 -FLAGS \\Flagged")
        self.assertEqual(answer, b"* 2 FETCH (FLAGS (\\Seen))\r\nb OK STORE completed\r\n")
        answer = await session.command(b"c STORE 1 FLAGS.SILENT (\\Answered $Label1)")
        self.assertEqual(answer, b"c OK STORE completed\r\n")
        answer = await session.command(b"d UID STORE 1 +FLAGS (\\draft)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (FLAGS (\\Answered \\Draft $Label1) UID 1)\r\nd OK STORE completed\r\n",
        )
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        self.assertEqual(
            [r.flags for r in rows], [("\\Answered", "\\Draft", "$Label1"), ("\\Seen",)]
        )

    @d
    async def test_store_errors(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a STORE 1 +FLAGS (\\Bogus)"),
            b"a BAD unknown system flag \\Bogus\r\n",
        )
        self.assertEqual(
            await session.command(b"b STORE 1 XFLAGS (\\Seen)"), b"b BAD unknown STORE item\r\n"
        )
        await session.command(b"c EXAMINE INBOX")
        self.assertEqual(
            await session.command(b"e STORE 1 +FLAGS (\\Seen)"),
            b"e NO [READ-ONLY] Mailbox is read-only\r\n",
        )


class SearchTests(IMAPTestCase):
    async def _setup_messages(self):
        await self.deliver(SIMPLE, flags=["\\Seen"], internal_date=DATE_NS)  # 1: 1994-02-08
        await self.deliver(OTHER, flags=["\\Flagged", "$Work"])  # 2: now
        await self.deliver(MULTIPART, flags=["\\Deleted"])  # 3: now
        await self.deliver(EIGHT_BIT)  # 4: now
        return await self.selected()

    async def search(self, session, criteria: bytes) -> bytes:
        answer = await session.command(b"s SEARCH " + criteria)
        self.assertTrue(answer.endswith(b"s OK SEARCH completed\r\n"), answer)
        return answer.split(b"\r\n")[0]

    @d
    async def test_flag_and_size_and_date_keys(self):
        session = await self._setup_messages()
        self.assertEqual(await self.search(session, b"ALL"), b"* SEARCH 1 2 3 4")
        self.assertEqual(await self.search(session, b"SEEN"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"UNSEEN"), b"* SEARCH 2 3 4")
        self.assertEqual(await self.search(session, b"FLAGGED"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b"DELETED"), b"* SEARCH 3")
        self.assertEqual(await self.search(session, b"UNDELETED UNSEEN"), b"* SEARCH 2 4")
        self.assertEqual(await self.search(session, b"ANSWERED"), b"* SEARCH")
        self.assertEqual(await self.search(session, b"DRAFT"), b"* SEARCH")
        self.assertEqual(await self.search(session, b"KEYWORD $work"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b"UNKEYWORD $Work"), b"* SEARCH 1 3 4")
        self.assertEqual(
            await self.search(session, b"LARGER %d" % (len(MULTIPART) - 1)), b"* SEARCH 3"
        )
        self.assertEqual(await self.search(session, b"SMALLER 200"), b"* SEARCH 2 4")
        self.assertEqual(await self.search(session, b"BEFORE 1-Jan-2000"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"ON 8-Feb-1994"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b'SINCE "1-Jan-2000"'), b"* SEARCH 2 3 4")
        self.assertEqual(await self.search(session, b"SENTBEFORE 9-Feb-1994"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"2:3"), b"* SEARCH 2 3")
        self.assertEqual(await self.search(session, b"UID 3:*"), b"* SEARCH 3 4")

    @d
    async def test_header_and_address_keys(self):
        session = await self._setup_messages()
        self.assertEqual(await self.search(session, b"FROM bob"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"FROM ERIN@EXAMPLE"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b"TO bob@example.test"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b"CC carol"), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b'SUBJECT "lunch on"'), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"HEADER X-Priority 1"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b'HEADER X-Custom ""'), b"* SEARCH 1")
        self.assertEqual(await self.search(session, b"HEADER Subject report"), b"* SEARCH 3")
        self.assertEqual(await self.search(session, b"BODY revenue"), b"* SEARCH 2")
        self.assertEqual(await self.search(session, b"TEXT quarterly"), b"* SEARCH 2")

    @d
    async def test_utf8_search_with_literal_charset(self):
        session = await self._setup_messages()
        needle = "grüße".encode()
        session.send(b"s SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(needle))
        await session.wait_for(rb"^\+ ")
        session.send(needle + b"\r\n")
        self.assertEqual(
            await session.wait_for(rb"^s "), b"* SEARCH 4\r\ns OK SEARCH completed\r\n"
        )
        answer = await session.command(b"t SEARCH CHARSET KOI8-R ALL")
        self.assertEqual(answer, b"t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n")

    @d
    async def test_not_or_and_lists(self):
        session = await self._setup_messages()
        self.assertEqual(await self.search(session, b"NOT SEEN"), b"* SEARCH 2 3 4")
        self.assertEqual(await self.search(session, b"OR SEEN FLAGGED"), b"* SEARCH 1 2")
        self.assertEqual(
            await self.search(session, b"OR (SEEN FROM bob) (DELETED NOT FLAGGED)"), b"* SEARCH 1 3"
        )
        self.assertEqual(await self.search(session, b"NOT (OR 1 4)"), b"* SEARCH 2 3")
        answer = await session.command(b"u UID SEARCH OR FLAGGED DELETED")
        self.assertEqual(answer, b"* SEARCH 2 3\r\nu OK SEARCH completed\r\n")

    @d
    async def test_bad_search(self):
        session = await self._setup_messages()
        self.assertEqual(
            await session.command(b"a SEARCH BOGUS"), b"a BAD unknown search key BOGUS\r\n"
        )
        self.assertEqual(await session.command(b"b SEARCH LARGER x"), b"b BAD number expected\r\n")
        self.assertEqual(
            await session.command(b"c SEARCH ON 32-Jan-2020"), b"c BAD invalid date\r\n"
        )
        self.assertEqual(
            await session.command(b"d SEARCH NOT"), b"d BAD missing search argument\r\n"
        )
        self.assertEqual(await session.command(b"e NOOP"), b"e OK NOOP completed\r\n")


class ExpungeTests(IMAPTestCase):
    @d
    async def test_expunge_numbers_descending_and_moves_to_trash(self):
        for flags in ([], ["\\Deleted"], ["\\Deleted"], [], ["\\Deleted"]):
            await self.deliver(SIMPLE, flags=flags)
        session = await self.selected()
        answer = await session.command(b"a EXPUNGE")
        self.assertEqual(
            answer, b"* 5 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\na OK EXPUNGE completed\r\n"
        )
        answer = await session.command(b"b FETCH 1:* (UID)")
        self.assertEqual(
            answer, b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 4)\r\nb OK FETCH completed\r\n"
        )
        answer = await session.command(b"c STATUS Trash (MESSAGES)")
        self.assertEqual(answer, b'* STATUS "Trash" (MESSAGES 3)\r\nc OK STATUS completed\r\n')

    @d
    async def test_expunge_read_only(self):
        await self.deliver(SIMPLE, flags=["\\Deleted"])
        session = await self.selected(command=b"EXAMINE")
        self.assertEqual(
            await session.command(b"a EXPUNGE"), b"a NO [READ-ONLY] Mailbox is read-only\r\n"
        )


class AppendTests(IMAPTestCase):
    async def append(self, session, prefix: bytes, message: bytes, sync=True) -> bytes:
        if sync:
            session.send(prefix + b" {%d}\r\n" % len(message))
            await session.wait_for(rb"^\+ Ready for literal data\r\n")
            session.send(message + b"\r\n")
        else:
            session.send(prefix + b" {%d+}\r\n" % len(message) + message + b"\r\n")
        tag = prefix.split(b" ", 1)[0]
        return await session.wait_for(rb"^" + tag + rb" ")

    async def stored(self, folder="INBOX"):
        f = await self.store.get_folder(self.mailbox.id, folder)
        rows = await self.store.list_folder_messages(f.id)
        out = []
        for row in rows:
            [(mm, info)] = await self.store.get_messages(f.id, [row.uid])
            out.append((mm, await self.store.read_message(info)))
        return out

    async def appenduid(self, folder="INBOX", uid=1) -> bytes:
        """The UIDPLUS answer for the ``uid``-th message appended to ``folder``."""
        f = await self.store.get_folder(self.mailbox.id, folder)
        return b"[APPENDUID %d %d] " % (f.uid_validity, uid)

    @d
    async def test_append_without_flags_or_date(self):
        session = await self.login()
        answer = await self.append(session, b"a APPEND INBOX", SIMPLE)
        self.assertEqual(answer, b"a OK " + await self.appenduid() + b"APPEND completed\r\n")
        [(mm, data)] = await self.stored()
        self.assertEqual(data, SIMPLE)
        self.assertEqual(mm.flags, ())

    @d
    async def test_append_with_flags_and_date(self):
        session = await self.login()
        answer = await self.append(
            session, b'a APPEND Drafts (\\Draft \\Seen) " 8-Feb-1994 06:52:25 +0100"', MULTIPART
        )
        expected = b"a OK " + await self.appenduid("Drafts") + b"APPEND completed\r\n"
        self.assertEqual(answer, expected)
        [(mm, data)] = await self.stored("Drafts")
        self.assertEqual(data, MULTIPART)
        self.assertEqual(mm.flags, ("\\Seen", "\\Draft"))
        self.assertEqual(mm.internal_date, DATE_NS)

    @d
    async def test_append_with_flags_only_nonsync_literal(self):
        session = await self.login()
        answer = await self.append(session, b"a APPEND Sent (\\Seen)", EIGHT_BIT, sync=False)
        self.assertEqual(answer, b"a OK " + await self.appenduid("Sent") + b"APPEND completed\r\n")
        [(mm, data)] = await self.stored("Sent")
        self.assertEqual((mm.flags, data), (("\\Seen",), EIGHT_BIT))
        self.assertEqual(os.listdir(self.spool_dir), [])

    @d
    async def test_append_to_selected_folder_reports_exists(self):
        session = await self.selected()
        answer = await self.append(session, b"a APPEND INBOX", SIMPLE)
        expected = b"* 1 EXISTS\r\na OK " + await self.appenduid() + b"APPEND completed\r\n"
        self.assertEqual(answer, expected)

    @d
    async def test_append_missing_folder_and_bad_date(self):
        session = await self.login()
        answer = await self.append(session, b"a APPEND Nowhere", SIMPLE)
        self.assertEqual(answer, b"a NO [TRYCREATE] No such mailbox\r\n")
        answer = await self.append(session, b'b APPEND INBOX "31-Feb-2020 00:00:00 +0000"', SIMPLE)
        self.assertEqual(answer, b"b BAD invalid date-time\r\n")
        self.assertEqual(os.listdir(self.spool_dir), [])

    @d
    async def test_append_too_big_is_refused_before_the_data(self):
        self.config = self.config.__class__(
            imap=self.config.imap, limits=self.config.limits.__class__(max_message_size_bytes=100)
        )
        session = await self.login()
        session.send(b"a APPEND INBOX {%d}\r\n" % len(SIMPLE))
        self.assertEqual(
            await session.wait_for(rb"^a "),
            b"a NO [TOOBIG] Message is larger than the limit of 100 bytes\r\n",
        )
        # a non-synchronizing literal is read and thrown away, then refused the same way
        session.send(b"b APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n")
        self.assertEqual(
            await session.wait_for(rb"^b "),
            b"b NO [TOOBIG] Message is larger than the limit of 100 bytes\r\n",
        )
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")
        self.assertEqual(await self.stored(), [])

    @d
    async def test_append_storage_failure_is_unavailable(self):
        session = await self.login()
        # Put a file where the blob store keeps its temporary files: every put fails (even as root).
        tmp = os.path.join(self.store.blobs.root, "tmp")
        os.makedirs(self.store.blobs.root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        with open(tmp, "w"):
            pass
        answer = await self.append(session, b"a APPEND INBOX", SIMPLE)
        self.assertEqual(
            answer, b"a NO [UNAVAILABLE] Storage is temporarily unavailable, try again\r\n"
        )
        os.unlink(tmp)
        self.assertEqual(await self.stored(), [])
        self.assertEqual(os.listdir(self.spool_dir), [])

    @d
    async def test_append_over_mailbox_quota(self):
        """RFC 9208's ``[OVERQUOTA]`` when ``used + size > quota``; exactly at the quota is OK."""
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=len(SIMPLE) * 2)
        session = await self.login()
        self.assertEqual(
            await self.append(session, b"a APPEND INBOX", SIMPLE),
            b"a OK " + await self.appenduid() + b"APPEND completed\r\n",
        )
        self.assertEqual(
            await self.append(session, b"b APPEND Sent", SIMPLE),
            b"b OK " + await self.appenduid("Sent") + b"APPEND completed\r\n",
        )
        answer = await self.append(session, b"c APPEND INBOX", b"x")
        self.assertEqual(answer, b"c NO [OVERQUOTA] Mailbox is over its quota\r\n")
        self.assertEqual(len(await self.stored()), 1)
        self.assertEqual(
            (await self.store.get_mailbox(self.mailbox.id)).used_bytes, len(SIMPLE) * 2
        )
        self.assertEqual(os.listdir(self.spool_dir), [])
        self.assertEqual(await session.command(b"d NOOP"), b"d OK NOOP completed\r\n")

    @d
    async def test_append_over_domain_quota(self):
        """Another mailbox of the domain filled the domain's quota: APPEND is refused too."""
        other = await self.store.create_mailbox("other@example.test")
        await deliver_bytes(self.store, SIMPLE, other.id)
        await self.store.set_domain_quota("example.test", len(SIMPLE) + 10)
        session = await self.login()
        answer = await self.append(session, b"a APPEND Drafts", SIMPLE)
        self.assertEqual(answer, b"a NO [OVERQUOTA] Mailbox is over its quota\r\n")
        self.assertEqual(await self.stored("Drafts"), [])
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)

    @d
    async def test_disconnect_mid_literal_leaves_no_spool_file(self):
        session = await self.login()
        session.send(b"a APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE[:50])
        self.assertEqual(len(os.listdir(self.spool_dir)), 1)
        session.close()
        self.assertEqual(os.listdir(self.spool_dir), [])
        self.assertEqual(await self.stored(), [])


class IdleTests(IMAPTestCase):
    @d
    async def test_idle_sees_delivery_flags_and_expunge(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        session.send(b"i IDLE\r\n")
        self.assertEqual(await session.wait_for(rb"^\+ idling\r\n"), b"+ idling\r\n")
        await self.deliver(OTHER)
        self.assertEqual(await session.wait_for(rb"EXISTS\r\n"), b"* 2 EXISTS\r\n")
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        await self.store.store_flags(folder.id, [1], ["\\Deleted"], "+")
        self.assertEqual(
            await session.wait_for(rb"FETCH.*\r\n"), b"* 1 FETCH (FLAGS (\\Deleted) UID 1)\r\n"
        )
        await self.store.expunge(folder.id)
        self.assertEqual(await session.wait_for(rb"EXPUNGE\r\n"), b"* 1 EXPUNGE\r\n")
        session.send(b"DONE\r\n")
        self.assertEqual(await session.wait_for(rb"^i "), b"i OK IDLE terminated\r\n")
        answer = await session.command(b"a FETCH 1:* (UID)")
        self.assertEqual(answer, b"* 1 FETCH (UID 2)\r\na OK FETCH completed\r\n")

    @d
    async def test_noop_reports_changes_from_another_session(self):
        first = await self.selected()
        second = await self.login()
        await second.command(b"b SELECT INBOX")
        await self.deliver(SIMPLE)
        self.assertEqual(await first.command(b"a NOOP"), b"* 1 EXISTS\r\na OK NOOP completed\r\n")
        await second.command(b"c NOOP")
        await second.command(b"d STORE 1 +FLAGS (\\Flagged)")
        self.assertEqual(
            await first.command(b"e CHECK"),
            b"* 1 FETCH (FLAGS (\\Flagged) UID 1)\r\ne OK CHECK completed\r\n",
        )
        # the session's own STORE is not reported twice
        self.assertEqual(await second.command(b"f NOOP"), b"f OK NOOP completed\r\n")

    @d
    async def test_idle_times_out_like_any_idle_session(self):
        """RFC 2177 3: a client re-issues IDLE within 29 minutes; one that never does (gone
        without closing its connection) is logged out after the idle timeout."""
        session = await self.selected()
        session.send(b"i IDLE\r\n")
        await session.wait_for(rb"^\+ idling")
        self.clock.advance(1799)
        self.assertFalse(session.transport.disconnecting)
        session.send(b"DONE\r\n")
        await session.wait_for(rb"^i OK")
        session.send(b"j IDLE\r\n")
        await session.wait_for(rb"^\+ idling")
        self.clock.advance(1799)
        self.assertFalse(session.transport.disconnecting, "the new IDLE started a new period")
        self.clock.advance(2)
        self.assertEqual(session.output(), b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(session.transport.disconnecting)

    @d
    async def test_idle_needs_done(self):
        await self.selected()
        session = await self.selected()
        session.send(b"i IDLE\r\n")
        await session.wait_for(rb"^\+ idling")
        session.send(b"NOT-DONE\r\n")
        self.assertEqual(await session.wait_for(rb"^i "), b"i BAD Expected DONE\r\n")

    @d
    async def test_logout_unsubscribes(self):
        session = await self.selected()
        await session.command(b"z LOGOUT")
        session.close()
        await self.deliver(SIMPLE)  # no subscriber left to write to a closed session
        self.assertEqual(self.store.changes._subscribers.get(self.mailbox.id), None)
