"""GET /api/v1/dns/check/:domain against a twisted.names authoritative server on 127.0.0.1."""

from __future__ import annotations

import os

import attrs
from twisted.internet import reactor
from twisted.names import authority, dns, server
from twisted.trial import unittest

from haitatsu.api.dnscheck import dkim_check
from haitatsu.config.model import DNSConfig, ServerConfig
from tests.api.client import APIClient, LiveConfig
from tests.support import make_store

ZONE = """
zone = [
    SOA("good.test", mname="ns.good.test", rname="root.good.test", serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    MX("good.test", 10, "MX.Haitatsu.Test."),
    TXT("good.test", b"v=spf1 mx -all"),
    TXT("good.test", b"google-site-verification=abc"),
    TXT("_dmarc.good.test", b"v=DMARC1; p=reject"),
    TXT("sel._domainkey.good.test", b"v=DKIM1; k=rsa; p=MIGf"),
    SOA("odd.test", mname="ns.odd.test", rname="root.odd.test", serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    MX("odd.test", 10, "mail.elsewhere.example"),
    TXT("odd.test", b"something else"),
    TXT("_dmarc.odd.test", b"p=none"),
]
"""


async def start_dns_server(testcase) -> int:
    path = os.path.join(testcase.mktemp())
    os.makedirs(path)
    zone_file = os.path.join(path, "zone.py")
    with open(zone_file, "w") as f:
        f.write(ZONE)
    factory = server.DNSServerFactory(authorities=[authority.PySourceAuthority(zone_file)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


class DNSCheckTests(unittest.TestCase):
    async def setUp(self):
        dns_port = await start_dns_server(self)
        config = LiveConfig()
        config.config = attrs.evolve(
            config.config,
            server=ServerConfig(public_hostname="mx.haitatsu.test"),
            dns=DNSConfig(nameservers=[f"127.0.0.1:{dns_port}"]),
        )
        self.store = await make_store(self)
        self.client = APIClient(self.store, config=config)

    async def check(self, domain):
        answer = await self.client.get(f"/api/v1/dns/check/{domain}")
        self.assertEqual(answer.status, 200, answer.body)
        return answer.json["data"]

    async def test_a_domain_that_points_here(self):
        result = await self.check("Good.Test")
        self.assertEqual(result["domain"], "good.test")
        statuses = {c["name"]: c["status"] for c in result["checks"]}
        self.assertEqual([c["name"] for c in result["checks"]], ["mx", "dkim", "spf", "dmarc"])
        self.assertEqual(statuses["mx"], "ok")
        self.assertEqual(statuses["spf"], "ok")
        self.assertEqual(statuses["dmarc"], "ok")
        # No DKIM key stored for the domain yet: missing, whatever DNS says.
        self.assertEqual(statuses["dkim"], "missing")
        await self.store.create_dkim_key("good.test", "sel", "rsa", "private", "public")
        result = await self.check("good.test")
        self.assertEqual(result["checks"][1]["status"], "ok")
        self.assertIn("sel._domainkey.good.test", result["checks"][1]["message"])
        self.assertEqual(result["checks"][2]["message"], "v=spf1 mx -all")

    async def test_a_domain_that_points_elsewhere(self):
        result = await self.check("odd.test")
        statuses = {c["name"]: c["status"] for c in result["checks"]}
        self.assertEqual(
            statuses, {"mx": "warning", "dkim": "missing", "spf": "warning", "dmarc": "warning"}
        )
        self.assertIn("mx.haitatsu.test", result["checks"][0]["message"])

    async def test_a_domain_with_nothing(self):
        result = await self.check("absent.test")
        self.assertEqual({c["status"] for c in result["checks"]}, {"missing"})

    async def test_blank_domain(self):
        answer = await self.client.get("/api/v1/dns/check/%20")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "domain_required"))

    def test_dkim_record_rules(self):
        self.assertEqual(dkim_check("sel", ["v=DKIM1; p=x"], "d.test")["status"], "ok")
        self.assertEqual(dkim_check("sel", ["p=x"], "d.test")["status"], "warning")
        self.assertEqual(dkim_check("sel", [], "d.test")["status"], "missing")
        self.assertEqual(dkim_check(None, [], "d.test")["status"], "missing")
