"""UTF8=ACCEPT (RFC 6855): ENABLE, UTF-8 mailbox names, SEARCH without CHARSET, APPEND UTF8."""

from __future__ import annotations

import imaplib
import os

from twisted.internet import reactor, threads

from tests.imap.helpers import ADDRESS, EIGHT_BIT, SIMPLE, IMAPTestCase
from tests.imap.test_session import d

UTF8_HEADERS = (
    "From: Jürgen <jürgen@bücher.example>\r\n"
    "To: alice@example.test\r\n"
    "Subject: Grüße aus Köln\r\n"
    "\r\n"
    "Hallo!\r\n"
).encode()

ENABLED = b"* ENABLED UTF8=ACCEPT\r\na OK ENABLE completed\r\n"


class EnableTests(IMAPTestCase):
    @d
    async def test_enable_in_the_authenticated_state_once(self):
        session = await self.login()
        self.assertEqual(await session.command(b"a ENABLE UTF8=ACCEPT"), ENABLED)
        self.assertEqual(
            await session.command(b"b ENABLE utf8=accept"),
            b"* ENABLED\r\nb OK ENABLE completed\r\n",
        )
        self.assertTrue(session.protocol.utf8_accept)

    @d
    async def test_not_enabled_in_the_selected_state(self):
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a ENABLE UTF8=ACCEPT"),
            b"* ENABLED\r\na OK ENABLE completed\r\n",
        )
        self.assertFalse(session.protocol.utf8_accept)


class MailboxNameTests(IMAPTestCase):
    @d
    async def test_names_are_modified_utf7_before_and_utf8_after(self):
        await self.store.create_folder(self.mailbox.id, "Entwürfe/R&D")
        session = await self.login()
        self.assertEqual(
            await session.command(b'b LIST "" "Entw*"'),
            b'* LIST (\\HasChildren) "/" "Entw&APw-rfe"\r\n'
            b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe/R&-D"\r\n'
            b"b OK LIST completed\r\n",
        )
        self.assertEqual(await session.command(b"a ENABLE UTF8=ACCEPT"), ENABLED)
        self.assertEqual(
            await session.command(b'c LIST "" "Entw*"'),
            '* LIST (\\HasChildren) "/" "Entwürfe"\r\n'
            '* LIST (\\HasNoChildren) "/" "Entwürfe/R&D"\r\n'
            "c OK LIST completed\r\n".encode(),
        )
        self.assertEqual(
            await session.command('d LSUB "" "Entwürfe/%"'.encode()),
            '* LSUB (\\HasNoChildren) "/" "Entwürfe/R&D"\r\nd OK LSUB completed\r\n'.encode(),
        )
        self.assertEqual(
            await session.command('e STATUS "Entwürfe/R&D" (MESSAGES)'.encode()),
            '* STATUS "Entwürfe/R&D" (MESSAGES 0)\r\ne OK STATUS completed\r\n'.encode(),
        )
        self.assertEqual(
            await session.command(b'f LIST (SUBSCRIBED) "" "Entw%" RETURN (STATUS (UIDNEXT))'),
            '* LIST (\\HasChildren \\Subscribed) "/" "Entwürfe"\r\n'
            '* STATUS "Entwürfe" (UIDNEXT 1)\r\n'
            "f OK LIST completed\r\n".encode(),
        )
        # After ENABLE a name is UTF-8 only: the modified UTF-7 spelling is another name.
        self.assertEqual(
            await session.command(b"g SELECT Entw&APw-rfe"),
            b"g NO [NONEXISTENT] No such mailbox\r\n",
        )
        answer = await session.command('h EXAMINE "Entwürfe"'.encode())
        self.assertTrue(answer.endswith(b"h OK [READ-ONLY] EXAMINE completed\r\n"), answer)
        answer = await session.command('i GETQUOTAROOT "Entwürfe/R&D"'.encode())
        self.assertEqual(
            answer,
            '* QUOTAROOT "Entwürfe/R&D"\r\ni OK GETQUOTAROOT completed\r\n'.encode(),
        )

    @d
    async def test_create_rename_delete_in_utf8(self):
        session = await self.login()
        await session.command(b"a ENABLE UTF8=ACCEPT")
        self.assertEqual(
            await session.command('b CREATE "Café & Crème"'.encode()),
            b"b OK CREATE completed\r\n",
        )
        self.assertEqual(
            await session.command('c RENAME "Café & Crème" "Tee/Grün &AOQ-"'.encode()),
            b"c OK RENAME completed\r\n",
        )
        names = {f.name for f in await self.store.list_folders(self.mailbox.id)}
        self.assertIn("Tee/Grün &AOQ-", names)
        self.assertNotIn("Café & Crème", names)
        self.assertEqual(
            await session.command(b'd CREATE "bad \xff name"'),
            b"d NO [CANNOT] Mailbox name is not UTF-8\r\n",
        )
        self.assertEqual(
            await session.command('e DELETE "Tee/Grün &AOQ-"'.encode()),
            b"e OK DELETE completed\r\n",
        )

    @d
    async def test_copy_and_append_targets_are_utf8_names(self):
        await self.store.create_folder(self.mailbox.id, "Bücher")
        await self.deliver(SIMPLE)
        session = await self.login()
        await session.command(b"a ENABLE UTF8=ACCEPT")
        await session.command(b"b SELECT INBOX")
        answer = await session.command('c COPY 1 "Bücher"'.encode())
        self.assertRegex(answer, rb"^c OK \[COPYUID \d+ 1 1\] COPY completed\r\n$")
        session.send('d APPEND "Bücher" {%d+}\r\n'.encode() % len(SIMPLE) + SIMPLE + b"\r\n")
        answer = await session.wait_for(rb"^d ")
        self.assertRegex(answer, rb"^d OK \[APPENDUID \d+ 2\] APPEND completed\r\n$")


