"""DKIM signatures (``haitatsu/dkim.py``): the RSA signature comes from OpenSSL, byte for byte
what dkimpy's own pure-Python RSA makes, and verifies."""

from __future__ import annotations

import dkim
from dkim.crypto import parse_pem_private_key
from twisted.trial import unittest

from haitatsu import dkim as dkimmod

HEADER = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: signed\r\n"
    b"Date: Sun, 22 Nov 2026 04:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
)
BODY = b"Hello Bob,\r\n\r\nthe body.\r\n"


class SignatureTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.pair = dkimmod.generate_key("rsa")
        self.key = dkimmod.SigningKey("example.com", "sel", "rsa", self.pair.private_pem)
        hasher = dkimmod.RelaxedBodyHash()
        for line in BODY.splitlines(keepends=True):
            hasher.update_line(line)
        self.body_hash = hasher.digest()

    def test_openssl_signature_is_dkimpys(self):
        ours = dkimmod.signature(HEADER, self.body_hash, self.key, 1790000000)
        signer = dkimmod._HeaderSigner(HEADER + b"\r\n", signature_algorithm=b"rsa-sha256")
        theirs = b"DKIM-Signature: " + dkim.DKIM.gen_header(
            signer,
            *self._gen_header_arguments(signer),
        )
        self.assertEqual(ours, theirs)

    def _gen_header_arguments(self, signer):
        """What ``sign_with_body_hash`` hands ``gen_header``, with dkimpy's own key form."""
        captured = {}

        def capture(fields, include, policy, name, pk, standardize=False):
            captured["args"] = (fields, include, policy, name)
            return b""

        signer.gen_header = capture
        signer.sign_with_body_hash(b"sel", b"example.com", None, self.body_hash, 1790000000)
        del signer.gen_header
        fields, include, policy, name = captured["args"]
        return fields, include, policy, name, parse_pem_private_key(self.pair.private_pem.encode())

    def test_signature_verifies(self):
        header = dkimmod.signature(HEADER, self.body_hash, self.key, 1790000000)
        record = dkimmod.dns_record("rsa", self.pair.public_pem).encode()
        message = header + HEADER + b"\r\n" + BODY
        self.assertTrue(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))
        tampered = message.replace(b"the body.", b"the bodY.")
        self.assertFalse(dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record))
