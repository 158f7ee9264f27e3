"""A twisted.names DNS server on loopback that serves test zone data given as a dict.

``start_zone_server(testcase, {"example.com": [("TXT", "v=spf1 -all"), ("A", "192.0.2.1")]})``
answers queries for those names, for any domain (no zone cuts, no SOA needed): a name not in
the data is NXDOMAIN, a name without records of the type asked is an empty answer, a CNAME is
answered with the records of its target (as an authoritative server answers for a target in
its own zone). ``"TIMEOUT"`` in a name's list makes the server never answer queries for that
name of a type it has no records of; ``("TXT", "TIMEOUT")`` never answers that type. Names
under ``error.`` that are not in the data time out too (the RFC 7208 suite's convention).

Values: ``A``/``AAAA`` an address, ``MX`` ``(preference, host)``, ``PTR``/``CNAME`` a name,
``TXT``/``SPF`` a string or a list of strings (one record of several strings; a string longer
than 255 bytes is split into several).
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.names import common, dns, error, server

from haitatsu.dns import BlockingResolver, Resolver

TIMEOUT = "TIMEOUT"

_TYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "PTR": dns.PTR,
    "TXT": dns.TXT,
    "SPF": dns.SPF,
    "CNAME": dns.CNAME,
}


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _payload(rtype: str, value, ttl: int):
    if rtype == "A":
        return dns.Record_A(value, ttl=ttl)
    if rtype == "AAAA":
        return dns.Record_AAAA(value, ttl=ttl)
    if rtype == "MX":
        preference, host = value
        return dns.Record_MX(int(preference), host, ttl=ttl)
    if rtype == "PTR":
        return dns.Record_PTR(value, ttl=ttl)
    if rtype == "CNAME":
        return dns.Record_CNAME(value, ttl=ttl)
    strings = value if isinstance(value, (list, tuple)) else [value]
    record = dns.Record_SPF if rtype == "SPF" else dns.Record_TXT
    # A character-string is at most 255 bytes: longer ones are split, as zone files do.
    data = [
        chunk
        for s in map(_bytes, strings)
        for chunk in ([s[i : i + 255] for i in range(0, len(s), 255)] or [b""])
    ]
    return record(*data, ttl=ttl)


class ZoneData(common.ResolverBase):
    """The authority behind the server: ``{name: [(type, value) | "TIMEOUT"]}``."""

    def __init__(self, data: dict, ttl: int = 60):
        super().__init__()
        self.ttl = ttl
        self.data = {name.lower().rstrip("."): list(entries) for name, entries in data.items()}
        self.queries: list[tuple[str, int]] = []

    def _records(self, name: str, qtype: int):
        """``(records, silent)`` for ``name`` and ``qtype``; None when the name is absent."""
        entries = self.data.get(name)
        if entries is None:
            return None
        silent = TIMEOUT in entries
        found = []
        for entry in entries:
            if entry == TIMEOUT:
                continue
            rtype, value = entry
            if _TYPES[rtype] != qtype:
                continue
            if value == TIMEOUT:
                return [], True
            silent = False
            payload = _payload(rtype, value, self.ttl)
            found.append(dns.RRHeader(name, qtype, dns.IN, self.ttl, payload, auth=True))
        return found, silent and not found

    def _lookup(self, name, cls, type, timeout):
        name = name.decode("utf-8", "replace").lower().rstrip(".")
        self.queries.append((name, type))
        answers = []
        seen = set()
        while True:
            got = self._records(name, type)
            if got is None:
                if name.startswith("error."):
                    return defer.Deferred()  # never answers
                if answers:
                    break
                return defer.fail(error.DomainError(name))
            records, silent = got
            if silent:
                return defer.Deferred()
            if records:
                answers.extend(records)
                break
            cnames, _ = self._records(name, dns.CNAME)
            if type == dns.CNAME or not cnames or name in seen:
                break
            seen.add(name)
            answers.extend(cnames)
            name = str(cnames[0].payload.name).lower().rstrip(".")
        return defer.succeed((answers, [], []))


def start_zone_server(testcase, data: dict, ttl: int = 60) -> tuple[int, ZoneData]:
    """Serve ``data`` on a UDP port of 127.0.0.1 until the test ends: ``(port, authority)``."""
    zone = ZoneData(data, ttl)
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, zone


def zone_resolver(testcase, data: dict, timeout: float = 2.0, **kwargs):
    """``(Resolver, BlockingResolver, ZoneData)`` on a zone server for ``data``."""
    port, zone = start_zone_server(testcase, data)
    resolver = Resolver(reactor, servers=[("127.0.0.1", port)], timeout=timeout, **kwargs)
    return resolver, BlockingResolver(resolver, reactor), zone
