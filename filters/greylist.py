"""``greylist``: defer the first attempt of an unknown (client, sender, recipient) triplet.

At RCPT, a triplet seen for the first time gets ``451 4.7.1``; a retry after ``delay_seconds``
(and within ``retry_window_seconds`` of the first attempt) passes, and so does every later
message of the triplet while it keeps coming back within ``allow_seconds``. A client network
with ``auto_allow_passes`` passed triplets is let through at once (0 turns that off). The
client counts as its /24 (IPv4) or /64 (IPv6), since big senders retry from another address of
the same farm. The state is in the database, shared by every node.

Options: ``delay_seconds`` (300), ``retry_window_seconds`` (172800: two days),
``allow_seconds`` (3110400: 36 days), ``auto_allow_passes`` (5), ``ipv4_prefix`` (24),
``ipv6_prefix`` (64), ``skip_networks`` (CIDRs never greylisted; default none).
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    continue_,
    tempfail,
)
from haitatsu.filtering.helpers import client_network, normal_sender

#: How often (seconds) a node deletes triplets nobody has seen for longer than they matter.
PRUNE_INTERVAL = 3600.0


@implementer(IFilter)
class GreylistFilter:
    name = "greylist"
    stages = (Stage.RCPT,)
    _log = Logger()

    def __init__(self, store, settings: dict):
        self.store = store
        self.settings = settings
        self._next_prune = None

    async def check(self, stage, context):
        s = self.settings
        ip = context.session.remote_ip
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is not None and any(address in net for net in s["skip"]):
            return None
        client = client_network(ip, s["ipv4_prefix"], s["ipv6_prefix"])
        now_s = context.clock.seconds()
        answer = await self.store.greylist_check(
            client,
            normal_sender(context.envelope.mail_from),
            context.recipient.address.lower(),
            int(now_s * 1e9),
            int(s["delay"] * 1e9),
            int(s["retry_window"] * 1e9),
            int(s["allow"] * 1e9),
            s["auto_allow_passes"],
        )
        self._maybe_prune(now_s)
        result = FilterResult(fields={"greylist": answer.state})
        if answer.allowed:
            return continue_(results=result)
        return tempfail(
            f"greylisted, please try again in {max(1, round(answer.retry_after))} seconds",
            reason="greylisted",
            results=result,
        )

    def _maybe_prune(self, now: float):
        """Now and then (not at the first check: at most once per ``PRUNE_INTERVAL``), delete
        triplets too old to matter, in the background."""
        if self._next_prune is None:
            self._next_prune = now + PRUNE_INTERVAL
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        horizon = max(self.settings["retry_window"], self.settings["allow"])
        d = defer.maybeDeferred(self.store.prune_filter_state, int((now - horizon) * 1e9), 0)
        d.addCallback(lambda n: self._log.info("greylist: pruned {n} rows", n=n))
        d.addErrback(lambda f: self._log.failure("greylist: pruning failed", f))


@implementer(IPlugin, IFilterFactory)
class GreylistFactory:
    name = "greylist"
    description = "defer first attempts of unknown (client, sender, recipient) triplets"

    def build(self, options, environment):
        opts = Options(self.name, options)
        settings = {
            "delay": opts.number("delay_seconds", default=300.0, minimum=0),
            "retry_window": opts.number("retry_window_seconds", default=172800.0, minimum=1),
            "allow": opts.number("allow_seconds", default=3110400.0, minimum=1),
            "auto_allow_passes": opts.integer("auto_allow_passes", default=5, minimum=0),
            "ipv4_prefix": opts.integer("ipv4_prefix", default=24, minimum=8, maximum=32),
            "ipv6_prefix": opts.integer("ipv6_prefix", default=64, minimum=16, maximum=128),
        }
        skip = []
        for cidr in opts.strings("skip_networks", default=()):
            try:
                skip.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise opts.error("skip_networks", f"{cidr!r} is not a network") from None
        settings["skip"] = tuple(skip)
        if settings["retry_window"] <= settings["delay"]:
            raise opts.error("retry_window_seconds", "must be longer than delay_seconds")
        opts.done()
        return GreylistFilter(environment.store, settings)


greylist = GreylistFactory()
