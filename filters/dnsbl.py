"""``dnsbl``: look the client's address up in DNS block lists (RFC 5782), at CONNECT.

For each zone the filter asks for the A record of the reversed address under the zone
(``2.0.0.127.zen.example`` for 127.0.0.2; IPv6 nibble by nibble) through the server's resolver,
all zones at once. An answer in 127.0.0.0/8 is a listing, except 127.255.255.0/24, which
Spamhaus and others use to say "query refused" (logged, not a listing); ``codes`` limits the
answers that count.

A listing adds the zone's ``score`` (``dnsbl:<zone>`` in ``spam_reasons``, the first listing
zone in ``auth_results.dnsbl``), and the zone's ``action`` may do more: ``quarantine`` sends the
message to Junk, ``reject`` refuses the connection (``554 5.7.1``). A lookup that fails is
recorded and otherwise ignored: a block list being down must not stop mail.

Options: ``zones`` (a Listing of zone names or of ``{zone, score, action, codes}`` objects;
default ``spam.dnsbl_zones`` with ``spam.dnsbl_score``), ``skip_private`` (Boolean, default
true: private, loopback and link-local clients are not looked up).
"""

from __future__ import annotations

import ipaddress

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.dns import DNSError, NameNotFound, reverse_name
from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    continue_,
    quarantine,
    reject,
)

ACTIONS = ("score", "quarantine", "reject")
_REFUSED = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@attrs.frozen
class Zone:
    zone: str
    score: float
    action: str = "score"
    codes: tuple = ()


@implementer(IFilter)
class DNSBLFilter:
    name = "dnsbl"
    stages = (Stage.CONNECT,)
    _log = Logger()

    def __init__(self, zones, skip_private: bool):
        self.zones = tuple(zones)
        self.skip_private = skip_private

    async def check(self, stage, context):
        try:
            ip = ipaddress.ip_address(context.session.remote_ip)
        except ValueError:
            return None
        if self.skip_private and (ip.is_private or ip.is_loopback or ip.is_link_local):
            return None
        if getattr(ip, "ipv4_mapped", None) is not None:
            ip = ip.ipv4_mapped
        name = reverse_name(str(ip))
        answers = await defer.DeferredList(
            [
                defer.Deferred.fromCoroutine(self._lookup(context.resolver, name, zone))
                for zone in self.zones
            ],
            consumeErrors=True,
        )
        listed, errors = [], []
        for zone, (ok, value) in zip(self.zones, answers, strict=True):
            if not ok or value is None:
                errors.append(zone.zone)
            elif value:
                listed.append(zone)
        if not listed:
            if errors:
                return continue_(
                    results=FilterResult(fields={"dnsbl_errors": errors}),
                )
            return None
        result = FilterResult(
            fields={"dnsbl": listed[0].zone, "dnsbl_listed": [z.zone for z in listed]},
            spam_reasons=tuple(f"dnsbl:{z.zone}" for z in listed),
            score=sum(z.score for z in listed),
        )
        for zone in listed:
            if zone.action == "reject":
                return reject(
                    f"client [{ip}] is listed by {zone.zone}",
                    code=554,
                    reason=f"dnsbl:{zone.zone}",
                    results=result,
                )
        for zone in listed:
            if zone.action == "quarantine":
                return quarantine(reason=f"dnsbl:{zone.zone}", results=result)
        return continue_(reason=f"dnsbl:{listed[0].zone}", results=result)

    async def _lookup(self, resolver, name: str, zone: Zone):
        """True when listed, False when not, None when the lookup failed."""
        try:
            addresses = await resolver.a(f"{name}.{zone.zone}")
        except NameNotFound:
            return False
        except DNSError as e:
            self._log.warn("DNSBL {zone}: {error}", zone=zone.zone, error=str(e))
            return None
        hits = []
        for text in addresses:
            address = ipaddress.ip_address(text)
            if address in _REFUSED:
                self._log.warn("DNSBL {zone} refused the query ({code})", zone=zone.zone, code=text)
                return None
            if address in _LOOPBACK and (not zone.codes or text in zone.codes):
                hits.append(text)
        return bool(hits)


def _zones(opts: Options, config) -> list[Zone]:
    spam = config.spam
    default_score = spam.dnsbl_score or 4.0
    if not opts.has("zones"):
        return [Zone(z, default_score) for z in spam.dnsbl_zones]
    zones = []
    for i, entry in enumerate(opts.listing("zones")):
        if isinstance(entry, str):
            entry = {"zone": entry}
        if not isinstance(entry, dict):
            raise opts.error(f"zones[{i}]", f"expected a zone name or object, got {entry!r}")
        zone_opts = Options(opts.filter_name, entry, prefix=f"zones[{i}].")
        zone = zone_opts.string("zone").strip().strip(".").lower()
        if not zone:
            raise zone_opts.error("zone", "must not be empty")
        score = zone_opts.number("score", default=default_score)
        action = zone_opts.choice("action", ACTIONS, default="score")
        codes = zone_opts.strings("codes", default=())
        for code in codes:
            try:
                if ipaddress.ip_address(code) not in _LOOPBACK:
                    raise ValueError
            except ValueError:
                raise zone_opts.error("codes", f"{code!r} is not a 127.x.y.z address") from None
        zone_opts.done()
        zones.append(Zone(zone, score, action, tuple(codes)))
    return zones


@implementer(IPlugin, IFilterFactory)
class DNSBLFactory:
    name = "dnsbl"
    description = "DNS block lists: score, quarantine or reject listed clients"

    def build(self, options, environment):
        opts = Options(self.name, options)
        zones = _zones(opts, environment.config)
        skip_private = opts.boolean("skip_private", default=True)
        opts.done()
        return DNSBLFilter(zones, skip_private)


dnsbl = DNSBLFactory()
