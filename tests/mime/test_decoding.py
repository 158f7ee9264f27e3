"""Transfer decoding of one part (haitatsu.mime.decoding), chunk by chunk."""

from __future__ import annotations

import base64
import binascii
import io
import os
import random

from twisted.trial import unittest

from haitatsu.mime.decoding import (
    Base64Decoder,
    DecodingReader,
    LineEndings,
    QuotedPrintableDecoder,
    decoded_chunks,
    decoder_for,
)


def feed_all(decoder, data: bytes, cuts) -> bytes:
    out, last = [], 0
    for cut in [*cuts, len(data)]:
        out.append(decoder.feed(data[last:cut]))
        last = cut
    out.append(decoder.finish())
    return b"".join(out)


class Base64Tests(unittest.SynchronousTestCase):
    def test_any_cut_gives_the_same_bytes(self):
        payload = os.urandom(3000) + b"\x00\x00"
        encoded = base64.encodebytes(payload)  # 76-character lines
        rng = random.Random(5)
        for _ in range(20):
            cuts = sorted(rng.sample(range(1, len(encoded)), 7))
            self.assertEqual(feed_all(Base64Decoder(), encoded, cuts), payload)

    def test_junk_and_missing_padding_and_concatenated_pieces(self):
        self.assertEqual(feed_all(Base64Decoder(), b"QU\r\nJD\t*ZA", []), b"ABCd")
        self.assertEqual(feed_all(Base64Decoder(), b"QUI=QUI=", [3]), b"ABAB")
        self.assertEqual(feed_all(Base64Decoder(), b"QUJD!!", []), b"ABC")
        # One lone character at the end carries no byte.
        self.assertEqual(feed_all(Base64Decoder(), b"QUJDR", []), b"ABC")

    def test_broken_group_is_skipped(self):
        self.assertEqual(feed_all(Base64Decoder(), b"Q===QUJD", []), b"ABC")


class QuotedPrintableTests(unittest.SynchronousTestCase):
    def test_soft_breaks_and_escapes_across_cuts(self):
        data = b"caf=C3=A9 au lait=\r\nsans sucre\r\n=3D fin"
        want = binascii.a2b_qp(data)
        self.assertEqual(want, "café au laitsans sucre\r\n= fin".encode())
        for cut in range(1, len(data)):
            self.assertEqual(feed_all(QuotedPrintableDecoder(), data, [cut]), want)

    def test_a_line_without_end_is_cut_without_splitting_an_escape(self):
        decoder = QuotedPrintableDecoder()
        decoder.HOLD = 10
        data = b"abcdefghi=41jklmnopq=42rstu"
        out = feed_all(decoder, data, range(1, len(data)))
        self.assertEqual(out, b"abcdefghiAjklmnopqBrstu")
        self.assertLessEqual(len(decoder._pending), 12)


class LineEndingTests(unittest.SynchronousTestCase):
    def test_bare_lf_becomes_crlf_and_crlf_stays(self):
        data = b"one\ntwo\r\nthree\rfour\n"
        for cut in range(0, len(data) + 1):
            lines = LineEndings()
            out = lines.feed(data[:cut]) + lines.feed(data[cut:]) + lines.finish()
            self.assertEqual(out, b"one\r\ntwo\r\nthree\rfour\r\n")


class DecodedChunksTests(unittest.SynchronousTestCase):
    def test_range_of_a_file_decoded_and_normalised(self):
        body = base64.encodebytes(b"line one\nline two\n")
        blob = io.BytesIO(b"HEADER\r\n\r\n" + body + b"--boundary")
        start, end = 10, 10 + len(body)
        self.assertEqual(
            b"".join(decoded_chunks(blob, start, end, "base64", textual=True)),
            b"line one\r\nline two\r\n",
        )
        self.assertEqual(
            b"".join(decoded_chunks(blob, start, end, "base64")), b"line one\nline two\n"
        )
        self.assertEqual(b"".join(decoded_chunks(blob, 0, 6, "7bit")), b"HEADER")

    def test_unknown_encoding(self):
        self.assertIsNone(decoder_for("x-uuencode"))
        with self.assertRaises(ValueError):
            list(decoded_chunks(io.BytesIO(b"x"), 0, 1, "x-uuencode"))

    def test_reader_passes_an_unknown_encoding_through(self):
        reader = DecodingReader(io.BytesIO(b"begin 644 x\n"), 0, 12, "x-uuencode")
        self.assertEqual(reader.read(), b"begin 644 x\n")
        self.assertEqual(reader.read(), b"")
