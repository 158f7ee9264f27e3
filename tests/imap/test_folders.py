"""Folder management over IMAP: CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB.

Exact responses, following the examples of RFC 3501 6.3.3-6.3.9 where there is one.
"""

from __future__ import annotations

import re

from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.imap.test_session import d


def listed(answer: bytes) -> list[bytes]:
    return [line for line in answer.split(b"\r\n") if line.startswith((b"* LIST", b"* LSUB"))]


class CreateTests(IMAPTestCase):
    @d
    async def test_rfc3501_create_example(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"A003 CREATE owatagusiam/"), b"A003 OK CREATE completed\r\n"
        )
        self.assertEqual(
            await session.command(b"A004 CREATE owatagusiam/blurdybloop"),
            b"A004 OK CREATE completed\r\n",
        )
        answer = await session.command(b'A005 LIST "" owatagusiam*')
        self.assertEqual(
            answer,
            b'* LIST (\\HasChildren) "/" "owatagusiam"\r\n'
            b'* LIST (\\HasNoChildren) "/" "owatagusiam/blurdybloop"\r\n'
            b"A005 OK LIST completed\r\n",
        )

    @d
    async def test_create_makes_the_intermediate_levels_as_folders(self):
        session = await self.login()
        self.assertIn(b"a OK", await session.command(b"a CREATE a/b/c"))
        answer = await session.command(b'b LIST "" a*')
        self.assertEqual(
            listed(answer),
            [
                b'* LIST (\\HasChildren) "/" "a"',
                b'* LIST (\\HasChildren) "/" "a/b"',
                b'* LIST (\\HasNoChildren) "/" "a/b/c"',
            ],
        )
        answer = await session.command(b"c SELECT a/b")
        self.assertIn(b"c OK [READ-WRITE] SELECT completed", answer)

    @d
    async def test_create_existing_names(self):
        session = await self.login()
        for i, name in enumerate([b"INBOX", b"inbox", b"Sent"]):
            tag = b"t%d" % i
            self.assertEqual(
                await session.command(tag + b" CREATE " + name),
                tag + b" NO [ALREADYEXISTS] Mailbox already exists\r\n",
            )
        await session.command(b"a CREATE Projects")
        self.assertEqual(
            await session.command(b"b CREATE Projects/"),
            b"b NO [ALREADYEXISTS] Mailbox already exists\r\n",
        )

    @d
    async def test_create_refuses_names_it_could_not_list_back(self):
        session = await self.login()
        for tag, name in [
            (b"a", b'"a//b"'),
            (b"b", b'""'),
            (b"c", b"a*"),
            (b"d", b'"x%"'),
            (b"e", b"&AGE-"),
            (b"f", b"bad&name"),
            (b"g", b"/"),
        ]:
            answer = await session.command(tag + b" CREATE " + name)
            self.assertTrue(answer.startswith(tag + b" NO [CANNOT] "), answer)
        folders = await self.store.list_folders(self.mailbox.id)
        self.assertEqual(len(folders), 6)

    @d
    async def test_malformed_create_is_bad_and_the_session_lives(self):
        session = await self.login()
        self.assertEqual(await session.command(b"a CREATE"), b"a BAD CREATE needs a mailbox\r\n")
        self.assertEqual(
            await session.command(b"b CREATE x y"),
            b"b BAD CREATE parameters must be a parenthesised list\r\n",
        )
        self.assertEqual(
            await session.command(b'c CREATE "unterminated'),
            b"c BAD unterminated quoted string\r\n",
        )
        self.assertEqual(await session.command(b"d NOOP"), b"d OK NOOP completed\r\n")
        self.assertEqual(
            await self.connect().command(b"e CREATE x"),
            b"e BAD Command not valid in this state\r\n",
        )


