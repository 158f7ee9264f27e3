"""haitatsu.dns against a twisted.names authoritative server on 127.0.0.1: answers, the cache
(TTL, negative answers, size), failures, and the blocking facade used from threads (dkimpy)."""

from __future__ import annotations

import time

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from haitatsu import dkim as dkimmod
from haitatsu.dns import (
    NEGATIVE_TTL,
    BlockingResolver,
    NameNotFound,
    Resolver,
    TemporaryDNSError,
    reverse_name,
)
from tests.filtering.helpers import soa, start_dns_server, start_silent_server

ZONE = f"""
zone = [
    {soa("dns.test", ttl=30)}
    TXT("dns.test", b"v=spf1 -all", ttl=120),
    TXT("long.dns.test", b"first half, ", b"second half", ttl=120),
    A("host.dns.test", "192.0.2.1", ttl=2),
    A("host.dns.test", "192.0.2.2", ttl=5),
    AAAA("host.dns.test", "2001:db8::1"),
    MX("dns.test", 20, "mx2.dns.test"),
    MX("dns.test", 10, "MX1.dns.test."),
    CNAME("alias.dns.test", "host.dns.test"),
    A("other.dns.test", "192.0.2.9"),
]
"""


def run(coroutine):
    return defer.Deferred.fromCoroutine(coroutine)


