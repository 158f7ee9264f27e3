"""``rate_limit``: token buckets per client address, envelope sender and recipient.

Each kind has ``limit`` messages (recipients, for ``per_recipient``) per ``period_seconds``,
refilled continuously: a client may send ``limit`` at once, then one every ``period / limit``.
``per_ip`` and ``per_sender`` are taken at MAIL FROM, ``per_recipient`` at RCPT; an empty bucket
answers ``450 4.7.1 rate limit exceeded, try again later`` (API.md 5.2). The buckets are rows
in the database, shared by every node. A limit of 0 turns that kind off; the null sender has no
``per_sender`` bucket (bounces come from many places under one name).

Options: ``per_ip``, ``per_sender``, ``per_recipient``, each ``{ limit = <Int>
period_seconds = <Number> }``. ``per_ip.limit`` defaults to
``limits.inbound_messages_per_minute_per_ip`` (per 60 s), the others to 0 (off).
``ipv6_prefix`` (64): an IPv6 client counts as its network.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import FilterResult, IFilter, IFilterFactory, Options, Stage, tempfail
from haitatsu.filtering.helpers import client_network, normal_sender

PRUNE_INTERVAL = 3600.0
KINDS = ("per_ip", "per_sender", "per_recipient")


@implementer(IFilter)
class RateLimitFilter:
    name = "rate_limit"
    _log = Logger()

    def __init__(self, store, limits: dict, ipv6_prefix: int):
        self.store = store
        #: kind -> (limit, period_seconds), only for the kinds that are on.
        self.limits = {k: v for k, v in limits.items() if v[0] > 0}
        self.ipv6_prefix = ipv6_prefix
        stages = set()
        if "per_ip" in self.limits or "per_sender" in self.limits:
            stages.add(Stage.MAIL)
        if "per_recipient" in self.limits:
            stages.add(Stage.RCPT)
        self.stages = frozenset(stages)
        self._next_prune = None

    async def check(self, stage, context):
        now = context.clock.seconds()
        buckets = []
        if stage is Stage.MAIL:
            if "per_ip" in self.limits:
                ip = client_network(context.session.remote_ip, 32, self.ipv6_prefix)
                buckets.append(("per_ip", f"ip:{ip}"))
            if "per_sender" in self.limits and context.envelope.mail_from:
                buckets.append(
                    ("per_sender", f"sender:{normal_sender(context.envelope.mail_from)}")
                )
        elif "per_recipient" in self.limits:
            buckets.append(("per_recipient", f"rcpt:{context.recipient.address.lower()}"))
        for kind, bucket in buckets:
            limit, period = self.limits[kind]
            answer = await self.store.rate_limit_take(bucket, limit, limit / period, int(now * 1e9))
            if not answer.allowed:
                return tempfail(
                    "rate limit exceeded, try again later",
                    code=450,
                    reason=f"rate_limit:{kind}",
                    results=FilterResult(fields={"rate_limit": kind}),
                )
        self._maybe_prune(now)
        return None

    def _maybe_prune(self, now: float):
        if self._next_prune is None:
            self._next_prune = now + PRUNE_INTERVAL
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        # A bucket untouched for a whole period is full again: as good as no row.
        longest = max(period for _, period in self.limits.values())
        d = defer.maybeDeferred(self.store.prune_filter_state, 0, int((now - longest) * 1e9))
        d.addErrback(lambda f: self._log.failure("rate_limit: pruning failed", f))


@implementer(IPlugin, IFilterFactory)
class RateLimitFactory:
    name = "rate_limit"
    description = "token buckets per client address, sender and recipient"

    def build(self, options, environment):
        opts = Options(self.name, options)
        limits = {}
        for kind in KINDS:
            default_limit = (
                environment.config.limits.inbound_messages_per_minute_per_ip
                if kind == "per_ip"
                else 0
            )
            block = opts.block(kind, default={})
            limit = block.integer("limit", default=default_limit, minimum=0)
            period = block.number("period_seconds", default=60.0, minimum=0.001)
            block.done()
            limits[kind] = (limit, period)
        ipv6_prefix = opts.integer("ipv6_prefix", default=64, minimum=16, maximum=128)
        opts.done()
        return RateLimitFilter(environment.store, limits, ipv6_prefix)


rate_limit = RateLimitFactory()