class ModifiedUTF7Tests(IMAPTestCase):
    @d
    async def test_entwuerfe_round_trip(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a CREATE Entw&APw-rfe"), b"a OK CREATE completed\r\n"
        )
        self.assertIsNotNone(await self.store.get_folder(self.mailbox.id, "Entwürfe"))
        answer = await session.command(b'b LIST "" Entw*')
        self.assertEqual(listed(answer), [b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"'])
        answer = await session.command(b"c SELECT Entw&APw-rfe")
        self.assertIn(b"c OK [READ-WRITE]", answer)

    @d
    async def test_names_from_the_store_are_encoded(self):
        await self.store.create_folder(self.mailbox.id, "~peter/mail/台北/日本語")
        await self.store.create_folder(self.mailbox.id, "R&D")
        session = await self.login()
        answer = await session.command(b'a LIST "" "~peter/mail/*"')
        self.assertEqual(
            listed(answer),
            [
                b'* LIST (\\HasChildren) "/" "~peter/mail/&U,BTFw-"',
                b'* LIST (\\HasNoChildren) "/" "~peter/mail/&U,BTFw-/&ZeVnLIqe-"',
            ],
        )
        answer = await session.command(b'b LIST "" R*')
        self.assertEqual(listed(answer), [b'* LIST (\\HasNoChildren) "/" "R&-D"'])

    @d
    async def test_raw_utf8_from_a_client_is_accepted(self):
        session = await self.login()
        name = "Grüße".encode()
        answer = await session.command(b"a CREATE {%d+}\r\n%s" % (len(name), name))
        self.assertEqual(answer, b"a OK CREATE completed\r\n")
        answer = await session.command(b'b LIST "" Gr*')
        encoded = "Grüße".encode("imap4-utf-7")
        self.assertEqual(listed(answer), [b'* LIST (\\HasNoChildren) "/" "%s"' % encoded])


class DeleteTests(IMAPTestCase):
    @d
    async def test_system_folders_cannot_be_deleted(self):
        session = await self.login()
        for i, name in enumerate([b"INBOX", b"inbox", b"Sent", b"Trash", b"Junk"]):
            tag = b"t%d" % i
            self.assertEqual(
                await session.command(tag + b" DELETE " + name),
                tag + b" NO [CANNOT] System folders cannot be deleted\r\n",
            )

    @d
    async def test_folder_with_children_is_refused(self):
        await self.store.create_folder(self.mailbox.id, "foo/bar")
        session = await self.login()
        self.assertEqual(
            await session.command(b"a DELETE foo"),
            b"a NO [HASCHILDREN] Mailbox has children; delete them first\r\n",
        )
        self.assertEqual(await session.command(b"b DELETE foo/bar"), b"b OK DELETE completed\r\n")
        self.assertEqual(await session.command(b"c DELETE foo"), b"c OK DELETE completed\r\n")
        self.assertEqual(
            await session.command(b"d DELETE foo"), b"d NO [NONEXISTENT] No such mailbox\r\n"
        )
        self.assertEqual(listed(await session.command(b'e LIST "" foo*')), [])

    @d
    async def test_delete_soft_deletes_messages_and_releases_quota(self):
        await self.store.create_folder(self.mailbox.id, "Old")
        await self.deliver(SIMPLE, folder="Old")
        await self.deliver(SIMPLE, folder="Old", flags=["\\Seen"])
        await self.deliver(SIMPLE)
        before = await self.store.get_mailbox(self.mailbox.id)
        self.assertEqual(before.used_bytes, 3 * len(SIMPLE))
        session = await self.login()
        self.assertEqual(await session.command(b"a DELETE Old"), b"a OK DELETE completed\r\n")
        after = await self.store.get_mailbox(self.mailbox.id)
        self.assertEqual(after.used_bytes, len(SIMPLE))
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        self.assertEqual(await self.store.list_folder_messages(trash.id), [])
        answer = await session.command(b"b STATUS Old (MESSAGES)")
        self.assertEqual(answer, b"b NO [NONEXISTENT] No such mailbox\r\n")

    @d
    async def test_recreated_folder_has_a_new_uidvalidity(self):
        session = await self.login()
        await session.command(b"a CREATE Reports")
        answer = await session.command(b"b SELECT Reports")
        first = re.search(rb"UIDVALIDITY (\d+)", answer).group(1)
        # Deleting the selected folder leaves the session unselected (as Dovecot does).
        self.assertEqual(await session.command(b"c DELETE Reports"), b"c OK DELETE completed\r\n")
        self.assertEqual(
            await session.command(b"d FETCH 1 FLAGS"), b"d BAD Command not valid in this state\r\n"
        )
        await session.command(b"e CREATE Reports")
        answer = await session.command(b"f SELECT Reports")
        second = re.search(rb"UIDVALIDITY (\d+)", answer).group(1)
        self.assertNotEqual(first, second)
        self.assertGreater(int(second), int(first))

    @d
    async def test_other_session_with_the_folder_selected_is_told_bye(self):
        await self.store.create_folder(self.mailbox.id, "Doomed")
        watcher = await self.selected(b"Doomed")
        session = await self.login()
        self.assertEqual(await session.command(b"a DELETE Doomed"), b"a OK DELETE completed\r\n")
        watcher.send(b"b NOOP\r\n")
        answer = await watcher.wait_for(rb"\* BYE .*\r\n")
        self.assertEqual(answer, b"* BYE Selected mailbox was deleted, have to disconnect\r\n")
        self.assertTrue(watcher.transport.disconnecting)

    @d
    async def test_idle_session_with_the_folder_selected_is_told_bye(self):
        await self.store.create_folder(self.mailbox.id, "Doomed")
        watcher = await self.selected(b"Doomed")
        watcher.send(b"i IDLE\r\n")
        await watcher.wait_for(rb"^\+ idling\r\n")
        folder = await self.store.get_folder(self.mailbox.id, "Doomed")
        await self.store.delete_folder(folder.id)
        answer = await watcher.wait_for(rb"\* BYE .*\r\n")
        self.assertEqual(answer, b"* BYE Selected mailbox was deleted, have to disconnect\r\n")
        # trial fails the test if the refresh logged a failure on its way out
        self.assertTrue(watcher.transport.disconnecting)


class RenameTests(IMAPTestCase):
    @d
    async def test_rfc3501_rename_example(self):
        await self.store.create_folder(self.mailbox.id, "blurdybloop")
        await self.store.create_folder(self.mailbox.id, "foo/bar", create_parents=False)
        await self.deliver(SIMPLE, folder="foo/bar")
        bar = await self.store.get_folder(self.mailbox.id, "foo/bar")
        session = await self.login()
        answer = await session.command(b'A682 LIST "" *')
        self.assertEqual(
            listed(answer)[-3:],
            [
                b'* LIST (\\HasNoChildren) "/" "blurdybloop"',
                b'* LIST (\\Noselect \\HasChildren) "/" "foo"',
                b'* LIST (\\HasNoChildren) "/" "foo/bar"',
            ],
        )
        self.assertEqual(
            await session.command(b"A683 RENAME blurdybloop sarasoop"),
            b"A683 OK RENAME completed\r\n",
        )
        self.assertEqual(
            await session.command(b"A684 RENAME foo zowie"),
            b"A684 NO [NONEXISTENT] No such mailbox\r\n",
        )
        # foo exists here only as a level; rename its folder instead, children move along.
        await session.command(b"x CREATE foo")
        self.assertEqual(
            await session.command(b"A684 RENAME foo zowie"), b"A684 OK RENAME completed\r\n"
        )
        answer = await session.command(b'A685 LIST "" *')
        names = [line.rsplit(b" ", 1)[1] for line in listed(answer)]
        self.assertEqual(
            names,
            [b'"INBOX"', b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
            + [b'"sarasoop"', b'"zowie"', b'"zowie/bar"'],
        )
        moved = await self.store.get_folder(self.mailbox.id, "zowie/bar")
        self.assertEqual((moved.id, moved.uid_validity), (bar.id, bar.uid_validity))
        answer = await session.command(b"y STATUS zowie/bar (MESSAGES UIDVALIDITY)")
        self.assertIn(b"(MESSAGES 1 UIDVALIDITY %d)" % bar.uid_validity, answer)

    @d
    async def test_rename_creates_missing_parents(self):
        await self.store.create_folder(self.mailbox.id, "Lists")
        session = await self.login()
        self.assertIn(b"a OK", await session.command(b"a RENAME Lists Archive/2024/Lists"))
        answer = await session.command(b'b LIST "" Archive*')
        self.assertEqual(
            listed(answer),
            [
                b'* LIST (\\HasChildren \\Archive) "/" "Archive"',
                b'* LIST (\\HasChildren) "/" "Archive/2024"',
                b'* LIST (\\HasNoChildren) "/" "Archive/2024/Lists"',
            ],
        )

    @d
    async def test_rename_refusals(self):
        await self.store.create_folder(self.mailbox.id, "a/b")
        await self.store.create_folder(self.mailbox.id, "c")
        session = await self.login()
        cases = [
            (b"RENAME Sent Outbox", b"NO [CANNOT] System folders cannot be renamed"),
            (b"RENAME Trash a/Trash", b"NO [CANNOT] System folders cannot be renamed"),
            (b"RENAME c a", b"NO [ALREADYEXISTS] Mailbox already exists"),
            (b"RENAME c inbox", b"NO [ALREADYEXISTS] Mailbox already exists"),
            (b"RENAME nowhere x", b"NO [NONEXISTENT] No such mailbox"),
            (b"RENAME a a/b/c", b"NO [CANNOT] A folder cannot be moved below itself"),
            (b'RENAME c "c*"', b"NO [CANNOT] Mailbox name cannot be used"),
            (b"RENAME c", b"BAD RENAME needs two mailbox names"),
        ]
        for i, (command, expected) in enumerate(cases):
            tag = b"t%d" % i
            self.assertEqual(
                await session.command(tag + b" " + command), tag + b" " + expected + b"\r\n"
            )
        self.assertEqual(await session.command(b"z NOOP"), b"z OK NOOP completed\r\n")

    @d
    async def test_rename_collision_among_children(self):
        await self.store.create_folder(self.mailbox.id, "a/x")
        await self.store.create_folder(self.mailbox.id, "b/x", create_parents=False)
        session = await self.login()
        self.assertEqual(
            await session.command(b"a RENAME a b"),
            b"a NO [ALREADYEXISTS] Mailbox already exists\r\n",
        )
        self.assertIsNotNone(await self.store.get_folder(self.mailbox.id, "a/x"))

    @d
    async def test_rename_inbox_moves_its_messages_to_a_new_folder(self):
        await self.deliver(SIMPLE, flags=["\\Flagged"])
        await self.deliver(SIMPLE)
        await self.store.create_folder(self.mailbox.id, "INBOX/keep")
        await self.deliver(SIMPLE, folder="INBOX/keep")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.selected()
        answer = await session.command(b"a RENAME INBOX old-mail")
        self.assertEqual(answer, b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\na OK RENAME completed\r\n")
        answer = await session.command(b"b STATUS INBOX (MESSAGES UIDVALIDITY)")
        self.assertIn(b'"INBOX" (MESSAGES 0 UIDVALIDITY %d)' % inbox.uid_validity, answer)
        answer = await session.command(b"c STATUS old-mail (MESSAGES)")
        self.assertIn(b'"old-mail" (MESSAGES 2)', answer)
        answer = await session.command(b"d STATUS INBOX/keep (MESSAGES)")
        self.assertIn(b"(MESSAGES 1)", answer)
        old = await self.store.get_folder(self.mailbox.id, "old-mail")
        rows = await self.store.list_folder_messages(old.id)
        self.assertEqual([(r.uid, r.flagged) for r in rows], [(1, True), (2, False)])
        self.assertNotEqual(old.uid_validity, inbox.uid_validity)


class SubscriptionTests(IMAPTestCase):
    @d
    async def test_unsubscribe_and_subscribe_change_lsub(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a UNSUBSCRIBE Junk"), b"a OK UNSUBSCRIBE completed\r\n"
        )
        lsub = listed(await session.command(b'b LSUB "" *'))
        self.assertNotIn(b'* LSUB (\\HasNoChildren \\Junk) "/" "Junk"', lsub)
        self.assertIn(b'* LSUB (\\HasNoChildren \\Trash) "/" "Trash"', lsub)
        self.assertIn(
            b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
            listed(await session.command(b'c LIST "" *')),
        )
        self.assertEqual(
            await session.command(b"d SUBSCRIBE Junk"), b"d OK SUBSCRIBE completed\r\n"
        )
        self.assertIn(
            b'* LSUB (\\HasNoChildren \\Junk) "/" "Junk"',
            listed(await session.command(b'e LSUB "" *')),
        )
        self.assertFalse((await self.store.get_folder(self.mailbox.id, "Junk")).subscribed is False)

    @d
    async def test_lsub_percent_lists_an_unsubscribed_parent_noselect(self):
        await self.store.create_folder(self.mailbox.id, "foo/bar")
        session = await self.login()
        await session.command(b"a UNSUBSCRIBE foo")
        self.assertEqual(
            listed(await session.command(b'b LSUB "" fo%')),
            [b'* LSUB (\\Noselect \\HasChildren) "/" "foo"'],
        )
        self.assertEqual(
            listed(await session.command(b'c LSUB "" fo*')),
            [b'* LSUB (\\HasNoChildren) "/" "foo/bar"'],
        )

    @d
    async def test_subscription_errors(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a SUBSCRIBE nowhere"), b"a NO [NONEXISTENT] No such mailbox\r\n"
        )
        self.assertEqual(
            await session.command(b"b UNSUBSCRIBE nowhere"),
            b"b NO [NONEXISTENT] No such mailbox\r\n",
        )
        self.assertEqual(
            await session.command(b"c UNSUBSCRIBE"), b"c BAD UNSUBSCRIBE needs a mailbox\r\n"
        )
