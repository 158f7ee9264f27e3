"""DMARC records, organizational domains, alignment and evaluation; discovery against a
twisted.names server on loopback."""

from __future__ import annotations

from twisted.trial import unittest

from haitatsu.mailauth.dmarc import (
    Discovery,
    DMARCRecord,
    RecordError,
    aligned,
    discover,
    evaluate,
    organizational_domain,
    parse_record,
)
from tests.filters.zones import TIMEOUT, zone_resolver


class FixedRandom:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


class RecordTests(unittest.SynchronousTestCase):
    def test_parse(self):
        self.assertEqual(
            parse_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=30; rua=mailto:x@y"),
            DMARCRecord("reject", "none", "s", "r", 30, "mailto:x@y"),
        )
        self.assertEqual(parse_record("v=DMARC1;p=Quarantine"), DMARCRecord("quarantine"))
        self.assertEqual(parse_record(" v = DMARC1 ; p = none ; "), DMARCRecord("none"))

    def test_invalid_tag_values_fall_back_to_defaults(self):
        record = parse_record("v=DMARC1; p=reject; sp=maybe; adkim=x; aspf=; pct=150; fo=9")
        self.assertEqual(
            (record.policy, record.subdomain_policy, record.adkim, record.aspf, record.pct),
            ("reject", None, "r", "r", 100),
        )
        self.assertEqual(record.ignored, ("adkim", "aspf", "pct", "sp"))

    def test_missing_or_bad_policy(self):
        # With a report address the record counts as p=none (RFC 7489 6.6.3).
        self.assertEqual(parse_record("v=DMARC1; rua=mailto:d@example.org").policy, "none")
        self.assertEqual(parse_record("v=DMARC1; p=block; rua=mailto:d@x").policy, "none")
        for text in (
            "v=DMARC1",
            "v=DMARC1; p=block",
            "v=DMARC2; p=reject",
            "p=reject; v=DMARC1",
            "v=DMARC1; p=reject; garbage",
            "v=DMARC1; p=reject; 9x=1",
            "",
        ):
            with self.assertRaises(RecordError, msg=text):
                parse_record(text)

    def test_organizational_domain(self):
        self.assertEqual(organizational_domain("mail.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("a.b.example.org."), "example.org")
        self.assertEqual(organizational_domain("example.org"), "example.org")
        self.assertEqual(organizational_domain("co.uk"), "co.uk")
        self.assertEqual(organizational_domain("Mail.Example.TEST"), "example.test")

    def test_aligned(self):
        self.assertTrue(aligned("mail.example.org", "example.org", "r"))
        self.assertTrue(aligned("example.org", "news.example.org", "r"))
        self.assertFalse(aligned("mail.example.org", "example.org", "s"))
        self.assertTrue(aligned("EXAMPLE.org.", "example.org", "s"))
        self.assertFalse(aligned("example.net", "example.org", "r"))
        self.assertFalse(aligned("a.co.uk", "b.co.uk", "r"))
        self.assertFalse(aligned("", "example.org", "r"))


def found(record: str, at="example.org", from_domain="example.org"):
    return Discovery(from_domain, organizational_domain(from_domain), at, parse_record(record))


class EvaluateTests(unittest.SynchronousTestCase):
    def test_pass_by_either(self):
        d = found("v=DMARC1; p=reject")
        self.assertEqual(evaluate(d, ("pass", "bounce.example.org"), []).result, "pass")
        e = evaluate(d, ("fail", "example.org"), [("fail", "x.example"), ("pass", "example.org")])
        self.assertEqual((e.result, e.spf_aligned, e.dkim_aligned), ("pass", False, True))

    def test_strict_alignment(self):
        d = found("v=DMARC1; p=reject; aspf=s; adkim=s")
        e = evaluate(d, ("pass", "bounce.example.org"), [("pass", "mail.example.org")])
        self.assertEqual((e.result, e.disposition), ("fail", "reject"))

    def test_unaligned_pass_is_a_fail(self):
        d = found("v=DMARC1; p=quarantine")
        e = evaluate(d, ("pass", "mailer.example"), [("pass", "mailer.example")])
        self.assertEqual((e.result, e.policy, e.disposition), ("fail", "quarantine", "quarantine"))

    def test_subdomain_policy(self):
        d = found("v=DMARC1; p=reject; sp=quarantine", "example.org", "news.example.org")
        self.assertEqual(evaluate(d, ("none", ""), []).policy, "quarantine")
        d = found("v=DMARC1; p=reject", "example.org", "news.example.org")
        self.assertEqual(evaluate(d, ("none", ""), []).policy, "reject")
        # A record at the From domain itself: its p=.
        d = found("v=DMARC1; p=none; sp=reject", "news.example.org", "news.example.org")
        self.assertEqual(evaluate(d, ("none", ""), []).policy, "none")

    def test_pct(self):
        d = found("v=DMARC1; p=reject; pct=20")
        kept = evaluate(d, ("fail", "example.org"), [], FixedRandom(0.1))
        self.assertEqual((kept.disposition, kept.sampled_out), ("reject", False))
        spared = evaluate(d, ("fail", "example.org"), [], FixedRandom(0.5))
        self.assertEqual((spared.disposition, spared.sampled_out), ("quarantine", True))
        d = found("v=DMARC1; p=quarantine; pct=0")
        self.assertEqual(evaluate(d, ("none", ""), [], FixedRandom(0.0)).disposition, "none")

    def test_temperror_of_an_aligned_check(self):
        d = found("v=DMARC1; p=reject")
        self.assertEqual(evaluate(d, ("temperror", "example.org"), []).result, "temperror")
        self.assertEqual(
            evaluate(d, ("none", ""), [("temperror", "example.org")]).result, "temperror"
        )
        self.assertEqual(evaluate(d, ("temperror", "other.example"), []).result, "fail")


class DiscoverTests(unittest.TestCase):
    timeout = 30

    async def discover(self, domain, zones, **kwargs):
        resolver, _, self.zone = zone_resolver(self, zones, **kwargs)
        return await discover(resolver, domain)

    async def test_from_domain_then_organizational_domain(self):
        zones = {
            "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject"), ("TXT", "other text")],
            "_dmarc.news.example.org": [("TXT", "v=DMARC1; p=none")],
        }
        d = await self.discover("news.example.org", zones)
        self.assertEqual((d.domain, d.record.policy), ("news.example.org", "none"))
        d = await self.discover("mail.example.org", zones)
        self.assertEqual(
            (d.domain, d.org_domain, d.record.policy), ("example.org", "example.org", "reject")
        )
        self.assertEqual(
            self.zone.queries, [("_dmarc.mail.example.org", 16), ("_dmarc.example.org", 16)]
        )
        d = await self.discover("example.net", zones)
        self.assertEqual((d.record, d.error), (None, ""))

    async def test_errors(self):
        zones = {
            "_dmarc.two.example": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")],
            "_dmarc.bad.example": [("TXT", "v=DMARC1; p=reject; !!")],
            "_dmarc.slow.example": [TIMEOUT],
        }
        d = await self.discover("two.example", zones, timeout=0.4)
        self.assertEqual((d.error, d.reason), ("permerror", "more than one DMARC record"))
        d = await self.discover("bad.example", zones, timeout=0.4)
        self.assertEqual(d.error, "permerror")
        d = await self.discover("slow.example", zones, timeout=0.4)
        self.assertEqual(d.error, "temperror")
