"""COPY and MOVE with UIDPLUS (RFC 3501, 6851, 4315), UID EXPUNGE, APPENDUID, ENABLE and ID."""

from __future__ import annotations

import re

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d


class CopyTests(IMAPTestCase):
    async def seed(self):
        """Three INBOX messages (UIDs 1-3), the second flagged and with a keyword."""
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART, flags=["\\Flagged", "$Work"])
        await self.deliver(SIMPLE, flags=["\\Seen"])
        return await self.store.get_folder(self.mailbox.id, "Archive")

    @d
    async def test_copy_answers_copyuid_matching_what_select_shows(self):
        archive = await self.seed()
        session = await self.selected()
        answer = await session.command(b"a COPY 1:3 Archive")
        self.assertEqual(
            answer, b"a OK [COPYUID %d 1:3 1:3] COPY completed\r\n" % archive.uid_validity
        )
        answer = await session.command(b"b SELECT Archive")
        self.assertIn(b"* 3 EXISTS\r\n", answer)
        self.assertIn(b"[UIDVALIDITY %d]" % archive.uid_validity, answer)
        answer = await session.command(b"c UID FETCH 1:* (FLAGS)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 FLAGS ())\r\n"
            b"* 2 FETCH (UID 2 FLAGS (\\Flagged $Work))\r\n"
            b"* 3 FETCH (UID 3 FLAGS (\\Seen))\r\n"
            b"c OK FETCH completed\r\n",
        )

    @d
    async def test_uid_copy_of_a_sparse_set_pairs_uids_in_order(self):
        archive = await self.seed()
        await self.deliver(SIMPLE, folder="Archive")
        session = await self.selected()
        answer = await session.command(b"a UID COPY 3,1,7:9 Archive")
        self.assertEqual(
            answer, b"a OK [COPYUID %d 1,3 2:3] COPY completed\r\n" % archive.uid_validity
        )
        rows = await self.store.list_folder_messages(archive.id)
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        originals = {r.uid: r for r in await self.store.list_folder_messages(inbox.id)}
        self.assertEqual(rows[1].message_id, originals[1].message_id)
        self.assertEqual(rows[2].message_id, originals[3].message_id)
        self.assertEqual(rows[2].internal_date, originals[3].internal_date)

    @d
    async def test_copy_shares_the_stored_message_and_counts_quota(self):
        await self.seed()
        session = await self.selected()
        before = await self.store.get_mailbox(self.mailbox.id)
        await session.command(b"a COPY 2 Archive")
        after = await self.store.get_mailbox(self.mailbox.id)
        self.assertEqual(after.used_bytes, before.used_bytes + len(MULTIPART))
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        [(copy, copy_info)] = await self.store.get_messages(archive.id, [1])
        [(orig, orig_info)] = await self.store.get_messages(inbox.id, [2])
        self.assertNotEqual(copy.id, orig.id)
        self.assertEqual(copy_info.id, orig_info.id)
        self.assertEqual(copy_info.blob_key, orig_info.blob_key)

    @d
    async def test_copy_over_quota_copies_nothing(self):
        await self.seed()
        used = (await self.store.get_mailbox(self.mailbox.id)).used_bytes
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=used + len(SIMPLE))
        session = await self.selected()
        answer = await session.command(b"a COPY 1:3 Archive")
        self.assertEqual(answer, b"a NO [OVERQUOTA] Mailbox is over its quota\r\n")
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        self.assertEqual(await self.store.list_folder_messages(archive.id), [])
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, used)
        answer = await session.command(b"b COPY 1 Archive")
        self.assertIn(b"b OK [COPYUID", answer)

    @d
    async def test_copy_to_missing_folder_and_malformed_copy(self):
        await self.seed()
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a COPY 1 Nowhere"), b"a NO [TRYCREATE] No such mailbox\r\n"
        )
        self.assertEqual(
            await session.command(b"b COPY"), b"b BAD COPY needs a message set and a mailbox\r\n"
        )
        self.assertEqual(
            await session.command(b"c COPY x Archive"), b"c BAD invalid sequence set 'x'\r\n"
        )
        self.assertEqual(
            await session.command(b"d UID MOVE 1"),
            b"d BAD MOVE needs a message set and a mailbox\r\n",
        )
        self.assertEqual(await session.command(b"e NOOP"), b"e OK NOOP completed\r\n")
        session2 = await self.login()
        self.assertEqual(
            await session2.command(b"f COPY 1 Archive"),
            b"f BAD Command not valid in this state\r\n",
        )

    @d
    async def test_copy_of_nothing_has_no_copyuid(self):
        await self.seed()
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a UID COPY 100:200 Archive"), b"a OK COPY completed\r\n"
        )

    @d
    async def test_copy_into_the_selected_folder_reports_exists(self):
        inbox_uv = (await self.store.get_folder(self.mailbox.id, "INBOX")).uid_validity
        await self.seed()
        session = await self.selected()
        answer = await session.command(b"a COPY 1 INBOX")
        self.assertEqual(
            answer, b"* 4 EXISTS\r\na OK [COPYUID %d 1 4] COPY completed\r\n" % inbox_uv
        )


