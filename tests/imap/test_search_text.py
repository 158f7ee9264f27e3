"""``MessageText``: what BODY and TEXT search in, matched without decoding the body whenever
the answer does not depend on it (haitatsu/imap/search.py)."""

from __future__ import annotations

import types

from twisted.trial import unittest

from haitatsu.imap.search import MessageText, text_ranges


def naive(extracts: str, raw: bytes, needle: str) -> bool:
    """What the text was before: extracts and decoded body, casefolded, one string."""
    return needle in " ".join((extracts, raw.decode("utf-8", "replace"))).casefold()


class MessageTextTests(unittest.SynchronousTestCase):
    CASES = [
        ("", b"Quarterly REVENUE up", "revenue", True),
        ("", b"Quarterly REVENUE up", "profit", False),
        ("the Extract only", b"body", "extract", True),
        ("", "Grüße aus Köln".encode(), "grüsse", True),  # casefold: ß is ss
        ("", "Grüße aus Köln".encode(), "köln", True),
        ("", "Grüße aus Köln".encode(), "koln", False),
        ("", "\u212aelvin scale".encode(), "kelvin", True),  # the Kelvin sign folds to k
        ("", b"caf\xe9 au lait \xff\xfe LAIT", "lait", True),  # invalid UTF-8 around it
        ("", b"caf\xe9 au lait", "caf\ufffd", True),
        ("", b"plain ascii body", "ascii body", True),
        ("", b"plain ascii body", "asciibody", False),
    ]

    def test_matches_what_decoding_everything_matches(self):
        for extracts, raw, needle, expected in self.CASES:
            text = MessageText(extracts, raw)
            self.assertEqual(needle in text, expected, (extracts, raw, needle))
            self.assertEqual(naive(extracts, raw, needle), expected, (extracts, raw, needle))

    def test_several_needles_on_one_text(self):
        text = MessageText("", "ASCII first, then Straße".encode())
        self.assertIn("ascii", text)
        self.assertIn("strasse", text)
        self.assertNotIn("gasse", text)


class TextRangesTests(unittest.SynchronousTestCase):
    """Which bytes BODY reads: text parts, not attachments of other types."""

    def info(self, parts, size=1000, header_size=100):
        return types.SimpleNamespace(parts=parts, size_bytes=size, header_size=header_size)

    def test_text_parts_only_in_order_and_bounded(self):
        parts = {
            "1": {"header_start": 100, "body_start": 150, "end": 300, "type": "text/plain"},
            "2": {"header_start": 300, "body_start": 350, "end": 700, "type": "image/png"},
            "3": {"header_start": 700, "body_start": 750, "end": 990, "type": "text/html"},
        }
        self.assertEqual(text_ranges(self.info(parts), 10_000), [(150, 150), (750, 240)])
        self.assertEqual(text_ranges(self.info(parts), 200), [(150, 150), (750, 50)])
        self.assertEqual(text_ranges(self.info(parts), 150), [(150, 150)])

    def test_nested_message_text_is_searched(self):
        parts = {
            "1": {"header_start": 100, "body_start": 120, "end": 200, "type": "text/plain"},
            "2": {"header_start": 200, "body_start": 260, "end": 900, "type": "message/rfc822"},
            "2.1": {"header_start": 400, "body_start": 400, "end": 900, "type": "text/plain"},
        }
        self.assertEqual(text_ranges(self.info(parts), 10_000), [(120, 80), (400, 500)])

    def test_untyped_or_missing_parts_search_the_whole_body(self):
        unparsed = {"1": {"header_start": 0, "body_start": 0, "end": 1000}}
        self.assertEqual(text_ranges(self.info(unparsed, header_size=0), 10_000), [(0, 1000)])
        self.assertEqual(text_ranges(self.info({}), 500), [(100, 500)])
        self.assertEqual(text_ranges(self.info({}, size=100), 500), [])

    def test_a_message_without_text_parts_has_nothing_to_search(self):
        parts = {"1": {"header_start": 0, "body_start": 100, "end": 1000, "type": "image/png"}}
        self.assertEqual(text_ranges(self.info(parts), 10_000), [])
