"""Filters for tests, chains made of them, and a twisted.names DNS server on loopback."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.names import authority, dns, server
from zope.interface import implementer

from haitatsu.dns import Resolver
from haitatsu.filtering import (
    ChainEntry,
    FilterChain,
    FilterContext,
    IFilter,
    SessionInfo,
    Verdict,
)


@implementer(IFilter)
class Scripted:
    """A filter that answers from a script: ``{stage: Verdict | None | callable(context)}``.
    Every call is recorded as ``(stage, what the context showed)`` in ``calls``."""

    def __init__(self, name: str, script: dict, stages=None):
        self.name = name
        self.script = script
        self.stages = tuple(stages if stages is not None else script)
        self.calls: list = []

    def check(self, stage, context):
        self.calls.append(stage)
        answer = self.script[stage]
        if callable(answer) and not isinstance(answer, Verdict):
            return answer(context)
        return answer


def make_chain(*filters, clock=None, timeout=30.0, on_error="tempfail", resolver=None):
    entries = [
        ChainEntry(f.name, f, frozenset(f.stages), timeout=timeout, on_error=on_error)
        for f in filters
    ]
    return FilterChain(entries, clock=clock, resolver=resolver)


def make_context(config=None, clock=None, resolver=None, remote_ip="192.0.2.7"):
    session = SessionInfo(remote_ip=remote_ip, hostname="mx.example.test", helo="client.example")
    return FilterContext(session, resolver, config, clock)


def start_dns_server(testcase, *zones: str) -> int:
    """An authoritative twisted.names server on 127.0.0.1 serving ``zones`` (each in
    PySourceAuthority syntax: ``zone = [SOA(...), A(...), ...]``); its UDP port. Stopped after
    the test."""
    path = testcase.mktemp()
    os.makedirs(path)
    authorities = []
    for i, zone in enumerate(zones):
        zone_file = os.path.join(path, f"zone{i}.py")
        with open(zone_file, "w") as f:
            f.write(zone)
        authorities.append(authority.PySourceAuthority(zone_file))
    factory = server.DNSServerFactory(authorities=authorities)
    factory.noisy = False
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


class _Silent(DatagramProtocol):
    def datagramReceived(self, data, addr):
        pass


def start_silent_server(testcase) -> int:
    """A UDP port on 127.0.0.1 that never answers: DNS queries to it time out."""
    port = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


def resolver_for(testcase, port: int, **kwargs) -> Resolver:
    return Resolver(reactor, servers=[("127.0.0.1", port)], **kwargs)


def soa(name: str, ttl: int = 60) -> str:
    return (
        f'SOA("{name}", mname="ns.{name}", rname="root.{name}", serial=1, refresh=60, '
        f"retry=60, expire=60, minimum={ttl}, ttl={ttl}),"
    )