class MoveTests(IMAPTestCase):
    async def seed(self):
        for flags in ([], ["\\Flagged"], []):
            await self.deliver(SIMPLE, flags=flags)
        return await self.store.get_folder(self.mailbox.id, "Archive")

    @d
    async def test_rfc6851_move_example_shape(self):
        archive = await self.seed()
        session = await self.selected()
        answer = await session.command(b"a UID MOVE 2:3 Archive")
        self.assertEqual(
            answer,
            b"* OK [COPYUID %d 2:3 1:2] Moved UIDs\r\n"
            b"* 3 EXPUNGE\r\n"
            b"* 2 EXPUNGE\r\n"
            b"a OK MOVE completed\r\n" % archive.uid_validity,
        )
        self.assertEqual(
            await session.command(b"b FETCH 1:* (UID)"),
            b"* 1 FETCH (UID 1)\r\nb OK FETCH completed\r\n",
        )
        rows = await self.store.list_folder_messages(archive.id)
        self.assertEqual([(r.uid, r.flagged) for r in rows], [(1, True), (2, False)])
        # A later NOOP has nothing more to say about the moved messages.
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")

    @d
    async def test_move_keeps_quota_and_is_refused_read_only(self):
        await self.seed()
        used = (await self.store.get_mailbox(self.mailbox.id)).used_bytes
        session = await self.selected(command=b"EXAMINE")
        self.assertEqual(
            await session.command(b"a MOVE 1 Archive"), b"a NO [READ-ONLY] Mailbox is read-only\r\n"
        )
        await session.command(b"b SELECT INBOX")
        answer = await session.command(b"c MOVE 1 Archive")
        self.assertIn(b"* 1 EXPUNGE\r\nc OK MOVE completed\r\n", answer)
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, used)
        self.assertEqual(
            await session.command(b"d MOVE 1 Nowhere"), b"d NO [TRYCREATE] No such mailbox\r\n"
        )

    @d
    async def test_move_seen_from_other_sessions_in_idle(self):
        await self.seed()
        source = await self.selected()
        target = await self.selected(b"Archive")
        for watcher in (source, target):
            watcher.send(b"i IDLE\r\n")
            await watcher.wait_for(rb"^\+ idling\r\n")
        mover = await self.selected()
        answer = await mover.command(b"a MOVE 1:2 Archive")
        self.assertIn(b"a OK MOVE completed", answer)
        self.assertEqual(
            await source.wait_for(rb"\* 1 EXPUNGE\r\n"), b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
        )
        self.assertEqual(await target.wait_for(rb"EXISTS\r\n"), b"* 2 EXISTS\r\n")
        for watcher in (source, target):
            watcher.send(b"DONE\r\n")
            self.assertEqual(await watcher.wait_for(rb"^i "), b"i OK IDLE terminated\r\n")


