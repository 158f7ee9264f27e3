"""Streamed DKIM body hashes against dkimpy's own canonicalization of the whole body."""

from __future__ import annotations

import glob
import hashlib
import os

import dkim
import test.test_email
from dkim.canonicalization import Relaxed, Simple
from twisted.trial import unittest

from haitatsu.mailauth import bodyhash
from haitatsu.mailauth.bodyhash import BodySpec, HeaderTooLarge, read_signed_message

CORPUS = os.path.join(os.path.dirname(test.test_email.__file__), "data")

EDGE_CASES = [
    b"Subject: x\r\n\r\n",
    b"Subject: x\r\n",
    b"Subject: x",
    b"Subject: x\r\n\r\nbody",
    b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\r\n\r\n\r\n",
    b"Subject: x\r\n\r\n\r\n\r\n\r\n",
    b"Subject: x\r\n\r\n  \t \r\n\r\n",
    b"Subject: x\r\n\r\na  b\t\tc  \r\n\r\n\r\nd \r\n \r\n\r\n",
    b"Subject: x\r\n\r\nbare\nlf\n\nend\n\n",
    b"Subject: x\r\n\r\ncr\r\r\nonly\rcr \r\n",
    b"Subject: x\r\n\r\nlast line without crlf \t",
    b"Subject: x\r\n\r\nends in cr\r",
    b"Subject: x\r\n  folded\r\nTo: y\r\n\r\n\r\nleading empty\r\n",
    b"Subject: x\n\nlf message\n",
]


def dkimpy_hash(message: bytes, spec: BodySpec) -> bytes:
    _, body = dkim.rfc822_parse(message)
    canonical = (Relaxed if spec.canonicalization == "relaxed" else Simple).canonicalize_body(body)
    if spec.limit is not None:
        canonical = canonical[: spec.limit]
    return getattr(hashlib, spec.algorithm)(canonical).digest()


SPECS = [
    BodySpec(c, a, limit)
    for c in ("simple", "relaxed")
    for a in ("sha256", "sha1")
    for limit in (None, 0, 1, 7, 100)
]


class BodyHashTests(unittest.TestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def compare(self, data: bytes, specs=SPECS):
        path = self.write(data)
        message = read_signed_message(path, lambda header: specs)
        for spec in specs:
            self.assertEqual(
                message.body_hashes[spec], dkimpy_hash(data, spec), f"{spec} on {data[:60]!r}"
            )
        self.assertEqual(dkim.rfc822_parse(message.header + b"\r\n")[0], dkim.rfc822_parse(data)[0])

    def test_edge_cases(self):
        for data in EDGE_CASES:
            self.compare(data)

    def test_corpus(self):
        """CPython's email test messages (LF line endings) and the same with CRLF."""
        files = sorted(glob.glob(os.path.join(CORPUS, "msg_*.txt")))
        self.assertGreater(len(files), 40)
        for name in files:
            with open(name, "rb") as f:
                data = f.read()
            try:
                dkim.rfc822_parse(data)
            except dkim.MessageFormatError:
                continue
            self.compare(data)
            self.compare(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def test_large_body_in_small_chunks(self):
        self.patch(bodyhash, "_CHUNK", 7)
        body = b"".join(b"line %d  with \t space  \r\n" % i for i in range(500)) + b"\r\n\r\n"
        self.compare(b"Subject: big\r\nFrom: a@b.example\r\n\r\n" + body)

    def test_only_the_hashes_asked_for(self):
        path = self.write(EDGE_CASES[4])
        self.assertEqual(read_signed_message(path, lambda header: []).body_hashes, {})
        seen = []
        read_signed_message(path, lambda header: seen.append(header) or [])
        self.assertEqual(seen, [b"Subject: x\r\n"])

    def test_header_limit(self):
        path = self.write(b"Subject: " + b"x" * 200 + b"\r\n\r\nbody\r\n")
        self.assertRaises(HeaderTooLarge, read_signed_message, path, lambda h: [], 100)
        read_signed_message(path, lambda h: [], 300)
