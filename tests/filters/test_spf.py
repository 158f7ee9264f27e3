"""The ``spf`` filter through the chain: smtplib against the MX on loopback, SPF records served by
a twisted.names server on loopback."""

from __future__ import annotations

from twisted.internet import threads

from haitatsu.filtering import FilterConfigError
from haitatsu.filtering.registry import builtin_package, discover
from tests.filters.helpers import MESSAGE, AuthMX, auth_header, spec
from tests.filters.zones import TIMEOUT

ZONES = {
    "example.org": [("TXT", "v=spf1 ip4:127.0.0.1 -all"), ("TXT", "unrelated text")],
    "fail.example": [("TXT", "v=spf1 ip4:192.0.2.1 exp=why.fail.example -all")],
    "why.fail.example": [("TXT", "See https://fail.example/spf for %{i}")],
    "soft.example": [("TXT", "v=spf1 ~all")],
    "neutral.example": [("TXT", "v=spf1 ?all")],
    "nospf.example": [("TXT", "just a text record")],
    "broken.example": [("TXT", "v=spf1 ip4:127.0.0.300 -all")],
    "unknown.example": [("TXT", "v=spf1 frobnicate -all")],
    "twice.example": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")],
    "slow.example": [TIMEOUT],
    "client.test": [("TXT", "v=spf1 a -all"), ("A", "127.0.0.1")],
    "include.example": [("TXT", "v=spf1 include:example.org -all")],
}


class SPFFilterTests(AuthMX):
    async def test_pass(self):
        await self.serve(ZONES, spec("spf"))
        self.assertEqual(await self.sendmail(), {})
        results, raw, score = await self.only()
        self.assertEqual((results["spf"], results["spf_domain"]), ("pass", "example.org"))
        self.assertEqual(score, 0)
        self.assertIn("spf=pass", auth_header(raw))
        self.assertIn("smtp.mailfrom=example.org", auth_header(raw))
        self.assertIn(
            "domain of alice@example.org designates 127.0.0.1 as permitted sender",
            auth_header(raw),
        )
        # pyspf asked our DNS server, through our resolver.
        self.assertIn(("example.org", 16), self.zone.queries)

    async def test_fail_is_recorded_by_default(self):
        await self.serve(ZONES, spec("spf"))
        self.assertEqual(await self.sendmail(sender="mallory@fail.example"), {})
        results, raw, score = await self.only()
        self.assertEqual(results["spf"], "fail")
        self.assertEqual(results["spf_domain"], "fail.example")
        self.assertEqual(results["spf_reason"], "See https://fail.example/spf for 127.0.0.1")
        self.assertEqual(results["spam_reasons"], ["spf_fail"])
        self.assertEqual(score, 2)
        self.assertIn("spf=fail", auth_header(raw))

    async def test_fail_rejected(self):
        await self.serve(ZONES, spec("spf", fail="reject"))
        self.assertEqual(
            await self.sendmail(sender="mallory@fail.example"),
            (
                550,
                b"5.7.23 SPF check failed for fail.example: "
                b"See https://fail.example/spf for 127.0.0.1",
            ),
        )
        self.assertEqual(await self.stored(), [])
        self.assertEqual(await self.sendmail(), {})  # a passing sender still gets through

    async def test_softfail_and_neutral(self):
        await self.serve(ZONES, spec("spf", softfail="quarantine"))
        self.assertEqual(await self.sendmail(sender="a@soft.example"), {})
        [(info, _)] = await self.stored(folder="Junk")
        self.assertEqual(info.auth_results["spf"], "softfail")
        self.assertEqual(info.spam_score, 1)
        self.assertEqual(await self.sendmail(sender="a@neutral.example"), {})
        results, _, score = await self.only()
        self.assertEqual((results["spf"], score), ("neutral", 0))

    async def test_none(self):
        await self.serve(ZONES, spec("spf"))
        for sender in ("a@nospf.example", "a@nxdomain.example"):
            self.assertEqual(await self.sendmail(sender=sender), {})
        results = [info.auth_results["spf"] for info, _ in await self.stored()]
        self.assertEqual(results, ["none", "none"])

    async def test_bad_records_are_permerrors(self):
        """Malformed SPF records give permerror, recorded; the session carries on."""
        await self.serve(ZONES, spec("spf"))

        def session():
            with self.client() as c:
                answers = []
                for sender in ("a@broken.example", "a@unknown.example", "a@twice.example"):
                    answers.append(c.sendmail(sender, ["bob@example.com"], MESSAGE))
                return answers

        self.assertEqual(await threads.deferToThread(session), [{}, {}, {}])
        results = [info.auth_results for info, _ in await self.stored()]
        self.assertEqual([r["spf"] for r in results], ["permerror"] * 3)
        self.assertIn("Two or more type TXT spf records", results[2]["spf_reason"])

    async def test_permerror_rejected(self):
        await self.serve(ZONES, spec("spf", permerror="reject"))
        code, text = await self.sendmail(sender="a@unknown.example")
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.24 SPF record of unknown.example is broken"), text)

    async def test_temperror(self):
        await self.serve(ZONES, spec("spf"), dns_timeout=0.4)
        self.assertEqual(await self.sendmail(sender="a@slow.example"), {})
        results, _, _ = await self.only()
        self.assertEqual(results["spf"], "temperror")

    async def test_temperror_tempfailed(self):
        await self.serve(ZONES, spec("spf", temperror="tempfail"), dns_timeout=0.4)
        self.assertEqual(
            await self.sendmail(sender="a@slow.example"),
            (451, b"4.7.24 SPF check of slow.example failed for now, try again later"),
        )

    async def test_null_sender_checks_helo(self):
        await self.serve(ZONES, spec("spf", fail="reject"))
        self.assertEqual(await self.sendmail(sender=""), {})
        results, raw, _ = await self.only()
        self.assertEqual((results["spf"], results["spf_domain"]), ("pass", "client.test"))
        self.assertIn("smtp.helo=client.test", auth_header(raw))

    async def test_include(self):
        await self.serve(ZONES, spec("spf"))
        self.assertEqual(await self.sendmail(sender="a@include.example"), {})
        self.assertEqual((await self.only())[0]["spf"], "pass")

    async def test_skip_networks(self):
        await self.serve(ZONES, spec("spf", fail="reject", skip_networks=["127.0.0.0/8"]))
        self.assertEqual(await self.sendmail(sender="mallory@fail.example"), {})
        self.assertEqual((await self.only())[0]["spf"], "")
        self.assertEqual(self.zone.queries, [])


class SPFOptionsTests(AuthMX):
    def build(self, **options):
        from types import MappingProxyType

        builtin_package()
        return discover()["spf"].build(MappingProxyType(options), None)

    def test_option_errors(self):
        for options, message in (
            ({"fail": "bounce"}, "filters[spf].fail: must be one of record, quarantine, reject"),
            ({"softfail": "reject"}, "filters[spf].softfail: must be one of"),
            ({"skip_networks": ["nope"]}, "filters[spf].skip_networks: 'nope' is not a network"),
            ({"query_seconds": 0}, "filters[spf].query_seconds: must be >= 1"),
            ({"fial": "reject"}, "filters[spf]: unknown option fial"),
        ):
            with self.assertRaises(FilterConfigError) as e:
                self.build(**options)
            self.assertIn(message, str(e.exception))
