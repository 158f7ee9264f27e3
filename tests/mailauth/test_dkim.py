"""DKIM verification and ARC verification and sealing, keys served by a twisted.names server on
loopback; signatures made by dkimpy, our seals checked by dkimpy's own ``arc_verify``."""

from __future__ import annotations

import base64
import time

import dkim
import nacl.signing
from twisted.internet import threads
from twisted.trial import unittest

from haitatsu import dkim as dkimkeys
from haitatsu.mailauth import dkim as auth
from tests.filters.zones import TIMEOUT, zone_resolver

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: hello\r\n"
    b"Date: Thu, 01 May 2025 10:20:30 +0000\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"Hello  Bob,\r\n"
    b"\r\n"
    b"see you.\r\n"
)

_KEYS: dict = {}


def rsa_key(bits: int = 2048):
    """``(private_pem, dns_record)``, one per size for the whole run (RSA generation is slow)."""
    if bits not in _KEYS:
        if bits == 2048:
            pair = dkimkeys.generate_key("rsa")
            _KEYS[bits] = (pair.private_pem.encode(), dkimkeys.dns_record("rsa", pair.public_pem))
        else:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _KEYS[bits] = (pem, dkimkeys.dns_record("rsa", public.decode()))
    return _KEYS[bits]


def sign(message=MESSAGE, domain=b"example.org", selector=b"sel", key=None, **kwargs):
    pem = key or rsa_key()[0]
    return dkim.sign(message, selector, domain, pem, **kwargs) + message


class Base(unittest.TestCase):
    timeout = 60

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def zone(self, data=None, **kwargs):
        if data is None:
            data = {"sel._domainkey.example.org": [("TXT", rsa_key()[1])]}
        _, self.blocking, self.authority = zone_resolver(self, data, **kwargs)
        return self.blocking

    def verify(self, data: bytes, **kwargs):
        return threads.deferToThread(auth.verify_dkim, self.write(data), self.blocking, **kwargs)


class VerifyTests(Base):
    async def test_pass(self):
        self.zone()
        [result] = await self.verify(sign())
        self.assertEqual(
            (result.result, result.domain, result.selector, result.algorithm),
            ("pass", "example.org", "sel", "rsa-sha256"),
        )
        self.assertEqual(result.identity, "@example.org")
        self.assertEqual(len(result.b), 8)
        self.assertIn(("sel._domainkey.example.org", 16), self.authority.queries)

    async def test_every_signature(self):
        self.zone()
        signed = sign(sign(domain=b"other.example"), canonicalize=(b"simple", b"simple"))
        results = await self.verify(signed)
        self.assertEqual(
            [(r.result, r.domain) for r in results],
            [("pass", "example.org"), ("permerror", "other.example")],
        )
        self.assertIn("no key at sel._domainkey.other.example", results[1].reason)

    async def test_no_signature(self):
        self.zone()
        self.assertEqual(await self.verify(MESSAGE), [])

    async def test_tampered_body_and_header(self):
        self.zone()
        signed = sign()
        [body] = await self.verify(signed.replace(b"see you.", b"see you!"))
        self.assertEqual((body.result, body.reason), ("fail", "body hash mismatch"))
        [header] = await self.verify(signed.replace(b"Subject: hello", b"Subject: hullo"))
        self.assertEqual((header.result, header.reason), ("fail", "signature did not verify"))

    async def test_relaxed_survives_whitespace_and_length_tag(self):
        self.zone()
        signed = sign(canonicalize=(b"relaxed", b"relaxed"), length=True)
        changed = signed.replace(b"Hello  Bob,", b"Hello \t Bob,  ") + b"\r\n\r\nappended\r\n"
        [result] = await self.verify(changed)
        self.assertEqual(result.result, "pass")

    async def test_ed25519(self):
        seed = nacl.signing.SigningKey.generate()
        public = base64.b64encode(bytes(seed.verify_key)).decode()
        self.zone({"ed._domainkey.example.org": [("TXT", f"v=DKIM1; k=ed25519; p={public}")]})
        signed = sign(
            selector=b"ed",
            key=base64.b64encode(bytes(seed)),
            signature_algorithm=b"ed25519-sha256",
        )
        [result] = await self.verify(signed)
        self.assertEqual((result.result, result.algorithm), ("pass", "ed25519-sha256"))

    async def test_key_problems(self):
        self.zone(
            {
                "sel._domainkey.example.org": [("TXT", "v=DKIM1; k=rsa; p=not*base64")],
                "revoked._domainkey.example.org": [("TXT", "v=DKIM1; p=")],
                "slow._domainkey.example.org": [TIMEOUT],
                "strange._domainkey.example.org": [("TXT", "v=DKIM1; k=dsa; p=AAAA")],
            },
            timeout=0.4,
        )
        results = await self.verify(
            sign(
                sign(
                    sign(sign(), selector=b"revoked"),
                    selector=b"slow",
                ),
                selector=b"strange",
            )
        )
        self.assertEqual(
            [(r.result, r.selector) for r in results],
            [
                ("permerror", "strange"),
                ("temperror", "slow"),
                ("permerror", "revoked"),
                ("permerror", "sel"),
            ],
        )
        self.assertIn("bad key record", results[3].reason)

    async def test_short_key_is_policy(self):
        pem, record = rsa_key(1024)
        self.zone({"sel._domainkey.example.org": [("TXT", record)]})
        [result] = await self.verify(sign(key=pem), min_key_bits=2048)
        self.assertEqual(result.result, "policy")
        [result] = await self.verify(sign(key=pem))
        self.assertEqual(result.result, "pass")

    async def test_malformed_signatures(self):
        self.zone()
        signed = sign()
        for broken in (
            signed.replace(b" b=", b" x=", 1),  # no b=
            signed.replace(b"a=rsa-sha256", b"a=rsa-md5"),
            signed.replace(b"d=example.org", b"d=example.org; d=again"),
            signed.replace(b"DKIM-Signature: v=1", b"DKIM-Signature: v=1; garbage"),
        ):
            [result] = await self.verify(broken)
            self.assertEqual(result.result, "neutral", broken[:200])
        [result] = await self.verify(b"DKIM-Signature: v=1\r\n\tbad\r\nnot a header\r\n\r\nx\r\n")
        self.assertEqual(result.result, "permerror")

    async def test_lookups_have_a_time_budget(self):
        self.zone()
        results = await self.verify(sign(sign()), lookup_seconds=0)
        self.assertEqual([r.result for r in results], ["temperror", "temperror"])
        self.assertEqual(self.authority.queries, [])

    async def test_max_signatures(self):
        self.zone()
        signed = sign(sign(sign()))
        self.assertEqual(len(await self.verify(signed, max_signatures=2)), 2)

    async def test_big_header_section(self):
        self.zone()
        signed = sign(b"X-Filler: " + b"y" * 5000 + b"\r\n" + MESSAGE)
        [result] = await self.verify(signed, header_limit=1000)
        self.assertEqual(result.result, "permerror")