class UIDPlusTests(IMAPTestCase):
    @d
    async def test_appenduid_matches_select_and_fetch(self):
        session = await self.login()
        session.send(b"a APPEND Archive (\\Seen) {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n")
        answer = await session.wait_for(rb"^a OK.*\r\n")
        uid_validity, uid = map(int, re.search(rb"\[APPENDUID (\d+) (\d+)\]", answer).groups())
        answer = await session.command(b"b SELECT Archive")
        self.assertIn(b"[UIDVALIDITY %d]" % uid_validity, answer)
        answer = await session.command(b"c UID FETCH %d (UID FLAGS RFC822.SIZE)" % uid)
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID %d FLAGS (\\Seen) RFC822.SIZE %d)\r\nc OK FETCH completed\r\n"
            % (uid, len(SIMPLE)),
        )

    @d
    async def test_uid_expunge_removes_only_the_given_uids(self):
        for _ in range(3):
            await self.deliver(SIMPLE, flags=["\\Deleted"])
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a UID EXPUNGE 2"),
            b"* 2 EXPUNGE\r\na OK EXPUNGE completed\r\n",
        )
        self.assertEqual(await session.command(b"b UID EXPUNGE 7:9"), b"b OK EXPUNGE completed\r\n")
        self.assertEqual(
            await session.command(b"c UID FETCH 1:* (UID)"),
            b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nc OK FETCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"d UID EXPUNGE"), b"d BAD UID EXPUNGE needs a UID set\r\n"
        )
        self.assertEqual(await session.command(b"e EXPUNGE 1"), b"e BAD unexpected arguments\r\n")


class EnableAndIdTests(IMAPTestCase):
    @d
    async def test_enable_of_unknown_capabilities_enables_none(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"t2 ENABLE X-GOOD-IDEA"),
            b"* ENABLED\r\nt2 OK ENABLE completed\r\n",
        )
        self.assertEqual(session.protocol.enabled, set())
        self.assertEqual(
            await session.command(b"t3 ENABLE"), b"t3 BAD ENABLE needs capability names\r\n"
        )
        self.assertEqual(
            await self.connect().command(b"t4 ENABLE CONDSTORE"),
            b"t4 BAD Command not valid in this state\r\n",
        )

    @d
    async def test_enable_turns_on_what_the_server_offers(self):
        session = await self.login()
        session.protocol.ENABLEABLE = (b"X-TEST",)
        self.assertEqual(
            await session.command(b"a ENABLE x-test X-TEST OTHER"),
            b"* ENABLED X-TEST\r\na OK ENABLE completed\r\n",
        )
        self.assertEqual(session.protocol.enabled, {b"X-TEST"})

    @d
    async def test_rfc2971_id_examples(self):
        session = self.connect()
        server_id = b'* ID ("name" "haitatsu" "version" "0.1.0")\r\n'
        self.assertEqual(
            await session.command(b"a023 ID NIL"), server_id + b"a023 OK ID completed\r\n"
        )
        answer = await session.command(
            b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")'
        )
        self.assertEqual(answer, server_id + b"a023 OK ID completed\r\n")
        await self.login(session)
        answer = await session.command(b'b ID ("name" NIL)')
        self.assertEqual(answer, server_id + b"b OK ID completed\r\n")

    @d
    async def test_malformed_id_is_bad(self):
        session = self.connect()
        for i, args in enumerate(
            [b"", b' ("name")', b" foo", b" (name x)", b' ("%s" "x")' % (b"n" * 31)]
        ):
            tag = b"t%d" % i
            answer = await session.command(tag + b" ID" + args)
            self.assertTrue(answer.startswith(tag + b" BAD "), answer)
        self.assertEqual(await session.command(b"z NOOP"), b"z OK NOOP completed\r\n")
