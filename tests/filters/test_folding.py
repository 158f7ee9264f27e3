"""Header fields the filters add are folded to RFC 5322's line lengths (78, at most 998): a long
Authentication-Results from many results, and the ARC set sealed over it, whose seal still
verifies with dkimpy's ``arc_verify`` (relaxed canonicalisation ignores where a field folds)."""

from __future__ import annotations

import dkim
from twisted.internet import threads
from twisted.trial import unittest

from haitatsu.filtering.results import authentication_results, fold
from haitatsu.filtering.session import _field
from haitatsu.filtering.verdicts import FilterResult
from tests.filters.helpers import HOSTNAME, AuthMX, dkim_sign, message, signing_key, spec
from tests.filters.test_arc import dkimpy_arc_verify, ours

SIGNERS = [f"a-rather-long-signing-domain-number-{i:02d}.example" for i in range(40)]


def many_signatures() -> bytes:
    data = message()
    for domain in SIGNERS:
        data = dkim_sign(data, domain=domain)
    return data


def fields(head: bytes) -> list[bytes]:
    out: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += b"\r\n" + line
        else:
            out.append(line)
    return out


class FoldedFieldsTests(AuthMX):
    timeout = 120

    async def test_long_authentication_results_and_arc_set_are_folded_and_verify(self):
        key = [("TXT", signing_key()[1])]
        zones = {f"sel._domainkey.{domain}": key for domain in SIGNERS}
        zones["arc._domainkey.auth.test"] = key
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(signing_key()[0])
        seal = {"domain": "auth.test", "selector": "arc", "key_file": path}
        await self.serve(zones, spec("dkim", max_signatures=50), spec("arc", seal=seal))
        data = await threads.deferToThread(many_signatures)
        self.assertEqual(await self.sendmail(data), {})
        results, raw, _ = await self.only()
        self.assertTrue(results["arc_sealed"])
        head = raw.split(b"\r\n\r\n", 1)[0]
        self.assertTrue(all(len(line) <= 998 for line in head.split(b"\r\n")))
        added = {f.split(b":", 1)[0]: f for f in ours(head)}
        self.assertEqual(
            set(added),
            {
                b"Authentication-Results",
                b"ARC-Seal",
                b"ARC-Message-Signature",
                b"ARC-Authentication-Results",
            },
        )
        for name, field in added.items():
            lines = field.split(b"\r\n")
            self.assertLessEqual(max(map(len, lines)), 78, name)
        # Unfolded, the results are what the chain found: 40 DKIM passes, in one field
        # far longer than a line may be.
        aar = added[b"ARC-Authentication-Results"].replace(b"\r\n", b"")
        self.assertGreater(len(aar), 998)
        self.assertEqual(aar.count(b"dkim=pass"), 40)
        ar = added[b"Authentication-Results"].replace(b"\r\n", b"")
        self.assertTrue(ar.startswith(f"Authentication-Results: {HOSTNAME};".encode()))
        self.assertEqual(ar.count(b"dkim=pass"), 40)
        for domain in SIGNERS:
            self.assertIn(f"header.d={domain}".encode(), ar)
        cv, sets, reason = dkimpy_arc_verify(raw)
        self.assertEqual((cv, len(sets)), (dkim.CV_Pass, 1), reason)


class FoldTests(unittest.SynchronousTestCase):
    def test_folds_before_existing_spaces_only(self):
        line = b"X-Verdict: " + b" ".join(b"word%02d" % i for i in range(60))
        folded = fold(line)
        self.assertEqual(folded.replace(b"\r\n", b""), line)  # unfolding gives it back
        lines = folded.split(b"\r\n")
        self.assertTrue(all(len(x) <= 78 for x in lines))
        self.assertTrue(all(x.startswith(b" ") for x in lines[1:]))
        self.assertEqual(fold(b"X-Short: yes"), b"X-Short: yes")

    def test_a_word_never_leaves_the_name_alone_and_long_runs_are_cut_at_998(self):
        self.assertEqual(fold(b"X-A: " + b"z" * 90), b"X-A: " + b"z" * 90)
        lines = fold(b"X-B: " + b"y" * 2100 + b" end").split(b"\r\n")
        self.assertEqual([len(x) for x in lines], [998, 998, 111, 4])
        # Cut on a character boundary: every line is valid UTF-8.
        lines = fold(("X-C: " + "é" * 1200).encode()).split(b"\r\n")
        for x in lines:
            self.assertLessEqual(len(x), 998)
            x.decode("utf-8")

    def test_filter_field_and_authentication_results(self):
        value = "spam score " + " ".join(f"rule_{i}=1.0" for i in range(30))
        field = _field("X-Spam-Report", value)
        self.assertTrue(field.endswith(b"\r\n"))
        self.assertEqual(field[:-2].replace(b"\r\n", b""), f"X-Spam-Report: {value}".encode())
        self.assertTrue(all(len(x) <= 78 for x in field[:-2].split(b"\r\n")))
        results = [
            FilterResult(
                method="dkim",
                result="fail",
                reason="signature did not verify " * 10,
                properties={"header.d": "example.org"},
            )
        ] * 3
        header = authentication_results("mx.example.test", results)
        self.assertTrue(header.startswith(b"Authentication-Results: mx.example.test;\r\n\tdkim="))
        self.assertTrue(all(len(x) <= 78 for x in header[:-2].split(b"\r\n")))
        self.assertEqual(len(fields(header[:-2])), 1)
