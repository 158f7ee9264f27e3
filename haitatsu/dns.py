"""DNS for filters: asynchronous lookups through twisted.names, with a small cache.

``Resolver`` asks the name servers of ``dns.nameservers`` (the system's ``/etc/resolv.conf`` when
empty) and keeps answers as long as their TTL says (capped, and at most ``cache_size`` of them,
least recently used first out). Failures are exceptions with a meaning a filter can act on:
``NameNotFound`` (NXDOMAIN: the name does not exist) and ``TemporaryDNSError`` (timeout, SERVFAIL,
refused: try again later). A name that exists but has no record of the type asked for is an
empty list, not an error.

Blocking libraries that take a DNS function (dkimpy's ``dnsfunc``, pyspf's lookup) run in
threads; ``BlockingResolver`` gives them answers from the same resolver and cache by calling
into the reactor and waiting. Called in the reactor thread it would wait for ever for the reactor
it is blocking, so there it refuses with ``RuntimeError``.
"""

from __future__ import annotations

import collections
import queue

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as names_error
from twisted.python import threadable
from twisted.python.failure import Failure

#: Longest time an answer is kept, whatever its TTL.
MAX_TTL = 3600
#: How long "no such name" and "no such record" are kept when the answer has no SOA to say.
NEGATIVE_TTL = 60
#: Cap on how long a negative answer is kept.
MAX_NEGATIVE_TTL = 300


class DNSError(Exception):
    """A lookup failed."""


class NameNotFound(DNSError):
    """NXDOMAIN: the name does not exist."""


class TemporaryDNSError(DNSError):
    """No usable answer now (timeout, SERVFAIL, refused, a bad response): try again later."""


_TYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "TXT": dns.TXT,
    "PTR": dns.PTR,
    "CNAME": dns.CNAME,
    "NS": dns.NS,
    "SOA": dns.SOA,
}


def record_type(rtype) -> int:
    """``"TXT"`` or ``dns.TXT`` as the numeric type."""
    if isinstance(rtype, int):
        return rtype
    try:
        return _TYPES[str(rtype).upper()]
    except KeyError:
        raise ValueError(f"unknown DNS record type {rtype!r}") from None


def _normal(name) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return str(name).strip().rstrip(".").lower()


def reverse_name(ip: str) -> str:
    """The ``in-addr.arpa``/``ip6.arpa`` style labels of an address, without the suffix, for
    PTR and DNSBL lookups: ``1.2.3.4`` -> ``4.3.2.1``, IPv6 nibble by nibble."""
    import ipaddress

    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


@attrs.frozen
class _Entry:
    expires: float
    records: tuple | None
    error: Exception | None = None