class ARCTests(Base):
    def setUp(self):
        pem, record = rsa_key()
        self.key = auth.load_sealing_key("example.net", "arc", pem)
        self.zone(
            {
                "arc._domainkey.example.net": [("TXT", record)],
                "arc._domainkey.relay.example": [("TXT", record)],
            }
        )

    def seal(self, data: bytes, cv: str, key=None, results=("spf=pass smtp.mailfrom=x",)):
        fields = auth.seal_arc(
            self.write(data), key or self.key, "mx.example.net", list(results), cv, int(time.time())
        )
        return b"".join(f"{n}: {v}\r\n".encode() for n, v in fields) + data

    def dkimpy_verify(self, data: bytes):
        records = {"arc._domainkey.example.net.": rsa_key()[1].encode()}
        records["arc._domainkey.relay.example."] = records["arc._domainkey.example.net."]
        return dkim.arc_verify(data, dnsfunc=lambda name, timeout=5: records.get(name.decode()))

    def verify_arc(self, data: bytes):
        return threads.deferToThread(auth.verify_arc, self.write(data), self.blocking)

    async def test_no_chain(self):
        result = await self.verify_arc(MESSAGE)
        self.assertEqual((result.result, result.instance), ("none", 0))

    async def test_seal_verifies_with_dkimpy_and_with_us(self):
        sealed = await threads.deferToThread(self.seal, MESSAGE, "none")
        self.assertTrue(sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256"))
        self.assertIn(
            b"ARC-Authentication-Results: i=1; mx.example.net; spf=pass smtp.mailfrom=x\r\n",
            sealed,
        )
        cv, _, reason = self.dkimpy_verify(sealed)
        self.assertEqual(cv, dkim.CV_Pass, reason)
        result = await self.verify_arc(sealed)
        self.assertEqual(
            (result.result, result.instance, result.sealers, result.oldest_pass),
            ("pass", 1, ((1, "example.net"),), 0),
        )

        relay = auth.load_sealing_key("relay.example", "arc", self.key.private_pem)
        twice = await threads.deferToThread(self.seal, sealed, "pass", relay)
        self.assertEqual(self.dkimpy_verify(twice)[0], dkim.CV_Pass)
        result = await self.verify_arc(twice)
        self.assertEqual(
            (result.result, result.instance, result.sealers),
            ("pass", 2, ((2, "relay.example"), (1, "example.net"))),
        )

    async def test_changed_after_sealing(self):
        sealed = await threads.deferToThread(self.seal, MESSAGE, "none")
        result = await self.verify_arc(sealed.replace(b"see you.", b"see you!"))
        self.assertEqual(result.result, "fail")
        self.assertNotEqual(self.dkimpy_verify(sealed.replace(b"see you.", b"x"))[0], dkim.CV_Pass)
        # A later hop whose own seal is good but whose earlier set broke: the chain fails.
        relay = auth.load_sealing_key("relay.example", "arc", self.key.private_pem)
        broken = sealed.replace(b"cv=none", b"cv=pass")
        twice = await threads.deferToThread(self.seal, broken, "fail", relay)
        self.assertEqual((await self.verify_arc(twice)).result, "fail")

    async def test_cannot_seal_without_from(self):
        no_from = MESSAGE.replace(b"From: Alice <alice@example.org>\r\n", b"")
        with self.assertRaises(dkim.DKIMException):
            await threads.deferToThread(self.seal, no_from, "none")

    def test_bad_key(self):
        self.assertRaises(ValueError, auth.load_sealing_key, "example.net", "arc", b"nope")
