"""The ``dkim`` filter through the chain: messages signed by dkimpy in the test with a key
published in a zone served by a twisted.names server on loopback, sent with smtplib."""

from __future__ import annotations

import dkim
from twisted.internet import threads

from tests.filters.helpers import MESSAGE, AuthMX, auth_header, dkim_sign, signing_key, spec
from tests.filters.zones import TIMEOUT


def zones():
    return {
        "sel._domainkey.example.org": [("TXT", signing_key()[1])],
        "sel._domainkey.list.example": [("TXT", signing_key()[1])],
        "sel._domainkey.broken.example": [("TXT", "v=DKIM1; k=rsa; p=MIIB%%%")],
        "sel._domainkey.slow.example": [TIMEOUT],
    }


class DKIMFilterTests(AuthMX):
    async def test_signed_message_passes(self):
        await self.serve(zones(), spec("dkim"))
        self.assertEqual(await self.sendmail(dkim_sign(MESSAGE)), {})
        results, raw, score = await self.only()
        self.assertEqual((results["dkim"], results["dkim_domain"]), ("pass", "example.org"))
        [signature] = results["dkim_signatures"]
        self.assertEqual(
            signature,
            {
                "result": "pass",
                "d": "example.org",
                "s": "sel",
                "a": "rsa-sha256",
                "i": "@example.org",
                "reason": "",
            },
        )
        self.assertEqual(score, 0)
        header = auth_header(raw)
        self.assertRegex(
            header,
            r"dkim=pass header\.d=example\.org header\.i=@example\.org header\.s=sel "
            r"header\.a=rsa-sha256 header\.b=\S+",
        )
        # The stored copy (our headers prepended) still verifies.
        record = signing_key()[1].encode()
        self.assertTrue(dkim.verify(raw, dnsfunc=lambda name, timeout=5: record))

    async def test_every_signature_is_reported(self):
        await self.serve(zones(), spec("dkim"))
        signed = dkim_sign(dkim_sign(MESSAGE), domain="list.example")
        signed = dkim_sign(signed, domain="nokey.example")
        self.assertEqual(await self.sendmail(signed), {})
        results, raw, _ = await self.only()
        self.assertEqual(
            [(s["d"], s["result"]) for s in results["dkim_signatures"]],
            [("nokey.example", "permerror"), ("list.example", "pass"), ("example.org", "pass")],
        )
        # dkim_domain is the passing signature aligned with From.
        self.assertEqual((results["dkim"], results["dkim_domain"]), ("pass", "example.org"))
        header = auth_header(raw)
        self.assertEqual(header.count("dkim="), 3)
        self.assertIn('dkim=permerror reason="no key at sel._domainkey.nokey.example"', header)

    async def test_tampered_message_fails(self):
        await self.serve(zones(), spec("dkim"))
        tampered = dkim_sign(MESSAGE).replace(b"see you.", b"send money.")
        self.assertEqual(await self.sendmail(tampered), {})
        results, raw, score = await self.only()
        self.assertEqual(results["dkim"], "fail")
        self.assertEqual(results["spam_reasons"], ["dkim_fail"])
        self.assertEqual(score, 2)
        self.assertIn('dkim=fail reason="body hash mismatch"', auth_header(raw))

    async def test_unsigned(self):
        await self.serve(zones(), spec("dkim"))
        self.assertEqual(await self.sendmail(), {})
        results, raw, _ = await self.only()
        self.assertEqual((results["dkim"], results["dkim_signatures"]), ("none", []))
        self.assertIn("dkim=none", auth_header(raw))

    async def test_broken_records_and_signatures_never_crash_the_session(self):
        await self.serve(zones(), spec("dkim"), dns_timeout=0.4)
        messages = [
            dkim_sign(MESSAGE, domain="broken.example"),
            dkim_sign(MESSAGE, domain="slow.example"),
            dkim_sign(MESSAGE).replace(b"a=rsa-sha256", b"a=rsa-sha512"),
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; b=; bh=\r\n" + MESSAGE,
        ]

        def session():
            with self.client() as c:
                return [c.sendmail("a@example.org", ["bob@example.com"], m) for m in messages]

        self.assertEqual(await threads.deferToThread(session), [{}] * 4)
        results = [info.auth_results["dkim"] for info, _ in await self.stored()]
        self.assertEqual(results, ["permerror", "temperror", "neutral", "neutral"])

    async def test_big_message(self):
        """A message larger than the hashing chunks verifies."""
        body = b"".join(b"line %d of a long body\r\n" % i for i in range(60000))
        await self.serve(zones(), spec("dkim"), limits=_limits(4_000_000))
        self.assertEqual(await self.sendmail(dkim_sign(MESSAGE + body)), {})
        self.assertEqual((await self.only())[0]["dkim"], "pass")


def _limits(size):
    from haitatsu.config.model import LimitsConfig

    return LimitsConfig(max_message_size_bytes=size)
