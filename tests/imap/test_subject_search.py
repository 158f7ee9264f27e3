"""SEARCH SUBJECT narrowed by the database (``store.subject_candidates``): the same answers as
a casefolded substring test of every decoded subject, on SQLite and PostgreSQL.

The store matches ASCII subjects itself and hands every subject with another character to
Python, since casefolding can turn those into ASCII (``ß`` into ``ss``, the Kelvin sign into
``k``); keys under NOT or OR are never used to narrow."""

from __future__ import annotations

from tests.imap.helpers import SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, changes_settled, make_pg_store

SUBJECTS = [
    b"Lunch on Friday",  # 1
    b"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",  # 2: "Grüße aus Köln"
    b"Strasse closed",  # 3
    "Die Straße".encode(),  # 4: raw UTF-8
    "Cooled to 300 \u212a".encode(),  # 5: the Kelvin sign, which casefolds to "k"
    b"PLAN x for Friday",  # 6
]


def _message(subject: bytes) -> bytes:
    return SIMPLE.replace(b"Subject: Lunch on Friday", b"Subject: " + subject)


def _literal(text: str) -> bytes:
    data = text.encode()
    return b"{%d+}\r\n" % len(data) + data


class SubjectSearchTests(IMAPTestCase):
    async def _mailbox(self):
        for subject in SUBJECTS:
            await self.deliver(_message(subject))
        return await self.selected()

    async def _search(self, session, args: bytes) -> bytes:
        return await session.command(b"a SEARCH " + args)

    @d
    async def test_ascii_strings_match_case_insensitively(self):
        session = await self._mailbox()
        answer = await self._search(session, b"SUBJECT plan")
        self.assertEqual(answer, b"* SEARCH 6\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b'SUBJECT "FRIDAY"')
        self.assertEqual(answer, b"* SEARCH 1 6\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"u UID SEARCH SUBJECT fri")
        self.assertEqual(answer, b"* SEARCH 1 6\r\nu OK SEARCH completed\r\n")
        answer = await self._search(session, b"SUBJECT nowhere")
        self.assertEqual(answer, b"* SEARCH\r\na OK SEARCH completed\r\n")

    @d
    async def test_non_ascii_subjects_are_casefolded_and_decoded(self):
        session = await self._mailbox()
        # "ss" is in "Strasse closed" and in the casefold of "Die Straße".
        answer = await self._search(session, b"SUBJECT strasse")
        self.assertEqual(answer, b"* SEARCH 3 4\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"CHARSET UTF-8 SUBJECT " + _literal("STRAßE"))
        self.assertEqual(answer, b"* SEARCH 3 4\r\na OK SEARCH completed\r\n")
        # The encoded word is searched decoded; a non-ASCII string never matches ASCII.
        answer = await self._search(session, b"CHARSET UTF-8 SUBJECT " + _literal("GRÜSSE"))
        self.assertEqual(answer, b"* SEARCH 2\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"SUBJECT =?utf-8?q?")
        self.assertEqual(answer, b"* SEARCH\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b'SUBJECT "300 k"')
        self.assertEqual(answer, b"* SEARCH 5\r\na OK SEARCH completed\r\n")

    @d
    async def test_keys_under_not_and_or_do_not_narrow(self):
        session = await self._mailbox()
        answer = await self._search(session, b"NOT SUBJECT friday")
        self.assertEqual(answer, b"* SEARCH 2 3 4 5\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"OR SUBJECT plan SUBJECT lunch")
        self.assertEqual(answer, b"* SEARCH 1 6\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"(SUBJECT friday NOT SUBJECT lunch)")
        self.assertEqual(answer, b"* SEARCH 6\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"SUBJECT fri SUBJECT plan 1:5")
        self.assertEqual(answer, b"* SEARCH\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b'SUBJECT ""')
        self.assertEqual(answer, b"* SEARCH 1 2 3 4 5 6\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"e SEARCH RETURN (COUNT MIN) SUBJECT friday")
        self.assertEqual(answer, b'* ESEARCH (TAG "e") COUNT 2 MIN 1\r\ne OK SEARCH completed\r\n')

    @d
    async def test_malformed_subject_keys(self):
        session = await self._mailbox()
        answer = await self._search(session, b"SUBJECT")
        self.assertTrue(answer.startswith(b"a BAD "), answer)
        answer = await self._search(session, b"NOT SUBJECT")
        self.assertTrue(answer.startswith(b"a BAD "), answer)
        answer = await self._search(session, b"SUBJECT (plan)")
        self.assertTrue(answer.startswith(b"a BAD "), answer)
        # The session goes on.
        answer = await self._search(session, b"SUBJECT plan")
        self.assertEqual(answer, b"* SEARCH 6\r\na OK SEARCH completed\r\n")

    @d
    async def test_the_sessions_view_decides_what_is_found(self):
        session = await self._mailbox()
        other = await self.selected()
        # Another session expunges a match and a new match arrives: not reported yet, the
        # expunged message is left out (its subject is gone) and the new one is not in the
        # view until the session hears of it.
        await other.command(b"x STORE 1 +FLAGS (\\Deleted)")
        await other.command(b"y EXPUNGE")
        await self.deliver(_message(b"Late lunch"))
        await changes_settled(self.store)
        answer = await self._search(session, b"SUBJECT lunch")
        self.assertEqual(answer, b"* SEARCH\r\na OK SEARCH completed\r\n")
        answer = await session.command(b"n NOOP")
        self.assertEqual(answer, b"* 1 EXPUNGE\r\n* 6 EXISTS\r\nn OK NOOP completed\r\n")
        answer = await session.command(b"b SEARCH SUBJECT lunch")
        self.assertEqual(answer, b"* SEARCH 6\r\nb OK SEARCH completed\r\n")
        answer = await session.command(b"c UID SEARCH SUBJECT friday")
        self.assertEqual(answer, b"* SEARCH 6\r\nc OK SEARCH completed\r\n")

    @d
    async def test_label_views_search_their_own_messages(self):
        session = await self._mailbox()
        await session.command(b"c CREATE Labels/trip")
        answer = await session.command(b"k COPY 3,4,6 Labels/trip")
        self.assertIn(b"k OK", answer)
        answer = await session.command(b"s SELECT Labels/trip")
        self.assertIn(b"* 3 EXISTS", answer)
        answer = await self._search(session, b"SUBJECT strasse")
        self.assertEqual(answer, b"* SEARCH 1 2\r\na OK SEARCH completed\r\n")
        answer = await self._search(session, b"SUBJECT friday")
        self.assertEqual(answer, b"* SEARCH 3\r\na OK SEARCH completed\r\n")


class PostgresSubjectSearchTests(SubjectSearchTests):
    skip = PG_SKIP
    timeout = 120

    async def open_store(self, root):
        return await make_pg_store(self, root)
