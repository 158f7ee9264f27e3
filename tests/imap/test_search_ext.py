"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and WITHIN (RFC 5032)."""

from __future__ import annotations

from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.imap.test_session import d

NOW = 1_700_000_000  # the session clock's "now", seconds


class SearchExtensionTests(IMAPTestCase):
    async def seed(self):
        """Five messages, UIDs 1-5; 2, 3 and 5 flagged."""
        for i in range(5):
            flags = ["\\Flagged"] if i in (1, 2, 4) else []
            await self.deliver(SIMPLE, flags=flags)
        session = await self.selected()
        await session.command(b"x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await session.command(b"y EXPUNGE")  # UIDs 2-5 are now sequence numbers 1-4
        return session

    @d
    async def test_esearch_min_max_count_all(self):
        session = await self.seed()
        # RFC 4731 examples: SEARCH RETURN (MIN COUNT) / UID SEARCH RETURN (ALL).
        answer = await session.command(b"A282 SEARCH RETURN (MIN COUNT) FLAGGED")
        self.assertEqual(
            answer, b'* ESEARCH (TAG "A282") MIN 1 COUNT 3\r\nA282 OK SEARCH completed\r\n'
        )
        answer = await session.command(b"A283 UID SEARCH RETURN (ALL MAX) FLAGGED")
        self.assertEqual(
            answer,
            b'* ESEARCH (TAG "A283") UID ALL 2:3,5 MAX 5\r\nA283 OK SEARCH completed\r\n',
        )
        answer = await session.command(b"A284 SEARCH RETURN () FLAGGED")
        self.assertEqual(
            answer, b'* ESEARCH (TAG "A284") ALL 1:2,4\r\nA284 OK SEARCH completed\r\n'
        )
        # Nothing matched: only COUNT is reported.
        answer = await session.command(b"A285 SEARCH RETURN (MIN MAX COUNT ALL) DELETED")
        self.assertEqual(answer, b'* ESEARCH (TAG "A285") COUNT 0\r\nA285 OK SEARCH completed\r\n')
        answer = await session.command(b"A286 SEARCH RETURN (MIN) CHARSET UTF-8 UNFLAGGED")
        self.assertEqual(answer, b'* ESEARCH (TAG "A286") MIN 3\r\nA286 OK SEARCH completed\r\n')

    @d
    async def test_searchres_saves_and_reuses_the_result(self):
        session = await self.seed()
        # RFC 5182: RETURN (SAVE) alone answers with no ESEARCH.
        answer = await session.command(b"A282 SEARCH RETURN (SAVE) FLAGGED")
        self.assertEqual(answer, b"A282 OK SEARCH completed, result saved\r\n")
        answer = await session.command(b"A283 FETCH $ (UID)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n* 4 FETCH (UID 5)\r\n"
            b"A283 OK FETCH completed\r\n",
        )
        answer = await session.command(b"A284 UID SEARCH $ SEEN")
        self.assertEqual(answer, b"* SEARCH\r\nA284 OK SEARCH completed\r\n")
        answer = await session.command(b"A285 SEARCH NOT $")
        self.assertEqual(answer, b"* SEARCH 3\r\nA285 OK SEARCH completed\r\n")
        answer = await session.command(b"A286 UID STORE $ +FLAGS.SILENT (\\Seen)")
        self.assertEqual(answer, b"A286 OK STORE completed\r\n")
        answer = await session.command(b"A287 SEARCH SEEN UID $")
        self.assertEqual(answer, b"* SEARCH 1 2 4\r\nA287 OK SEARCH completed\r\n")
        # SAVE with MIN and MAX keeps only those; an expunged message drops out of $.
        answer = await session.command(b"A288 SEARCH RETURN (SAVE MIN MAX) FLAGGED")
        self.assertEqual(
            answer, b'* ESEARCH (TAG "A288") MIN 1 MAX 4\r\nA288 OK SEARCH completed\r\n'
        )
        await session.command(b"A289 UID STORE 5 +FLAGS.SILENT (\\Deleted)")
        await session.command(b"A290 UID EXPUNGE 5")
        answer = await session.command(b"A291 UID FETCH $ (FLAGS)")
        self.assertEqual(
            answer, b"* 1 FETCH (UID 2 FLAGS (\\Seen \\Flagged))\r\nA291 OK FETCH completed\r\n"
        )
        # A failed SAVE leaves $ empty; a new SELECT empties it too.
        answer = await session.command(b"A292 SEARCH RETURN (SAVE) FROBNICATE")
        self.assertTrue(answer.startswith(b"A292 BAD "))
        self.assertEqual(await session.command(b"A293 FETCH $ UID"), b"A293 OK FETCH completed\r\n")

    @d
    async def test_within_older_and_younger(self):
        self.clock.advance(NOW)
        day = 24 * 3600
        for age in (10 * day, 2 * day, 3600):
            await self.deliver(SIMPLE, internal_date=(NOW - age) * 1_000_000_000)
        session = await self.selected()
        answer = await session.command(b"a SEARCH YOUNGER %d" % (3 * day))
        self.assertEqual(answer, b"* SEARCH 2 3\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"b SEARCH OLDER %d" % day)
        self.assertEqual(answer, b"* SEARCH 1 2\r\nb OK SEARCH completed\r\n")
        answer = await session.command(b"c UID SEARCH OLDER 3600 YOUNGER %d" % (5 * day))
        self.assertEqual(answer, b"* SEARCH 2 3\r\nc OK SEARCH completed\r\n")

    @d
    async def test_malformed_search_extensions_are_bad(self):
        session = await self.seed()
        for line in (
            b"a SEARCH RETURN (BIGGEST) ALL",
            b"a SEARCH RETURN ALL",
            b"a SEARCH RETURN (MIN)",
            b"a SEARCH OLDER 0",
            b"a SEARCH YOUNGER soon",
            b"a SEARCH $:4",
        ):
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD "), (line, answer))
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")
