"""pyspf's DNS through our resolver: per thread, never pyspf's own."""

from __future__ import annotations

import spf
from twisted.internet import defer, threads
from twisted.trial import unittest

from haitatsu.mailauth import spf as glue
from haitatsu.mailauth.spf import check_host
from tests.filters.zones import zone_resolver


class GlueTests(unittest.TestCase):
    timeout = 30

    async def test_each_check_uses_its_own_resolver(self):
        """Two checks running at once in two threads, each on its own DNS server with a
        different record for the same name, each get their server's answer."""
        _, allow, allow_zone = zone_resolver(self, {"example.org": [("TXT", "v=spf1 +all")]})
        _, deny, deny_zone = zone_resolver(self, {"example.org": [("TXT", "v=spf1 -all")]})
        checks = []
        for _ in range(5):
            for resolver in (allow, deny):
                checks.append(
                    threads.deferToThread(check_host, resolver, "192.0.2.1", "a@example.org", "h")
                )
        results = await defer.gatherResults(checks)
        self.assertEqual([r.result for r in results], ["pass", "fail"] * 5)
        self.assertTrue(allow_zone.queries and deny_zone.queries)

    async def test_identities(self):
        _, resolver, _ = zone_resolver(self, {"helo.example": [("TXT", "v=spf1 +all")]})
        outcome = await threads.deferToThread(check_host, resolver, "192.0.2.1", "", "helo.example")
        self.assertEqual(
            (outcome.result, outcome.identity, outcome.domain), ("pass", "helo", "helo.example")
        )
        for helo in ("", "[192.0.2.1]", "192.0.2.1"):
            outcome = await threads.deferToThread(check_host, resolver, "192.0.2.1", "", helo)
            self.assertEqual(outcome.result, "none")
        outcome = await threads.deferToThread(
            check_host, resolver, "not-an-ip", "a@helo.example", "h"
        )
        self.assertEqual(outcome.result, "permerror")

    async def test_refuses_when_someone_replaced_the_lookup(self):
        _, resolver, _ = zone_resolver(self, {})
        self.patch(spf, "DNSLookup", lambda *a, **k: [])
        with self.assertRaises(RuntimeError):
            await threads.deferToThread(check_host, resolver, "192.0.2.1", "a@b.example", "h")

    def test_outside_check_host_pyspf_keeps_its_own_lookup(self):
        calls = []
        self.patch(glue, "_library_lookup", lambda *args: calls.append(args) or [])
        self.assertEqual(spf.DNSLookup("example.org", "TXT", True, 5), [])
        self.assertEqual(calls, [("example.org", "TXT", True, 5)])