class Resolver:
    """Asynchronous DNS with a TTL-respecting, bounded cache (see the module docstring).

    ``servers`` is a list of ``(host, port)``; None or empty uses ``/etc/resolv.conf``.
    ``timeout`` is the total time a query may take (one retry included). ``clock`` (default
    ``reactor``) is what the cache measures TTLs with.
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        servers=None,
        timeout: float = 5.0,
        cache_size: int = 10000,
        clock=None,
    ):
        self._reactor = reactor
        self._clock = clock or reactor
        self.servers = list(servers or [])
        self.timeout = float(timeout)
        first = min(1.0, self.timeout / 2)
        self._timeouts = (first, max(self.timeout - first, first))
        self.cache_size = cache_size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._inflight: dict = {}
        self._client = None
        #: Lookups that went to the network (the cache's effect, for tests and metrics).
        self.queries_sent = 0

    @classmethod
    def from_config(cls, dns_config, reactor) -> Resolver:
        return cls(
            reactor,
            servers=dns_config.servers(),
            timeout=dns_config.timeout_seconds,
            cache_size=dns_config.cache_size,
        )

    def same_settings(self, dns_config) -> bool:
        """Whether ``dns_config`` would build this resolver (a reload keeps it and its cache)."""
        return (
            self.servers == dns_config.servers()
            and self.timeout == float(dns_config.timeout_seconds)
            and self.cache_size == dns_config.cache_size
        )

    def _resolver(self):
        # Built on first use: with resolv.conf, twisted.names re-reads the file every minute,
        # a timer nobody needs in a process that never asks.
        if self._client is None:
            if self.servers:
                self._client = client.Resolver(
                    servers=self.servers, reactor=self._reactor, timeout=self._timeouts
                )
            else:
                self._client = client.Resolver(
                    resolv="/etc/resolv.conf", reactor=self._reactor, timeout=self._timeouts
                )
        return self._client

    # -- lookups ---------------------------------------------------------------------------

    async def query(self, name, rtype) -> list:
        """The payloads (``twisted.names.dns.Record_*``) of the records of type ``rtype`` at
        ``name``; [] when it has none. ``NameNotFound``, ``TemporaryDNSError``."""
        key = (_normal(name), record_type(rtype))
        now = self._clock.seconds()
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > now:
                self._cache.move_to_end(key)
                if entry.error is not None:
                    raise entry.error
                return list(entry.records)
            del self._cache[key]
        waiting = self._inflight.get(key)
        if waiting is not None:
            d = defer.Deferred()
            waiting.append(d)
            return list(await d)
        self._inflight[key] = waiters = []
        try:
            records, ttl, error = await self._fetch(*key)
        except BaseException as e:
            del self._inflight[key]
            for d in waiters:
                d.errback(Failure(e))
            raise
        del self._inflight[key]
        if ttl > 0:
            self._store(key, _Entry(self._clock.seconds() + ttl, tuple(records), error))
        for d in waiters:
            if error is not None:
                d.errback(Failure(error))
            else:
                d.callback(records)
        if error is not None:
            raise error
        return list(records)

    async def _fetch(self, name: str, rtype: int):
        """``(records, ttl, error)``: error is a ``NameNotFound`` to cache; temporary failures
        are raised (and not cached)."""
        self.queries_sent += 1
        try:
            answers, authority, _ = await self._resolver().query(
                dns.Query(name, rtype, dns.IN), timeout=self._timeouts
            )
        except names_error.DNSNameError as e:
            message = e.args[0] if e.args else None
            ttl = _negative_ttl(getattr(message, "authority", ()))
            return (), ttl, NameNotFound(f"{name}: no such name")
        except (defer.TimeoutError, names_error.DNSQueryTimeoutError):
            raise TemporaryDNSError(f"{name}: timed out") from None
        except names_error.DomainError as e:
            raise TemporaryDNSError(f"{name}: {type(e).__name__}") from None
        except Exception as e:
            raise TemporaryDNSError(f"{name}: {e}") from None
        wanted = [r for r in answers if r.type == rtype]
        if not wanted:
            return (), _negative_ttl(authority), None
        ttl = min(int(r.ttl) for r in wanted)
        return tuple(r.payload for r in wanted), min(ttl, MAX_TTL), None

    def _store(self, key, entry: _Entry) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def txt(self, name) -> list[str]:
        """Each TXT record at ``name``, its strings joined (RFC 7208 3.3), as text."""
        return [
            b"".join(r.data).decode("utf-8", "replace") for r in await self.query(name, dns.TXT)
        ]

    async def a(self, name) -> list[str]:
        return [r.dottedQuad() for r in await self.query(name, dns.A)]

    async def aaaa(self, name) -> list[str]:
        import socket

        return [
            socket.inet_ntop(socket.AF_INET6, r.address) for r in await self.query(name, "AAAA")
        ]

    async def mx(self, name) -> list[tuple[int, str]]:
        """``(preference, host)`` pairs, lowest preference first."""
        records = await self.query(name, dns.MX)
        return sorted((r.preference, str(r.name).rstrip(".").lower()) for r in records)

    async def ptr(self, ip: str) -> list[str]:
        """The reverse names of an address."""
        import ipaddress

        suffix = "in-addr.arpa" if ipaddress.ip_address(ip).version == 4 else "ip6.arpa"
        records = await self.query(f"{reverse_name(ip)}.{suffix}", dns.PTR)
        return [str(r.name).rstrip(".").lower() for r in records]


def _negative_ttl(authority) -> int:
    for record in authority or ():
        if record.type == dns.SOA:
            return max(0, min(int(record.ttl), int(record.payload.minimum), MAX_NEGATIVE_TTL))
    return NEGATIVE_TTL


class BlockingResolver:
    """``Resolver`` for code running in a thread: each call waits (at most the resolver's
    timeout and a little) for the lookup the reactor does. Refuses in the reactor thread."""

    def __init__(self, resolver: Resolver, reactor):
        self.resolver = resolver
        self._reactor = reactor

    def _wait(self, make):
        if threadable.isInIOThread():
            raise RuntimeError(
                "BlockingResolver called in the reactor thread, which it would block for ever; "
                "use the asynchronous Resolver there"
            )
        answers: queue.Queue = queue.Queue()

        def start():
            d = defer.Deferred.fromCoroutine(make())
            d.addBoth(answers.put)

        self._reactor.callFromThread(start)
        try:
            result = answers.get(timeout=self.resolver.timeout + 5)
        except queue.Empty:
            raise TemporaryDNSError("no answer from the reactor") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def query(self, name, rtype) -> list:
        return self._wait(lambda: self.resolver.query(name, rtype))

    def txt(self, name) -> list[str]:
        return self._wait(lambda: self.resolver.txt(name))

    def a(self, name) -> list[str]:
        return self._wait(lambda: self.resolver.a(name))

    def mx(self, name) -> list[tuple[int, str]]:
        return self._wait(lambda: self.resolver.mx(name))

    def dkimpy_dnsfunc(self, name, timeout=5) -> bytes:
        """dkimpy's ``dnsfunc(name, timeout=5)``: the first TXT record at ``name`` as bytes,
        ``b""`` when there is none (dkimpy reads that as "no key")."""
        try:
            records = self.query(_normal(name), dns.TXT)
        except NameNotFound:
            return b""
        for record in records:
            return b"".join(record.data)
        return b""
