"""GET /api/v1/dns/check/:domain against a twisted.names authoritative server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import urllib.request

import attrs
from twisted.internet import reactor, threads
from twisted.names import authority, dns, server
from twisted.trial import unittest

from haitatsu.api.dnscheck import dkim_check
from haitatsu.config.loader import load_config
from haitatsu.config.model import DNSConfig, ServerConfig
from haitatsu.dns import Resolver
from haitatsu.hub import HaitatsuService
from tests.api.client import APIClient, LiveConfig
from tests.config.test_loader import ConfigFileMixin
from tests.support import make_store
from tests.tls.test_hub import free_ports

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


class CountingServer(server.DNSServerFactory):
    """A DNS server that counts the queries it is asked."""

    queries = 0

    def handleQuery(self, message, protocol, address):
        self.queries += 1
        return super().handleQuery(message, protocol, address)


async def start_dns_server(testcase, factory_holder=None) -> int:
    path = os.path.join(testcase.mktemp())
    os.makedirs(path)
    zone_file = os.path.join(path, "zone.py")
    with open(zone_file, "w") as f:
        f.write(ZONE)
    factory = CountingServer(authorities=[authority.PySourceAuthority(zone_file)])
    if factory_holder is not None:
        factory_holder.append(factory)
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


class DNSCheckTests(unittest.TestCase):
    async def setUp(self):
        servers = []
        dns_port = await start_dns_server(self, servers)
        [self.server] = servers
        config = LiveConfig()
        config.config = attrs.evolve(
            config.config,
            server=ServerConfig(public_hostname="mx.haitatsu.test"),
            dns=DNSConfig(nameservers=[f"127.0.0.1:{dns_port}"]),
        )
        self.config = config
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

    async def test_answers_come_from_the_resolvers_cache(self):
        """The check asks DNS through a ``haitatsu.dns.Resolver`` (TTL cache): the same check
        again sends no query, and a reload that changes ``dns`` gets a new resolver."""
        first = await self.check("good.test")
        asked = self.server.queries
        self.assertEqual(asked, 3)  # MX, TXT, _dmarc TXT (no DKIM key stored)
        resolver = self.client.api.resolver()
        self.assertIsInstance(resolver, Resolver)
        self.assertEqual(await self.check("good.test"), first)
        self.assertEqual(self.server.queries, asked)
        self.assertIs(self.client.api.resolver(), resolver)
        self.config.config = attrs.evolve(
            self.config.config, dns=attrs.evolve(self.config.config.dns, timeout_seconds=2.0)
        )
        self.assertIsNot(self.client.api.resolver(), resolver)

    async def test_the_shared_resolver_is_used_when_given(self):
        """The hub hands the API the filters' resolver: the check's lookups are its."""
        shared = Resolver.from_config(self.config.config.dns, reactor)
        client = APIClient(self.store, config=self.config, resolver=lambda: shared)
        answer = await client.get("/api/v1/dns/check/odd.test")
        self.assertEqual(answer.status, 200)
        self.assertEqual(shared.queries_sent, 3)
        self.assertIs(client.api.resolver(), shared)

    def test_dkim_record_rules(self):
        self.assertEqual(dkim_check("sel", ["v=DKIM1; p=x"], "d.test")["status"], "ok")
        self.assertEqual(dkim_check("sel", ["p=x"], "d.test")["status"], "warning")
        self.assertEqual(dkim_check("sel", [], "d.test")["status"], "missing")
        self.assertEqual(dkim_check(None, [], "d.test")["status"], "missing")


HUB_CONFIG = """
server {{ api_addr = "127.0.0.1:{api}"; public_hostname = "mx.haitatsu.test"; data_dir = "data" }}
smtp {{ inbound_addr = "" }}
imap {{ addr = "" }}
pop3 {{ addr = "" }}
submission {{ starttls_addr = ""; tls_addr = "" }}
api {{ service_token = "hub-token" }}
dns {{ nameservers {{ "127.0.0.1:{dns}" }} }}
"""


class HubDNSCheckTests(ConfigFileMixin, unittest.TestCase):
    """Through the real hub: the API's checks go through the filters' resolver and cache."""

    timeout = 60

    async def test_the_hub_shares_the_filters_resolver_with_the_api(self):
        servers = []
        dns_port = await start_dns_server(self, servers)
        [api_port] = free_ports(1)
        path = self.write_config(HUB_CONFIG.format(api=api_port, dns=dns_port))
        hub = HaitatsuService(path, load_config(path), reactor)
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready

        def get():
            request = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/api/v1/dns/check/good.test",
                headers={"Authorization": "Bearer hub-token"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["data"]

        first = await threads.deferToThread(get)
        self.assertEqual([c["status"] for c in first["checks"]], ["ok", "missing", "ok", "ok"])
        self.assertEqual(hub.filtering.resolver.queries_sent, 3)
        self.assertEqual(await threads.deferToThread(get), first)
        self.assertEqual((servers[0].queries, hub.filtering.resolver.queries_sent), (3, 3))
