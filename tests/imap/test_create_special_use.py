"""CREATE-SPECIAL-USE (RFC 6154 section 3): CREATE name (USE (attr))."""

from __future__ import annotations

from tests.imap.helpers import IMAPTestCase
from tests.imap.test_session import d


class CreateSpecialUseTests(IMAPTestCase):
    async def folders(self):
        return {f.name: f.special_use for f in await self.store.list_folders(self.mailbox.id)}

    @d
    async def test_rfc6154_examples(self):
        session = await self.login()
        # Section 5.3 (with a use we store): the new folder is listed with its attribute.
        self.assertEqual(
            await session.command(b"t1 CREATE MySpecial (USE (\\Archive))"),
            b"t1 OK CREATE completed\r\n",
        )
        self.assertEqual(
            await session.command(b't2 LIST "" MySpecial'),
            b'* LIST (\\HasNoChildren \\Archive) "/" "MySpecial"\r\nt2 OK LIST completed\r\n',
        )
        # A use we cannot give a folder: nothing is created.
        self.assertEqual(
            await session.command(b"t3 CREATE Everything (USE (\\All))"),
            b"t3 NO [USEATTR] \\All is not supported\r\n",
        )
        self.assertEqual(
            await session.command(b't4 LIST (SPECIAL-USE) "" *'),
            b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"\r\n'
            b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n'
            b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n'
            b'* LIST (\\HasNoChildren \\Archive) "/" "MySpecial"\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n'
            b"t4 OK LIST completed\r\n",
        )
        folders = await self.folders()
        self.assertEqual(folders["MySpecial"], "\\Archive")
        self.assertNotIn("Everything", folders)

    @d
    async def test_uses_are_stored_in_canonical_case_and_parents_get_none(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b'a CREATE "Old/Sent 2023" (USE (\\sent))'),
            b"a OK CREATE completed\r\n",
        )
        self.assertEqual(
            await session.command(b"b CREATE Templates (USE (\\Drafts \\drafts))"),
            b"b OK CREATE completed\r\n",
        )
        self.assertEqual(
            await session.command(b"c CREATE Plain (USE ())"), b"c OK CREATE completed\r\n"
        )
        folders = await self.folders()
        self.assertEqual(folders["Old"], "")
        self.assertEqual(folders["Old/Sent 2023"], "\\Sent")
        self.assertEqual(folders["Templates"], "\\Drafts")
        self.assertEqual(folders["Plain"], "")

    @d
    async def test_refusals_are_useattr_and_create_nothing(self):
        session = await self.login()
        for tag, params, text in (
            (b"a", b"(USE (\\Trash))", b"\\Trash is already the special use of Trash"),
            (b"b", b"(USE (\\Junk))", b"\\Junk is already the special use of Junk"),
            (b"c", b"(USE (\\Flagged))", b"\\Flagged is not supported"),
            (b"d", b"(USE (\\Important))", b"\\Important is not supported"),
            (b"e", b"(USE (\\Whatever))", b"\\Whatever is not a special use"),
            (b"f", b"(USE (\\Drafts \\Sent))", b"A mailbox can have only one special use"),
        ):
            self.assertEqual(
                await session.command(tag + b" CREATE New/Box " + params),
                tag + b" NO [USEATTR] " + text + b"\r\n",
            )
        folders = await self.folders()
        self.assertNotIn("New", folders)
        self.assertNotIn("New/Box", folders)
        # The usual refusals still come first for the name.
        self.assertEqual(
            await session.command(b"g CREATE Archive (USE (\\Archive))"),
            b"g NO [ALREADYEXISTS] Mailbox already exists\r\n",
        )

    @d
    async def test_malformed_parameters_are_bad(self):
        session = await self.login()
        for tag, params in (
            (b"a", b"USE (\\Archive)"),
            (b"b", b"()"),
            (b"c", b"(USE \\Archive)"),
            (b"d", b"(USE (Archive))"),
            (b"e", b"(USE (\\Archive) USE (\\Sent))"),
            (b"f", b"(COLOR (red))"),
            (b"g", b'(USE ("\\\\Archive"))'),
            (b"h", b"(USE (\\))"),
        ):
            answer = await session.command(tag + b" CREATE X " + params)
            self.assertTrue(answer.startswith(tag + b" BAD "), (params, answer))
        self.assertNotIn("X", await self.folders())
        self.assertEqual(await session.command(b"z NOOP"), b"z OK NOOP completed\r\n")