class SearchCharsetTests(IMAPTestCase):
    @d
    async def test_charset_is_bad_once_enabled(self):
        await self.deliver(EIGHT_BIT)
        await self.deliver(SIMPLE)
        session = await self.login()
        await session.command(b"s SELECT INBOX")
        self.assertEqual(
            await session.command('a SEARCH CHARSET UTF-8 SUBJECT "Grüße"'.encode()),
            b"* SEARCH 1\r\na OK SEARCH completed\r\n",
        )
        await session.command(b"u UNSELECT")
        await session.command(b"e ENABLE UTF8=ACCEPT")
        await session.command(b"s SELECT INBOX")
        bad = b"BAD SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT\r\n"
        self.assertEqual(
            await session.command('b SEARCH CHARSET UTF-8 SUBJECT "Grüße"'.encode()), b"b " + bad
        )
        self.assertEqual(
            await session.command(b"c SEARCH RETURN (COUNT) CHARSET US-ASCII ALL"), b"c " + bad
        )
        self.assertEqual(
            await session.command('d SEARCH OR SUBJECT "grüsse" FROM bob'.encode()),
            b"* SEARCH 1 2\r\nd OK SEARCH completed\r\n",
        )
        # SORT and THREAD keep their charset argument (RFC 5256).
        self.assertEqual(
            await session.command(b"f SORT (SUBJECT) UTF-8 ALL"),
            b"* SORT 1 2\r\nf OK SORT completed\r\n",
        )