class ResolverTests(unittest.TestCase):
    def setUp(self):
        self.port = start_dns_server(self, ZONE)
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.resolver = Resolver(reactor, servers=[("127.0.0.1", self.port)], clock=self.clock)

    async def test_record_types(self):
        self.assertEqual(await self.resolver.txt("dns.test"), ["v=spf1 -all"])
        self.assertEqual(await self.resolver.txt("long.dns.test"), ["first half, second half"])
        self.assertEqual(
            sorted(await self.resolver.a("Host.DNS.test.")), ["192.0.2.1", "192.0.2.2"]
        )
        self.assertEqual(await self.resolver.aaaa("host.dns.test"), ["2001:db8::1"])
        self.assertEqual(
            await self.resolver.mx("dns.test"), [(10, "mx1.dns.test"), (20, "mx2.dns.test")]
        )

    async def test_missing_name_and_missing_type(self):
        with self.assertRaises(NameNotFound):
            await self.resolver.txt("nothing.dns.test")
        # The name exists, with no TXT record: no error, no answers.
        self.assertEqual(await self.resolver.txt("other.dns.test"), [])

    async def test_cache_keeps_answers_for_their_ttl(self):
        await self.resolver.a("host.dns.test")
        await self.resolver.a("HOST.dns.test")
        self.assertEqual(self.resolver.queries_sent, 1)
        # The smallest TTL of the answer (2 s) decides.
        self.clock.advance(2.5)
        await self.resolver.a("host.dns.test")
        self.assertEqual(self.resolver.queries_sent, 2)

    async def test_negative_answers_are_cached(self):
        """NXDOMAIN is kept for the SOA's minimum when the answer carries the SOA, else for
        ``NEGATIVE_TTL`` (twisted.names' authority sends none with NXDOMAIN)."""
        for _ in range(2):
            with self.assertRaises(NameNotFound):
                await self.resolver.a("gone.dns.test")
        self.assertEqual(await self.resolver.txt("other.dns.test"), [])
        self.assertEqual(await self.resolver.txt("other.dns.test"), [])
        self.assertEqual(self.resolver.queries_sent, 2)
        self.clock.advance(NEGATIVE_TTL + 1)
        with self.assertRaises(NameNotFound):
            await self.resolver.a("gone.dns.test")
        self.assertEqual(self.resolver.queries_sent, 3)

    async def test_concurrent_lookups_share_one_query(self):
        answers = await defer.gatherResults([run(self.resolver.txt("dns.test")) for _ in range(5)])
        self.assertEqual(answers, [["v=spf1 -all"]] * 5)
        self.assertEqual(self.resolver.queries_sent, 1)
        failures = await defer.DeferredList(
            [run(self.resolver.a("gone2.dns.test")) for _ in range(3)], consumeErrors=True
        )
        self.assertEqual([ok for ok, _ in failures], [False] * 3)
        self.assertTrue(all(f.check(NameNotFound) for _, f in failures))
        self.assertEqual(self.resolver.queries_sent, 2)

    async def test_cache_is_bounded(self):
        resolver = Resolver(
            reactor, servers=[("127.0.0.1", self.port)], clock=self.clock, cache_size=2
        )
        for name in ("dns.test", "long.dns.test", "other.dns.test", "dns.test"):
            await resolver.query(name, "TXT")
        self.assertEqual(resolver.queries_sent, 4)  # dns.test was evicted by the third
        self.assertEqual(len(resolver._cache), 2)

    async def test_timeout_is_a_temporary_error_and_not_cached(self):
        silent = start_silent_server(self)
        resolver = Resolver(reactor, servers=[("127.0.0.1", silent)], timeout=0.4)
        started = time.monotonic()
        with self.assertRaises(TemporaryDNSError):
            await resolver.txt("dns.test")
        self.assertLess(time.monotonic() - started, 3)
        with self.assertRaises(TemporaryDNSError):
            await resolver.txt("dns.test")
        self.assertEqual(resolver.queries_sent, 2)

    def test_reverse_names(self):
        self.assertEqual(reverse_name("192.0.2.7"), "7.2.0.192")
        self.assertEqual(
            reverse_name("2001:db8::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
        )


class BlockingResolverTests(unittest.TestCase):
    def setUp(self):
        self.zone_extra = ""

    async def test_from_a_thread(self):
        port = start_dns_server(self, ZONE)
        blocking = BlockingResolver(Resolver(reactor, servers=[("127.0.0.1", port)]), reactor)
        self.assertEqual(await threads.deferToThread(blocking.txt, "dns.test"), ["v=spf1 -all"])
        with self.assertRaises(NameNotFound):
            await threads.deferToThread(blocking.a, "gone.dns.test")

    def test_refuses_in_the_reactor_thread(self):
        blocking = BlockingResolver(Resolver(reactor, servers=[("127.0.0.1", 9)]), reactor)
        with self.assertRaises(RuntimeError) as caught:
            blocking.txt("dns.test")
        self.assertIn("reactor thread", str(caught.exception))

    async def test_dkimpy_gets_its_keys_from_our_resolver(self):
        """A message signed with dkimpy verifies in a thread with ``dkimpy_dnsfunc``: the key
        (a 2048-bit RSA record, longer than one TXT string) comes from our DNS server."""
        import dkim

        pair = await threads.deferToThread(dkimmod.generate_key, "rsa")
        record = dkimmod.dns_record("rsa", pair.public_pem).encode()
        chunks = ", ".join(repr(record[i : i + 200]) for i in range(0, len(record), 200))
        zone = ZONE.replace("]\n", f'    TXT("sel._domainkey.dns.test", {chunks}),\n]\n', 1)
        port = start_dns_server(self, zone)
        blocking = BlockingResolver(Resolver(reactor, servers=[("127.0.0.1", port)]), reactor)
        message = b"From: a@dns.test\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
        signed = dkim.sign(message, b"sel", b"dns.test", pair.private_pem.encode()) + message
        ok = await threads.deferToThread(dkim.verify, signed, dnsfunc=blocking.dkimpy_dnsfunc)
        self.assertTrue(ok)
        tampered = signed.replace(b"body", b"BODY")
        ok = await threads.deferToThread(dkim.verify, tampered, dnsfunc=blocking.dkimpy_dnsfunc)
        self.assertFalse(ok)
        self.assertEqual(
            await threads.deferToThread(blocking.dkimpy_dnsfunc, b"nokey._domainkey.dns.test."),
            b"",
        )
