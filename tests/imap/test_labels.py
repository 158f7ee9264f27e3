"""Labels as IMAP folders (API.md 5.5, docs/imap.md "Labels as folders"): exact responses.

``LabelFolderTests`` holds the tests; they run on SQLite and, with
``HAITATSU_TEST_POSTGRES_DSN`` set, on PostgreSQL (its change bus is LISTEN/NOTIFY, so what
another session hears arrives asynchronously, as between nodes).
"""

from __future__ import annotations

from tests.imap import helpers
from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, changes_settled, make_pg_store

OTHER = b"From: x@example.test\r\nSubject: other\r\n\r\nother\r\n"


def listed(answer: bytes) -> list[bytes]:
    return [line for line in answer.split(b"\r\n") if line.startswith((b"* LIST", b"* LSUB"))]


class LabelFolderTests:
    """Mixed into an ``IMAPTestCase`` that says which store it runs on."""

    async def label(self, name: str, *placed):
        label = await self.store.create_label(self.mailbox.id, name)
        for mm in placed:
            await self.store.add_message_label(mm.id, label.id)
        return await self.store.get_label(label.id)

    async def folder_of(self, mm_id):
        """(folder name, flags) of a live mailbox_message, or None once it is gone."""
        view = await self.store.get_message_view(mm_id)
        if view is None:
            return None
        folder = await self.store.get_folder_by_id(view[0].folder_id)
        return folder.name, view[0].flags

    async def labels_of(self, mm_id) -> list[str]:
        return [label.name for label in (await self.store.labels_of([mm_id])).get(mm_id, [])]

    # -- LIST, LSUB, STATUS ----------------------------------------------------------------

    @d
    async def test_labels_are_listed_under_a_noselect_root(self):
        session = await self.login()
        before = listed(await session.command(b'a LIST "" "*"'))
        self.assertFalse([line for line in before if b"Labels" in line])
        await self.label("Work")
        await self.label("Reisen/2024")
        await self.label("Entwürfe")
        answer = await session.command(b'b LIST "" "*"')
        self.assertEqual(
            listed(answer),
            [
                b'* LIST (\\HasNoChildren) "/" "INBOX"',
                b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
                b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
                b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
                b'* LIST (\\Noselect \\HasChildren) "/" "Labels"',
                b'* LIST (\\HasNoChildren) "/" "Labels/Entw&APw-rfe"',
                b'* LIST (\\Noselect \\HasChildren) "/" "Labels/Reisen"',
                b'* LIST (\\HasNoChildren) "/" "Labels/Reisen/2024"',
                b'* LIST (\\HasNoChildren) "/" "Labels/Work"',
                b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
                b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
            ],
        )
        self.assertEqual(
            await session.command(b'c LIST "" "Labels/%"'),
            b'* LIST (\\HasNoChildren) "/" "Labels/Entw&APw-rfe"\r\n'
            b'* LIST (\\Noselect \\HasChildren) "/" "Labels/Reisen"\r\n'
            b'* LIST (\\HasNoChildren) "/" "Labels/Work"\r\n'
            b"c OK LIST completed\r\n",
        )
        self.assertEqual(
            await session.command(b'd LIST "" "%"'),
            b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
            b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"\r\n'
            b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n'
            b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n'
            b'* LIST (\\Noselect \\HasChildren) "/" "Labels"\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n'
            b"d OK LIST completed\r\n",
        )
        # The root and the implied level cannot be selected.
        for tag, name in ((b"e", b"Labels"), (b"f", b"Labels/Reisen")):
            self.assertEqual(
                await session.command(tag + b" SELECT " + name),
                tag + b" NO [NONEXISTENT] No such mailbox\r\n",
            )

    @d
    async def test_lsub_subscribe_and_list_extended(self):
        await self.label("Work")
        await self.label("Play")
        session = await self.login()
        self.assertEqual(
            await session.command(b"a UNSUBSCRIBE Labels/Play"), b"a OK UNSUBSCRIBE completed\r\n"
        )
        self.assertFalse((await self.store.get_label_by_name(self.mailbox.id, "Play")).subscribed)
        self.assertEqual(
            await session.command(b'b LSUB "" "Labels/*"'),
            b'* LSUB (\\HasNoChildren) "/" "Labels/Work"\r\nb OK LSUB completed\r\n',
        )
        self.assertEqual(
            await session.command(b'c LIST (SUBSCRIBED RECURSIVEMATCH) "" "Labels%"'),
            b'* LIST (\\Noselect \\HasChildren) "/" "Labels" ("CHILDINFO" ("SUBSCRIBED"))\r\n'
            b"c OK LIST completed\r\n",
        )
        self.assertEqual(
            await session.command(b'c2 LIST (SUBSCRIBED) "" "Labels*"'),
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Labels/Work"\r\nc2 OK LIST completed\r\n',
        )
        self.assertEqual(
            await session.command(b"d SUBSCRIBE Labels/Play"), b"d OK SUBSCRIBE completed\r\n"
        )
        self.assertIn(b'"Labels/Play"', await session.command(b'e LSUB "" "*"'))
        self.assertEqual(
            await session.command(b"f SUBSCRIBE Labels/Nope"),
            b"f NO [NONEXISTENT] No such mailbox\r\n",
        )

    @d
    async def test_status_and_list_status(self):
        inbox = await self.deliver(SIMPLE, flags=["\\Seen"])
        archived = await self.deliver(MULTIPART, folder="Archive")
        label = await self.label("Work", inbox, archived)
        session = await self.login()
        self.assertEqual(
            await session.command(
                b"a STATUS Labels/Work (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ "
                b"SIZE DELETED)"
            ),
            b'* STATUS "Labels/Work" (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY %d UNSEEN 1 '
            b"HIGHESTMODSEQ 0 SIZE %d DELETED 0)\r\n"
            b"a OK STATUS completed\r\n" % (label.uid_validity, len(SIMPLE) + len(MULTIPART)),
        )
        self.assertEqual(
            await session.command(b'b LIST "" "Labels/*" RETURN (STATUS (MESSAGES UIDVALIDITY))'),
            b'* LIST (\\HasNoChildren) "/" "Labels/Work"\r\n'
            b'* STATUS "Labels/Work" (MESSAGES 2 UIDVALIDITY %d)\r\n'
            b"b OK LIST completed\r\n" % label.uid_validity,
        )
        self.assertEqual(
            await session.command(b"c STATUS Labels (MESSAGES)"),
            b"c NO [NONEXISTENT] No such mailbox\r\n",
        )

    # -- CREATE, DELETE, RENAME ------------------------------------------------------------

    @d
    async def test_create_makes_a_label(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a CREATE Labels/Work"), b"a OK CREATE completed\r\n"
        )
        self.assertEqual(
            await session.command(b"b CREATE Labels/Entw&APw-rfe/2024"),
            b"b OK CREATE completed\r\n",
        )
        labels = {label.name: label for label in await self.store.list_labels(self.mailbox.id)}
        self.assertEqual(sorted(labels), ["Entwürfe/2024", "Work"])
        # Labels are not folders: no folder of either name was made.
        folders = [f.name for f in await self.store.list_folders(self.mailbox.id)]
        self.assertFalse([name for name in folders if name.startswith("Labels")])
        folders = {f.uid_validity for f in await self.store.list_folders(self.mailbox.id)}
        self.assertFalse(folders & {label.uid_validity for label in labels.values()})
        for tag, name, answer in (
            (b"c", b"Labels/Work", b"NO [ALREADYEXISTS] Mailbox already exists"),
            (b"d", b"Labels", b"NO [CANNOT] Labels holds the labels: create Labels/<name> "),
            (b"e", b"Labels/", b"NO [CANNOT] Labels holds the labels: create Labels/<name> "),
            (b"f", b"Labels/a/../b", b'NO [CANNOT] "." and ".." are not allowed as a label '),
            (b"g", b"Labels/a//b", b"NO [CANNOT] Empty level in folder name"),
            (b"h", b"Labels/*", b"NO [CANNOT] Mailbox name cannot be used"),
        ):
            got = await session.command(tag + b" CREATE " + name)
            self.assertTrue(got.startswith(tag + b" " + answer), got)
        self.assertEqual(len(await self.store.list_labels(self.mailbox.id)), 2)

    @d
    async def test_delete_removes_the_label_not_the_messages(self):
        mm = await self.deliver(SIMPLE)
        await self.label("Work", mm)
        await self.label("Work/Old")
        session = await self.login()
        # A label with labels below it is deleted alone: Labels/Work stays as a level.
        self.assertEqual(
            await session.command(b"a DELETE Labels/Work"), b"a OK DELETE completed\r\n"
        )
        self.assertEqual(await self.labels_of(mm.id), [])
        self.assertEqual(await self.folder_of(mm.id), ("INBOX", ()))
        self.assertEqual(
            listed(await session.command(b'b LIST "" "Labels/*"')),
            [
                b'* LIST (\\Noselect \\HasChildren) "/" "Labels/Work"',
                b'* LIST (\\HasNoChildren) "/" "Labels/Work/Old"',
            ],
        )
        for tag, name, answer in (
            (b"c", b"Labels/Work", b"NO [NONEXISTENT] No such mailbox"),
            (b"d", b"Labels", b"NO [NONEXISTENT] No such mailbox"),
        ):
            self.assertEqual(
                await session.command(tag + b" DELETE " + name), tag + b" " + answer + b"\r\n"
            )
        self.assertEqual(
            await session.command(b"e DELETE Labels/Work/Old"), b"e OK DELETE completed\r\n"
        )
        self.assertEqual(listed(await session.command(b'f LIST "" "Labels*"')), [])
        audit = [
            e.event_type for e in await self.store.list_audit_events(mailbox_id=self.mailbox.id)
        ]
        self.assertEqual(audit[:2], ["label.deleted", "label.deleted"])

    @d
    async def test_rename_within_labels_and_refused_across(self):
        mm = await self.deliver(SIMPLE)
        work = await self.label("Work", mm)
        child = await self.label("Work/2024")
        await self.label("Play")
        session = await self.login()
        self.assertEqual(
            await session.command(b"a RENAME Labels/Work Labels/Job"), b"a OK RENAME completed\r\n"
        )
        renamed = await self.store.get_label(work.id)
        self.assertEqual((renamed.name, renamed.uid_validity), ("Job", work.uid_validity))
        self.assertEqual((await self.store.get_label(child.id)).name, "Job/2024")
        self.assertEqual(await self.labels_of(mm.id), ["Job"])
        for tag, old, new, answer in (
            (b"b", b"Labels/Job", b"Labels/Play", b"NO [ALREADYEXISTS] Mailbox already exists"),
            (
                b"c",
                b"Labels/Job",
                b"Job",
                b"NO [CANNOT] A label can only be renamed within Labels/",
            ),
            (
                b"d",
                b"INBOX",
                b"Labels/Inbox",
                b"NO [CANNOT] A folder cannot be renamed into a label",
            ),
            (
                b"e",
                b"Archive",
                b"Labels/Archive",
                b"NO [CANNOT] A folder cannot be renamed into a label",
            ),
            (b"f", b"Labels/Job", b"Labels", b"NO [CANNOT] Labels holds the labels: create"),
            (
                b"g",
                b"Labels/Job",
                b"Labels/Job/Sub",
                b"NO [CANNOT] A label cannot be moved below itself",
            ),
            (b"h", b"Labels/Nope", b"Labels/Other", b"NO [NONEXISTENT] No such mailbox"),
            (b"i", b"Labels", b"Stuff", b"NO [NONEXISTENT] No such mailbox"),
        ):
            got = await session.command(tag + b" RENAME " + old + b" " + new)
            self.assertTrue(got.startswith(tag + b" " + answer), got)
        self.assertEqual(
            sorted(label.name for label in await self.store.list_labels(self.mailbox.id)),
            ["Job", "Job/2024", "Play"],
        )
        self.assertIsNotNone(await self.store.get_folder(self.mailbox.id, "Archive"))

    # -- a label view ----------------------------------------------------------------------

    @d
    async def test_select_fetch_search_store_expunge(self):
        first = await self.deliver(SIMPLE)
        await self.deliver(OTHER)
        archived = await self.deliver(MULTIPART, folder="Archive", flags=["\\Seen"])
        label = await self.label("Work", archived, first)  # links in this order: UIDs 1, 2
        session = await self.login()
        self.assertEqual(
            await session.command(b"a SELECT Labels/Work"),
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
            b"Flags permitted\r\n"
            b"* 2 EXISTS\r\n"
            b"* 0 RECENT\r\n"
            b"* OK [UNSEEN 2] First unseen message\r\n"
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
            b"* OK [UIDNEXT 3] Predicted next UID\r\n"
            b"* OK [NOMODSEQ] No MODSEQs in a label\r\n"
            b"a OK [READ-WRITE] SELECT completed\r\n" % label.uid_validity,
        )
        self.assertEqual(
            await session.command(b"b FETCH 1:* (UID FLAGS RFC822.SIZE)"),
            b"* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE %d)\r\n"
            b"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE %d)\r\n"
            b"b OK FETCH completed\r\n" % (len(MULTIPART), len(SIMPLE)),
        )
        self.assertEqual(
            await session.command(b"c UID FETCH 2 (BODY[HEADER.FIELDS (SUBJECT)])"),
            b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {28}\r\n"
            b"Subject: Lunch on Friday\r\n\r\n FLAGS (\\Seen))\r\n"
            b"c OK FETCH completed\r\n",
        )
        # The flag is the message's own: INBOX shows it too.
        self.assertEqual(await self.folder_of(first.id), ("INBOX", ("\\Seen",)))
        self.assertEqual(
            await session.command(b"d UID SEARCH SUBJECT lunch"),
            b"* SEARCH 2\r\nd OK SEARCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"e STORE 1 +FLAGS (\\Flagged $Work)"),
            b"* 1 FETCH (FLAGS (\\Seen \\Flagged $Work))\r\ne OK STORE completed\r\n",
        )
        self.assertEqual(
            await self.folder_of(archived.id), ("Archive", ("\\Seen", "\\Flagged", "$Work"))
        )
        self.assertEqual(
            await session.command(b"f STORE 1:2 +FLAGS.SILENT (\\Deleted)"),
            b"f OK STORE completed\r\n",
        )
        # EXPUNGE in a label view removes the label; the messages stay, without \Deleted.
        self.assertEqual(
            await session.command(b"g UID EXPUNGE 2"),
            b"* 2 EXPUNGE\r\ng OK EXPUNGE completed\r\n",
        )
        self.assertEqual(await self.folder_of(first.id), ("INBOX", ("\\Seen",)))
        self.assertEqual(await self.labels_of(first.id), [])
        self.assertEqual(await self.labels_of(archived.id), ["Work"])
        self.assertEqual(
            await session.command(b"h EXPUNGE"), b"* 1 EXPUNGE\r\nh OK EXPUNGE completed\r\n"
        )
        self.assertEqual(
            await self.folder_of(archived.id), ("Archive", ("\\Seen", "\\Flagged", "$Work"))
        )
        self.assertEqual(await self.store.list_label_messages(label.id), [])
        # A message linked again comes back under a new UID.
        await self.store.add_message_label(first.id, label.id)
        await changes_settled(self.store)
        self.assertEqual(await session.command(b"i NOOP"), b"* 1 EXISTS\r\ni OK NOOP completed\r\n")
        self.assertEqual(
            await session.command(b"j FETCH 1 UID"),
            b"* 1 FETCH (UID 3)\r\nj OK FETCH completed\r\n",
        )

    @d
    async def test_examine_is_read_only_and_close_expunges(self):
        mm = await self.deliver(SIMPLE, flags=["\\Deleted"])
        await self.label("Work", mm)
        session = await self.login()
        answer = await session.command(b"a EXAMINE Labels/Work")
        self.assertIn(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n", answer)
        self.assertTrue(answer.endswith(b"a OK [READ-ONLY] EXAMINE completed\r\n"))
        self.assertEqual(
            await session.command(b"b STORE 1 -FLAGS (\\Deleted)"),
            b"b NO [READ-ONLY] Mailbox is read-only\r\n",
        )
        self.assertEqual(await session.command(b"c CLOSE"), b"c OK CLOSE completed\r\n")
        self.assertEqual(await self.labels_of(mm.id), ["Work"])
        await session.command(b"d SELECT Labels/Work")
        self.assertEqual(await session.command(b"e CLOSE"), b"e OK CLOSE completed\r\n")
        self.assertEqual(await self.labels_of(mm.id), [])
        self.assertEqual(await self.folder_of(mm.id), ("INBOX", ()))

    @d
    async def test_condstore_in_a_label_view_is_nomodseq(self):
        mm = await self.deliver(SIMPLE)
        await self.label("Work", mm)
        session = await self.login()
        await session.command(b"a ENABLE CONDSTORE")
        answer = await session.command(b"b SELECT Labels/Work (CONDSTORE)")
        self.assertIn(b"* OK [NOMODSEQ] No MODSEQs in a label\r\n", answer)
        self.assertNotIn(b"HIGHESTMODSEQ", answer)
        self.assertEqual(
            await session.command(b"c FETCH 1 (FLAGS)"),
            b"* 1 FETCH (FLAGS ())\r\nc OK FETCH completed\r\n",
        )
        self.assertEqual(
            await session.command(b"d STORE 1 +FLAGS (\\Seen)"),
            b"* 1 FETCH (FLAGS (\\Seen))\r\nd OK STORE completed\r\n",
        )
        bad = b" BAD this mailbox has no MODSEQs (NOMODSEQ)\r\n"
        for tag, command in (
            (b"e", b"FETCH 1 (MODSEQ)"),
            (b"f", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)"),
            (b"g", b"STORE 1 (UNCHANGEDSINCE 9) +FLAGS (\\Flagged)"),
            (b"h", b"SEARCH MODSEQ 1"),
        ):
            self.assertEqual(await session.command(tag + b" " + command), tag + bad)
        # Other mailboxes keep their MODSEQs.
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(
            await session.command(b"i STATUS INBOX (HIGHESTMODSEQ)"),
            b'* STATUS "INBOX" (HIGHESTMODSEQ %d)\r\ni OK STATUS completed\r\n'
            % inbox.highest_modseq,
        )
        answer = await session.command(b"j SELECT INBOX")
        self.assertIn(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % inbox.highest_modseq, answer)
        self.assertEqual(
            await session.command(b"k FETCH 1 (FLAGS)"),
            b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))\r\nk OK FETCH completed\r\n"
            % inbox.highest_modseq,
        )

    # -- COPY, MOVE, APPEND --------------------------------------------------------------------

    @d
    async def test_copy_and_move_into_a_label(self):
        a = await self.deliver(SIMPLE)
        b = await self.deliver(OTHER)
        label = await self.label("Work")
        session = await self.login()
        await session.command(b"a SELECT INBOX")
        v = label.uid_validity
        self.assertEqual(
            await session.command(b"b COPY 1 Labels/Work"),
            b"b OK [COPYUID %d 1 1] COPY completed\r\n" % v,
        )
        self.assertEqual(await self.labels_of(a.id), ["Work"])
        self.assertEqual(await self.folder_of(a.id), ("INBOX", ()))
        # Copying again changes nothing: the message keeps its UID in the label.
        self.assertEqual(
            await session.command(b"c UID COPY 1:2 Labels/Work"),
            b"c OK [COPYUID %d 1:2 1:2] COPY completed\r\n" % v,
        )
        # MOVE into a label: labelled, and out of INBOX into Archive (Gmail's "archive").
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        self.assertEqual(
            await session.command(b"d MOVE 2 Labels/Work"),
            b"* OK [COPYUID %d 2 2] Moved UIDs\r\n* 2 EXPUNGE\r\nd OK MOVE completed\r\n" % v,
        )
        self.assertEqual(await self.folder_of(b.id), ("Archive", ()))
        self.assertEqual(await self.labels_of(b.id), ["Work"])
        self.assertEqual(
            await session.command(b"e COPY 1 Labels/Nope"),
            b"e NO [TRYCREATE] No such mailbox\r\n",
        )
        self.assertEqual(
            await session.command(b"f STATUS Labels/Work (MESSAGES UIDNEXT)"),
            b'* STATUS "Labels/Work" (MESSAGES 2 UIDNEXT 3)\r\nf OK STATUS completed\r\n',
        )
        # From Archive itself a MOVE into a label gives the message a new UID there.
        await session.command(b"g SELECT Archive")
        await self.label("Play")
        play = await self.store.get_label_by_name(self.mailbox.id, "Play")
        answer = await session.command(b"h UID MOVE 1 Labels/Play")
        self.assertEqual(
            answer,
            b"* OK [COPYUID %d 1 1] Moved UIDs\r\n* 1 EXPUNGE\r\nh OK MOVE completed\r\n"
            % play.uid_validity,
        )
        await changes_settled(self.store)
        self.assertEqual(await session.command(b"i NOOP"), b"* 1 EXISTS\r\ni OK NOOP completed\r\n")
        self.assertEqual(
            await session.command(b"i2 UID FETCH 1:* UID"),
            b"* 1 FETCH (UID 2)\r\ni2 OK FETCH completed\r\n",
        )
        self.assertEqual(
            (await self.store.get_folder_by_id(archive.id)).uid_next, archive.uid_next + 2
        )

    @d
    async def test_copy_and_move_out_of_a_label(self):
        a = await self.deliver(SIMPLE)
        b = await self.deliver(OTHER, folder="Archive")
        c = await self.deliver(MULTIPART)
        await self.label("Work", a, b, c)
        other = await self.label("Play")
        session = await self.login()
        await session.command(b"a SELECT Labels/Work")
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        # COPY out of a label copies into the folder, as from a folder.
        self.assertEqual(
            await session.command(b"b COPY 1:2 Trash"),
            b"b OK [COPYUID %d 1:2 1:2] COPY completed\r\n" % trash.uid_validity,
        )
        self.assertEqual(len(await self.store.list_folder_messages(trash.id)), 2)
        self.assertEqual(await self.folder_of(a.id), ("INBOX", ()))
        self.assertEqual(
            (await self.store.get_mailbox(self.mailbox.id)).used_bytes,
            2 * len(SIMPLE) + 2 * len(OTHER) + len(MULTIPART),
        )
        # MOVE out of it moves each message from where it lives and removes the label.
        self.assertEqual(
            await session.command(b"c MOVE 1:2 Trash"),
            b"* OK [COPYUID %d 1:2 3:4] Moved UIDs\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
            b"c OK MOVE completed\r\n" % trash.uid_validity,
        )
        self.assertEqual(await self.folder_of(a.id), ("Trash", ()))
        self.assertEqual(await self.folder_of(b.id), ("Trash", ()))
        self.assertEqual((await self.labels_of(a.id), await self.labels_of(b.id)), ([], []))
        # Label to label: MOVE relabels.
        self.assertEqual(
            await session.command(b"d MOVE 1 Labels/Play"),
            b"* OK [COPYUID %d 3 1] Moved UIDs\r\n* 1 EXPUNGE\r\nd OK MOVE completed\r\n"
            % other.uid_validity,
        )
        self.assertEqual(await self.labels_of(c.id), ["Play"])
        self.assertEqual(await self.folder_of(c.id), ("INBOX", ()))
        await session.command(b"e SELECT Labels/Play")
        self.assertEqual(
            await session.command(b"f COPY 1 Labels/Work"),
            b"f OK [COPYUID %d 1 4] COPY completed\r\n"
            % (await self.store.get_label_by_name(self.mailbox.id, "Work")).uid_validity,
        )
        self.assertEqual(await self.labels_of(c.id), ["Play", "Work"])

    @d
    async def test_copy_out_of_a_label_respects_the_quota(self):
        mm = await self.deliver(SIMPLE)
        await self.label("Work", mm)
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=len(SIMPLE) + 10)
        session = await self.login()
        await session.command(b"a SELECT Labels/Work")
        self.assertEqual(
            await session.command(b"b COPY 1 Archive"),
            b"b NO [OVERQUOTA] Mailbox is over its quota\r\n",
        )
        self.assertEqual(
            await self.store.list_folder_messages(
                (await self.store.get_folder(self.mailbox.id, "Archive")).id
            ),
            [],
        )

    @d
    async def test_append_into_a_label_stores_in_archive(self):
        label = await self.label("Work")
        session = await self.login()
        session.send(b"a APPEND Labels/Work (\\Seen) {%d+}\r\n" % len(SIMPLE) + SIMPLE + b"\r\n")
        self.assertEqual(
            await session.wait_for(rb"^a "),
            b"a OK [APPENDUID %d 1] APPEND completed\r\n" % label.uid_validity,
        )
        [row] = await self.store.list_label_messages(label.id)
        self.assertEqual(await self.folder_of(row.id), ("Archive", ("\\Seen",)))
        # MULTIAPPEND: all into the label, one transaction.
        session.send(
            b"b APPEND Labels/Work {%d+}\r\n%s {%d+}\r\n%s\r\n"
            % (len(OTHER), OTHER, len(MULTIPART), MULTIPART)
        )
        self.assertEqual(
            await session.wait_for(rb"^b "),
            b"b OK [APPENDUID %d 2:3] APPEND completed\r\n" % label.uid_validity,
        )
        session.send(b"c APPEND Labels/Nope {%d+}\r\n%s\r\n" % (len(OTHER), OTHER))
        self.assertEqual(await session.wait_for(rb"^c "), b"c NO [TRYCREATE] No such mailbox\r\n")
        answer = await session.command(b"d SELECT Labels/Work")
        self.assertIn(b"* 3 EXISTS\r\n", answer)
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        self.assertEqual(len(await self.store.list_folder_messages(archive.id)), 3)
        self.assertEqual(
            (await self.store.get_mailbox(self.mailbox.id)).used_bytes,
            len(SIMPLE) + len(OTHER) + len(MULTIPART),
        )

    # -- two sessions ----------------------------------------------------------------------

    @d
    async def test_idle_in_a_label_view_hears_every_kind_of_change(self):
        a = await self.deliver(SIMPLE)
        b = await self.deliver(OTHER)
        label = await self.label("Work", a)
        watcher = await self.selected(b"Labels/Work")
        watcher.send(b"i IDLE\r\n")
        await watcher.wait_for(rb"^\+ idling\r\n")
        actor = await self.selected(b"INBOX")
        # Another session labels a message.
        await actor.command(b"a COPY 2 Labels/Work")
        self.assertEqual(await watcher.wait_for(rb"EXISTS\r\n"), b"* 2 EXISTS\r\n")
        # ... sets a flag on it in its folder.
        await actor.command(b"b STORE 1 +FLAGS (\\Flagged)")
        self.assertEqual(
            await watcher.wait_for(rb"FETCH.*\r\n"), b"* 1 FETCH (FLAGS (\\Flagged) UID 1)\r\n"
        )
        # ... the REST API takes the label off.
        await self.store.remove_message_label(b.id, label.id)
        self.assertEqual(await watcher.wait_for(rb"EXPUNGE\r\n"), b"* 2 EXPUNGE\r\n")
        # ... a rule or the REST API puts it on.
        await self.store.add_message_label(b.id, label.id)
        self.assertEqual(await watcher.wait_for(rb"EXISTS\r\n"), b"* 2 EXISTS\r\n")
        # ... the message goes: deleted from Trash (soft delete) leaves every view.
        await actor.command(b"c MOVE 2 Trash")
        await actor.command(b"d SELECT Trash")
        await actor.command(b"e STORE 1 +FLAGS (\\Deleted)")
        await actor.command(b"f EXPUNGE")
        # The move to Trash is no news to the label; the flag and the deletion are.
        self.assertEqual(
            await watcher.wait_for(rb"EXPUNGE\r\n"),
            b"* 2 FETCH (FLAGS (\\Deleted) UID 3)\r\n* 2 EXPUNGE\r\n",
        )
        watcher.send(b"DONE\r\n")
        self.assertEqual(await watcher.wait_for(rb"^i "), b"i OK IDLE terminated\r\n")
        # NOOP reports what IDLE did not see.
        await actor.command(b"g SELECT INBOX")
        await actor.command(b"h STORE 1 -FLAGS (\\Flagged)")
        await changes_settled(self.store)
        self.assertEqual(
            await watcher.command(b"n NOOP"),
            b"* 1 FETCH (FLAGS () UID 1)\r\nn OK NOOP completed\r\n",
        )
        # Changes of other labels are not this view's business.
        other = await self.label("Play")
        await self.store.add_message_label(a.id, other.id)
        await changes_settled(self.store)
        self.assertEqual(await watcher.command(b"m NOOP"), b"m OK NOOP completed\r\n")

    @d
    async def test_label_deleted_elsewhere_ends_the_session_that_shows_it(self):
        mm = await self.deliver(SIMPLE)
        label = await self.label("Work", mm)
        watcher = await self.selected(b"Labels/Work")
        other = await self.selected(b"INBOX")
        await self.store.delete_label(label.id)
        await changes_settled(self.store)
        watcher.send(b"a NOOP\r\n")
        answer = await watcher.wait_for(rb"\* BYE .*\r\n")
        self.assertEqual(answer, b"* BYE Selected mailbox was deleted, have to disconnect\r\n")
        self.assertTrue(watcher.transport.disconnecting)
        # A session with a folder selected does not care.
        self.assertEqual(await other.command(b"b NOOP"), b"b OK NOOP completed\r\n")

    @d
    async def test_deleting_the_selected_label_unselects(self):
        await self.label("Work")
        session = await self.selected(b"Labels/Work")
        self.assertEqual(
            await session.command(b"a DELETE Labels/Work"), b"a OK DELETE completed\r\n"
        )
        self.assertEqual(
            await session.command(b"b FETCH 1 UID"), b"b BAD Command not valid in this state\r\n"
        )

    @d
    async def test_a_folder_named_labels_from_the_api_stays_a_folder(self):
        folder = await self.store.create_folder(self.mailbox.id, "Labels")
        await self.store.create_folder(self.mailbox.id, "Labels/Hidden")
        await self.deliver(SIMPLE, folder="Labels")
        await self.label("Work")
        session = await self.login()
        self.assertEqual(
            listed(await session.command(b'a LIST "" "Labels*"')),
            [b'* LIST (\\HasChildren) "/" "Labels"', b'* LIST (\\HasNoChildren) "/" "Labels/Work"'],
        )
        answer = await session.command(b"b SELECT Labels")
        self.assertIn(b"* OK [UIDVALIDITY %d]" % folder.uid_validity, answer)
        self.assertIn(b"* 1 EXISTS\r\n", answer)
        self.assertTrue(
            (await session.command(b"c SELECT Labels/Hidden")).endswith(
                b"c NO [NONEXISTENT] No such mailbox\r\n"
            )
        )


class SQLiteLabelFolderTests(LabelFolderTests, IMAPTestCase):
    pass


class PostgresLabelFolderTests(LabelFolderTests, IMAPTestCase):
    skip = PG_SKIP

    def setUp(self):
        # The same session fixture on a PostgreSQL store (with its LISTEN/NOTIFY change bus).
        self.patch(helpers, "make_store", make_pg_store)
        return super().setUp()
