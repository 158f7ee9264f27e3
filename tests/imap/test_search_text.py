"""``MessageText``: what BODY and TEXT search in, matched without decoding the body whenever
the answer does not depend on it (haitatsu/imap/search.py)."""

from __future__ import annotations

from twisted.trial import unittest

from haitatsu.imap.search import MessageText


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