class AppendUTF8Tests(IMAPTestCase):
    async def stored(self, folder_name="INBOX"):
        folder = await self.store.get_folder(self.mailbox.id, folder_name)
        rows = await self.store.list_folder_messages(folder.id)
        out = []
        for row in rows:
            [(_, info)] = await self.store.get_messages(folder.id, [row.uid])
            out.append((row.flags, await self.store.read_message(info)))
        return out

    @d
    async def test_append_utf8_data_extension(self):
        session = await self.login()
        await session.command(b"a ENABLE UTF8=ACCEPT")
        session.send(b"b APPEND INBOX UTF8 (~{%d}\r\n" % len(UTF8_HEADERS))
        self.assertEqual(await session.wait_for(rb"^\+ "), b"+ Ready for literal data\r\n")
        session.send(UTF8_HEADERS + b")\r\n")
        answer = await session.wait_for(rb"^b ")
        self.assertRegex(answer, rb"^b OK \[APPENDUID \d+ 1\] APPEND completed\r\n$")
        # With flags and a date, non-synchronizing, and two messages (MULTIAPPEND).
        session.send(
            b'c APPEND INBOX (\\Seen) "01-Feb-2024 10:00:00 +0100" UTF8 (~{%d+}\r\n'
            % len(UTF8_HEADERS)
            + UTF8_HEADERS
            + b") UTF8 (~{%d+}\r\n" % len(SIMPLE)
            + SIMPLE
            + b")\r\n"
        )
        answer = await session.wait_for(rb"^c ")
        self.assertRegex(answer, rb"^c OK \[APPENDUID \d+ 2:3\] APPEND completed\r\n$")
        self.assertEqual(
            await self.stored(),
            [((), UTF8_HEADERS), (("\\Seen",), UTF8_HEADERS), ((), SIMPLE)],
        )
        self.assertEqual(os.listdir(self.spool_dir), [])
        # Returned as stored: the header bytes are the UTF-8 the client appended.
        await session.command(b"s SELECT INBOX")
        header = UTF8_HEADERS[: UTF8_HEADERS.index(b"\r\n\r\n") + 4]
        self.assertEqual(
            await session.command(b"d FETCH 1 BODY.PEEK[HEADER]"),
            b"* 1 FETCH (BODY[HEADER] {%d}\r\n" % len(header)
            + header
            + b")\r\nd OK FETCH completed\r\n",
        )
        answer = await session.command(b"e FETCH 1 ENVELOPE")
        self.assertIn("Grüße aus Köln".encode(), answer)
        self.assertIn("{7}\r\njürgen {15}\r\nbücher.example".encode(), answer)

    @d
    async def test_append_utf8_before_enable_is_bad_and_stores_nothing(self):
        session = await self.login()
        session.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n" % len(SIMPLE) + SIMPLE + b")\r\n")
        self.assertEqual(
            await session.wait_for(rb"^a "),
            b"a BAD APPEND UTF8 needs ENABLE UTF8=ACCEPT first\r\n",
        )
        self.assertEqual(await self.stored(), [])
        self.assertEqual(os.listdir(self.spool_dir), [])
        # A plain literal with UTF-8 header fields is stored as received either way.
        session.send(b"b APPEND INBOX {%d+}\r\n" % len(UTF8_HEADERS) + UTF8_HEADERS + b"\r\n")
        answer = await session.wait_for(rb"^b ")
        self.assertRegex(answer, rb"^b OK \[APPENDUID \d+ 1\] APPEND completed\r\n$")
        self.assertEqual(await self.stored(), [((), UTF8_HEADERS)])

    @d
    async def test_malformed_utf8_append_is_bad(self):
        session = await self.login()
        await session.command(b"a ENABLE UTF8=ACCEPT")
        n = len(SIMPLE)
        for tag, args in (
            (b"b", b"UTF8 ~{%d+}\r\n" % n + SIMPLE),
            (b"c", b"UTF8 (~{%d+}\r\n" % n + SIMPLE + b" ~{1+}\r\nx)"),
            (b"d", b'UTF8 ("text")'),
            (b"e", b"UTF8"),
        ):
            session.send(tag + b" APPEND INBOX " + args + b"\r\n")
            answer = await session.wait_for(rb"^" + tag + rb" ")
            self.assertTrue(answer.startswith(tag + b" BAD "), answer)
        self.assertEqual(await self.stored(), [])
        self.assertEqual(os.listdir(self.spool_dir), [])
        self.assertEqual(await session.command(b"f NOOP"), b"f OK NOOP completed\r\n")

    @d
    async def test_wrapper_inside_the_literal_is_unwrapped_once_enabled(self):
        """Python's imaplib sends ``{n}`` + ``UTF8 (message)`` (CPython gh-78319)."""
        wrapped = b"UTF8 (" + UTF8_HEADERS + b")"
        session = await self.login()
        session.send(b"a APPEND INBOX {%d+}\r\n" % len(wrapped) + wrapped + b"\r\n")
        await session.wait_for(rb"^a ")
        await session.command(b"b ENABLE UTF8=ACCEPT")
        session.send(b"c APPEND INBOX {%d+}\r\n" % len(wrapped) + wrapped + b"\r\n")
        answer = await session.wait_for(rb"^c ")
        self.assertRegex(answer, rb"^c OK \[APPENDUID \d+ 2\] APPEND completed\r\n$")
        # Before ENABLE the bytes are what the client meant to store; after, the message.
        self.assertEqual(await self.stored(), [((), wrapped), ((), UTF8_HEADERS)])
        self.assertEqual(os.listdir(self.spool_dir), [])


class RealClientUTF8Tests(IMAPTestCase):
    @d
    async def test_imaplib_in_utf8_mode(self):
        await self.deliver(UTF8_HEADERS)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        password = self.password

        def client():
            conn = imaplib.IMAP4("127.0.0.1", port.getHost().port)
            with conn:
                conn.login(ADDRESS, password)
                conn.enable("UTF8=ACCEPT")
                enabled = conn.response("ENABLED")
                created = conn.create('"Grüße/Köln"')
                listed = conn.list('""', '"Grüße/*"')
                selected = conn.select('"Grüße/Köln"')
                appended = conn.append('"Grüße/Köln"', "(\\Flagged)", None, UTF8_HEADERS)
                conn.select("INBOX")
                searched = conn.search(None, "SUBJECT", '"Köln"')
                fetched = conn.fetch("1", "(BODY.PEEK[])")
                conn.logout()
                return enabled, created, listed, selected, appended, searched, fetched

        (
            enabled,
            created,
            listed,
            selected,
            appended,
            searched,
            fetched,
        ) = await threads.deferToThread(client)
        self.assertEqual(enabled, ("ENABLED", [b"UTF8=ACCEPT"]))
        self.assertEqual(created[0], "OK")
        self.assertEqual(listed, ("OK", ['(\\HasNoChildren) "/" "Grüße/Köln"'.encode()]))
        self.assertEqual(selected[0], "OK")
        self.assertEqual(appended[0], "OK")
        self.assertEqual(searched, ("OK", [b"1"]))
        self.assertEqual(fetched[1][0][1], UTF8_HEADERS)
        folder = await self.store.get_folder(self.mailbox.id, "Grüße/Köln")
        [row] = await self.store.list_folder_messages(folder.id)
        [(_, info)] = await self.store.get_messages(folder.id, [row.uid])
        self.assertEqual(row.flags, ("\\Flagged",))
        self.assertEqual(await self.store.read_message(info), UTF8_HEADERS)
