"""The ``arc`` filter through the chain: validation of ARC chains sealed before the message
reaches us, sealing of the stored copy (checked with dkimpy's own ``arc_verify``), and DMARC's
override for trusted sealers. Keys served by a twisted.names server on loopback."""

from __future__ import annotations

import os
import re
import time

import dkim
from twisted.internet import threads

from haitatsu.config.model import ConfigError
from haitatsu.filtering.registry import Filtering
from haitatsu.mailauth.dkim import load_sealing_key, seal_arc
from tests.filters.helpers import HOSTNAME, AuthMX, auth_header, message, signing_key, spec


def zones():
    key = [("TXT", signing_key()[1])]
    return {
        "arc._domainkey.forwarder.example": key,
        "arc._domainkey.auth.test": key,
        "example.org": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject")],
        "_dmarc.none.example": [("TXT", "v=DMARC1; p=none")],
    }


def forwarded(data: bytes, directory: str, sealer="forwarder.example", cv="none") -> bytes:
    """``data`` as a forwarder that sealed it would pass it on."""
    path = os.path.join(directory, "forwarded.eml")
    with open(path, "wb") as f:
        f.write(data)
    key = load_sealing_key(sealer, "arc", signing_key()[0])
    fields = seal_arc(
        path, key, f"mx.{sealer}", ["spf=pass smtp.mailfrom=example.org"], cv, int(time.time())
    )
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in fields) + data


def dkimpy_arc_verify(raw: bytes):
    record = signing_key()[1].encode()
    return dkim.arc_verify(raw, dnsfunc=lambda name, timeout=5: record)


class ARCFilterTests(AuthMX):
    def key_file(self) -> str:
        path = os.path.join(self.root, "arc.pem")
        with open(path, "wb") as f:
            f.write(signing_key()[0])
        return path

    def seal_options(self):
        return {"domain": "auth.test", "selector": "arc", "key_file": self.key_file()}

    async def test_validates_a_chain(self):
        await self.serve(zones(), spec("arc"))
        data = await threads.deferToThread(forwarded, message(), self.root)
        self.assertEqual(await self.sendmail(data), {})
        self.assertEqual(await self.sendmail(message()), {})
        [(first, raw), (second, _)] = await self.stored()
        results = first.auth_results
        self.assertEqual(
            (results["arc"], results["arc_instance"], results["arc_sealers"]),
            ("pass", 1, ["forwarder.example"]),
        )
        self.assertIn("arc=pass (i=1) smtp.remote-ip=127.0.0.1", auth_header(raw))
        self.assertEqual(
            (second.auth_results["arc"], second.auth_results["arc_sealers"]), ("none", [])
        )

    async def test_broken_chain(self):
        await self.serve(zones(), spec("arc"))
        data = await threads.deferToThread(forwarded, message(), self.root)
        self.assertEqual(await self.sendmail(data.replace(b"see you.", b"see me.")), {})
        results, raw, _ = await self.only()
        self.assertEqual(results["arc"], "fail")
        self.assertIn("arc=fail", auth_header(raw))

    async def test_seal(self):
        await self.serve(
            zones(), spec("spf"), spec("dkim"), spec("dmarc"), spec("arc", seal=self.seal_options())
        )
        self.assertEqual(
            await self.sendmail(message("a@none.example"), sender="a@none.example"), {}
        )
        results, raw, _ = await self.only()
        self.assertTrue(results["arc_sealed"])
        head = raw.split(b"\r\n\r\n")[0]
        self.assertIn(b"\r\nARC-Seal: i=1; cv=none; a=rsa-sha256; d=auth.test; s=arc;", head)
        aar = [line for line in head.split(b"\r\n") if line.startswith(b"ARC-Authentication")]
        self.assertEqual(len(aar), 1)
        self.assertTrue(
            aar[0].startswith(f"ARC-Authentication-Results: i=1; {HOSTNAME}; spf=".encode())
        )
        for method in (b"spf=none", b"dkim=none", b"dmarc=fail", b"arc=none"):
            self.assertIn(method, aar[0])
        cv, _, reason = dkimpy_arc_verify(raw)
        self.assertEqual(cv, dkim.CV_Pass, reason)

    async def test_seal_continues_a_chain(self):
        await self.serve(zones(), spec("arc", seal=self.seal_options()))
        data = await threads.deferToThread(forwarded, message(), self.root)
        self.assertEqual(await self.sendmail(data), {})
        _, raw, _ = await self.only()
        self.assertIn(b"ARC-Seal: i=2; cv=pass;", raw)
        cv, sets, reason = dkimpy_arc_verify(raw)
        self.assertEqual((cv, len(sets)), (dkim.CV_Pass, 2), reason)

    async def test_dmarc_override_for_a_trusted_sealer(self):
        await self.serve(
            zones(),
            spec("spf"),
            spec("dkim"),
            spec("arc"),
            spec("dmarc", arc_trusted_sealers=["Forwarder.Example"]),
            spec("arc", verify=False, seal=self.seal_options()),
        )
        data = await threads.deferToThread(forwarded, message(), self.root)
        self.assertEqual(await self.sendmail(data), {})
        results, raw, _ = await self.only()
        self.assertEqual(
            (results["dmarc"], results["dmarc_override"]), ("fail", "arc:forwarder.example")
        )
        self.assertEqual(results["spam_reasons"], ["spf_fail", "dmarc_fail"])
        # The seal entry used the first entry's validation: one arc= in our header, cv=pass.
        self.assertEqual(len(re.findall(r"(?<![a-z])arc=", auth_header(raw))), 1)
        self.assertIn(b"ARC-Seal: i=2; cv=pass;", raw)
        self.assertEqual(dkimpy_arc_verify(raw)[0], dkim.CV_Pass)
        # Not sealed by a trusted domain, or not sealed at all: DMARC's p=reject applies.
        other = await threads.deferToThread(forwarded, message(), self.root, "elsewhere.example")
        self.assertEqual((await self.sendmail(other))[0], 550)
        self.assertEqual((await self.sendmail(message()))[0], 550)

    async def test_key_file_errors(self):
        await self.serve(zones())
        bad = os.path.join(self.root, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a key")
        for key_file, error in (
            (os.path.join(self.root, "missing.pem"), "filters[arc].seal.key_file: cannot read"),
            (bad, "filters[arc].seal.key_file: " + bad + ": not an RSA private key"),
        ):
            import attrs

            config = attrs.evolve(
                self.config,
                filters=(
                    spec(
                        "arc", seal={"domain": "auth.test", "selector": "arc", "key_file": key_file}
                    ),
                ),
            )
            with self.assertRaises(ConfigError) as e:
                Filtering(self.store, None, config)
            self.assertIn(error, str(e.exception))
