"""The ``dmarc`` filter after ``spf`` and ``dkim`` in the chain: smtplib against the MX on
loopback, SPF records, DKIM keys and DMARC policies served by a twisted.names server on
loopback."""

from __future__ import annotations

from twisted.internet import threads

from tests.filters.helpers import AuthMX, auth_header, dkim_sign, message, signing_key, spec
from tests.filters.zones import TIMEOUT


def zones():
    key = [("TXT", signing_key()[1])]
    return {
        "example.org": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject; sp=none; rua=mailto:d@example.org")],
        "sel._domainkey.example.org": key,
        "pass.example": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        "_dmarc.pass.example": [("TXT", "v=DMARC1; p=reject")],
        "quarantine.example": [("TXT", "v=spf1 -all")],
        "_dmarc.quarantine.example": [("TXT", "v=DMARC1; p=quarantine")],
        "_dmarc.none.example": [("TXT", "v=DMARC1; p=none")],
        "_dmarc.sampled.example": [("TXT", "v=DMARC1; p=reject; pct=0")],
        "_dmarc.badtags.example": [("TXT", "v=DMARC1; p=reject; adkim=x; pct=abc; sp=?")],
        "_dmarc.invalid.example": [("TXT", "v=DMARC1; p=bogus")],
        "_dmarc.slow.example": [TIMEOUT],
        "mailer.example": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        "sel._domainkey.mailer.example": key,
    }


CHAIN = (spec("spf"), spec("dkim"))


class DMARCFilterTests(AuthMX):
    async def serve_dmarc(self, **options):
        await self.serve(zones(), *CHAIN, spec("dmarc", **options), dns_timeout=0.4)

    async def test_reject(self):
        await self.serve_dmarc()
        self.assertEqual(
            await self.sendmail(),
            (550, b"5.7.1 rejected by the DMARC policy of example.org"),
        )
        self.assertEqual(await self.stored(), [])
        # Unaligned authentication does not help: SPF and DKIM pass for mailer.example.
        signed = dkim_sign(message(), domain="mailer.example")
        self.assertEqual((await self.sendmail(signed, sender="bounce@mailer.example"))[0], 550)

    async def test_dkim_signed_message_passes(self):
        await self.serve_dmarc()
        self.assertEqual(await self.sendmail(dkim_sign(message())), {})
        results, raw, score = await self.only()
        self.assertEqual(
            (results["spf"], results["dkim"], results["dmarc"], results["dmarc_policy"]),
            ("fail", "pass", "pass", "reject"),
        )
        self.assertEqual(results["dmarc_alignment"], {"spf": False, "dkim": True})
        self.assertEqual(score, 2)  # SPF fail still counts
        header = auth_header(raw)
        self.assertLess(header.index("spf=fail"), header.index("dkim=pass"))
        self.assertIn("dmarc=pass (p=REJECT dis=NONE) header.from=example.org", header)

    async def test_aligned_spf_passes(self):
        await self.serve_dmarc()
        data = message("a@pass.example")
        self.assertEqual(await self.sendmail(data, sender="bounce@pass.example"), {})
        results, _, _ = await self.only()
        self.assertEqual(
            (results["dmarc"], results["dmarc_alignment"]), ("pass", {"spf": True, "dkim": False})
        )

    async def test_quarantine(self):
        await self.serve_dmarc()
        data = message("a@quarantine.example")
        self.assertEqual(await self.sendmail(data, sender="a@quarantine.example"), {})
        self.assertEqual(await self.stored(), [])
        [(info, raw)] = await self.stored(folder="Junk")
        results = info.auth_results
        self.assertEqual(results["spam_reasons"], ["spf_fail", "dmarc_fail", "dmarc_quarantine"])
        self.assertEqual(info.spam_score, 2 + 3 + 2)
        self.assertIn(
            {
                "name": "dmarc",
                "stage": "data",
                "action": "quarantine",
                "reason": "dmarc_quarantine",
            },
            results["filters"],
        )
        self.assertIn("dmarc=fail (p=QUARANTINE dis=QUARANTINE)", auth_header(raw))

    async def test_policy_none_and_subdomain_policy(self):
        await self.serve_dmarc()
        self.assertEqual(await self.sendmail(message("a@none.example")), {})
        self.assertEqual(await self.sendmail(message("a@news.example.org")), {})
        first, second = [info.auth_results for info, _ in await self.stored()]
        self.assertEqual((first["dmarc"], first["dmarc_policy"]), ("fail", "none"))
        self.assertEqual(first["spam_reasons"], ["spf_fail", "dmarc_fail"])
        # news.example.org has no record; example.org's sp=none applies.
        self.assertEqual((second["dmarc"], second["dmarc_policy"]), ("fail", "none"))
        self.assertEqual(second["dmarc_domain"], "news.example.org")

    async def test_pct_sampling(self):
        """pct=0: no message is subject to p=reject; quarantine applies instead (RFC 7489
        6.3)."""
        await self.serve_dmarc()
        self.assertEqual(await self.sendmail(message("a@sampled.example")), {})
        [(info, _)] = await self.stored(folder="Junk")
        self.assertEqual(info.auth_results["dmarc_disposition"], "quarantine")
        self.assertEqual(info.auth_results["dmarc_override"], "sampled_out")

    async def test_invalid_records_never_crash_the_session(self):
        await self.serve_dmarc()

        def session():
            with self.client() as c:
                out = []
                for data in (
                    message("a@invalid.example"),
                    message("a@badtags.example"),
                    message("Two <a@one.example>, b@two.example"),
                    message("nobody"),
                ):
                    try:
                        out.append(c.sendmail("x@mailer.example", ["bob@example.com"], data))
                    except Exception as e:
                        out.append(e.smtp_code)
                return out

        self.assertEqual(await threads.deferToThread(session), [{}, 550, {}, {}])
        results = [info.auth_results for info, _ in await self.stored()]
        self.assertEqual(
            [(r["dmarc"], r.get("dmarc_reason")) for r in results],
            [
                ("permerror", "no valid p= (and no rua=)"),
                ("permerror", "From addresses in several domains"),
                ("permerror", "no From address"),
            ],
        )

    async def test_temperror(self):
        await self.serve_dmarc()
        self.assertEqual(
            await self.sendmail(message("a@slow.example")),
            (451, b"4.7.1 DMARC check of slow.example failed for now, try again later"),
        )

    async def test_temperror_recorded(self):
        await self.serve_dmarc(temperror="record")
        self.assertEqual(await self.sendmail(message("a@slow.example")), {})
        self.assertEqual((await self.only())[0]["dmarc"], "temperror")

    async def test_action_quarantine_and_record(self):
        await self.serve_dmarc(action="quarantine")
        self.assertEqual(await self.sendmail(), {})
        [(info, _)] = await self.stored(folder="Junk")
        self.assertEqual(
            info.auth_results["spam_reasons"], ["spf_fail", "dmarc_fail", "dmarc_reject"]
        )
        self.assertEqual(info.spam_score, 2 + 3 + 10)

    async def test_action_record(self):
        await self.serve_dmarc(action="record")
        self.assertEqual(await self.sendmail(), {})
        results, _, _ = await self.only()
        self.assertEqual((results["dmarc"], results["dmarc_disposition"]), ("fail", "reject"))
