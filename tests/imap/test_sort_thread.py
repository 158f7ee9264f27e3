"""SORT and THREAD (RFC 5256) on a hand-built message set: Re:/Fwd:/[tag] subjects, a
message without a Date, a reference chain with a missing message, a duplicate Message-ID."""

from __future__ import annotations

import calendar

from twisted.trial import unittest

from haitatsu.imap.sort import base_subject
from tests.imap.helpers import IMAPTestCase
from tests.imap.test_session import d


def _ns(day, hour=0):
    return calendar.timegm((2022, 1, day, hour, 0, 0)) * 1_000_000_000


def _message(subject, sender, day=None, msgid=None, extra=b""):
    lines = []
    if sender:
        lines.append(b"From: %s@example.test" % sender)
    lines.append(b"To: list@example.test")
    lines.append(b"Subject: " + subject)
    if day is not None:
        lines.append(b"Date: %d Jan 2022 10:00:00 +0000" % day)
    if msgid:
        lines.append(b"Message-ID: " + msgid)
    if extra:
        lines.append(extra)
    return b"\r\n".join(lines) + b"\r\n\r\nbody\r\n"


#: (message, internal date): sequence numbers and UIDs 1-8.
MESSAGES = [
    (_message(b"Re: [list] Lunch", b"zed", 3, b"<b@x>", b"In-Reply-To: <a@x>"), _ns(10)),
    (_message(b"Lunch", b"Amy", 1, b"<a@x>"), _ns(9)),
    (_message(b"Fwd: Report (fwd)", b"bob", None, b"<c@x>"), _ns(2, 12)),
    (_message(b"report", b"carol", 2, b"<d@x>"), _ns(8)),
    (_message(b"Re: Lunch", None, 4, b"<e@x>", b"References: <a@x> <missing@x>"), _ns(7)),
    (_message(b"[fwd: Lunch]", b"dave", 5, b"<f@x>"), _ns(6)),
    (_message(b"Re: Re: Lunch", b"eve", 6, b"<g@x>", b"References: <a@x> <e@x>"), _ns(5)),
    (_message(b"Other thing", b"fred", 7, b"<a@x>"), _ns(4)),
]


def _by_size() -> bytes:
    """Every message has the same To: SIZE decides, ties by sequence number."""
    order = sorted(range(1, 9), key=lambda seq: (len(MESSAGES[seq - 1][0]), seq))
    return b" ".join(b"%d" % seq for seq in order)


class BaseSubjectTests(unittest.TestCase):
    def test_base_subject(self):
        cases = {
            "Re: [list] Lunch": ("LUNCH", True),
            "Fwd: Report (fwd)": ("REPORT", True),
            "[fwd: Re: hi]": ("HI", True),
            "[tag]": ("[TAG]", False),
            "[tag] subject": ("SUBJECT", False),
            "Re: re: RE: x": ("X", True),
            "  a \t  b  ": ("A B", False),
            "Fw: [x] Re: y (fwd) (fwd)": ("Y", True),
            "Grüße": ("GRüßE", False),
            "": ("", False),
        }
        for subject, expected in cases.items():
            self.assertEqual(base_subject(subject), expected, subject)


class SortThreadTests(IMAPTestCase):
    async def seed(self):
        for data, internal in MESSAGES:
            await self.deliver(data, internal_date=internal)
        return await self.selected()

    @d
    async def test_sort(self):
        session = await self.seed()
        for criteria, expected in [
            (b"(SUBJECT)", b"1 2 5 6 7 8 3 4"),
            (b"(SUBJECT DATE)", b"2 1 5 6 7 8 4 3"),
            (b"(REVERSE DATE)", b"8 7 6 5 1 3 4 2"),
            (b"(FROM)", b"5 2 3 4 6 7 8 1"),
            (b"(ARRIVAL)", b"3 8 7 6 5 4 2 1"),
            (b"(REVERSE SUBJECT REVERSE ARRIVAL)", b"4 3 8 1 2 5 6 7"),
            (b"(TO SIZE)", _by_size()),
        ]:
            answer = await session.command(b"a SORT %s UTF-8 ALL" % criteria)
            self.assertEqual(answer, b"* SORT %s\r\na OK SORT completed\r\n" % expected, criteria)

    @d
    async def test_uid_sort_with_search_keys(self):
        session = await self.seed()
        await session.command(b"x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await session.command(b"y EXPUNGE")  # UIDs 2-8 are now sequence numbers 1-7
        answer = await session.command(b"a UID SORT (DATE) US-ASCII SUBJECT lunch")
        self.assertEqual(answer, b"* SORT 2 5 6 7\r\na OK SORT completed\r\n")
        answer = await session.command(b"b SORT (DATE) UTF-8 SUBJECT lunch")
        self.assertEqual(answer, b"* SORT 1 4 5 6\r\nb OK SORT completed\r\n")
        answer = await session.command(b"c SORT (DATE) UTF-8 SUBJECT nothing-like-it")
        self.assertEqual(answer, b"* SORT\r\nc OK SORT completed\r\n")

    @d
    async def test_thread_orderedsubject(self):
        session = await self.seed()
        answer = await session.command(b"a THREAD ORDEREDSUBJECT UTF-8 ALL")
        self.assertEqual(answer, b"* THREAD (2 (1)(5)(6)(7))(4 3)(8)\r\na OK THREAD completed\r\n")

    @d
    async def test_thread_references(self):
        session = await self.seed()
        answer = await session.command(b"a THREAD REFERENCES UTF-8 ALL")
        # 1 replies to 2; 5 refers to 2 through a missing message (its dummy is pruned);
        # 7 replies to 5; 6 ("[fwd: Lunch]") and 3 ("Fwd: Report (fwd)") join their
        # subject's thread as forwards; 8 reuses 2's Message-ID and stands alone.
        self.assertEqual(answer, b"* THREAD (2 (1)(5 7)(6))(4 3)(8)\r\na OK THREAD completed\r\n")
        answer = await session.command(b"b UID THREAD REFERENCES UTF-8 SUBJECT report")
        self.assertEqual(answer, b"* THREAD (4 3)\r\nb OK THREAD completed\r\n")

    @d
    async def test_thread_references_groups_roots_by_subject_under_a_dummy(self):
        await self.deliver(_message(b"Plans", b"a", 1, b"<p1@x>"))
        await self.deliver(_message(b"Plans", b"b", 2, b"<p2@x>"))
        await self.deliver(_message(b"Re: Plans", b"c", 3, b"<p3@x>", b"In-Reply-To: <p2@x>"))
        session = await self.selected()
        answer = await session.command(b"a THREAD REFERENCES UTF-8 ALL")
        self.assertEqual(answer, b"* THREAD ((1)(2 3))\r\na OK THREAD completed\r\n")

    @d
    async def test_malformed_sort_and_thread_are_bad_and_the_session_lives(self):
        session = await self.seed()
        for line in (
            b"a SORT DATE UTF-8 ALL",
            b"a SORT () UTF-8 ALL",
            b"a SORT (REVERSE) UTF-8 ALL",
            b"a SORT (COLOUR) UTF-8 ALL",
            b"a SORT (DATE) UTF-8",
            b"a THREAD FANCY UTF-8 ALL",
            b"a THREAD REFERENCES UTF-8",
            b"a SORT (DATE) UTF-8 FROBNICATE",
        ):
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD "), (line, answer))
        answer = await session.command(b"b SORT (DATE) KOI8-R ALL")
        self.assertEqual(answer, b"b NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n")
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")
