"""Small functions several filters need (and plugins may use)."""

from __future__ import annotations

import ipaddress
import re

from twisted.internet import defer
from twisted.python.failure import Failure

_BATV = re.compile(r"prvs=[0-9a-z]+=(.+)\Z")


def client_network(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network a client address counts as: ``192.0.2.0/24`` for ``192.0.2.7`` with
    ``ipv4_prefix=24``; IPv6 clients usually get a /64 each. An IPv4-mapped IPv6 address
    counts as its IPv4 address. A string that is no address is returned as it is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def normal_sender(address: str) -> str:
    """An envelope sender as greylisting and rate limits key it: lower case, without a BATV
    tag (``prvs=1234abcd=user@example.com`` is ``user@example.com``); ``<>`` for the null
    sender."""
    address = address.strip().lower()
    if not address:
        return "<>"
    local, at, domain = address.rpartition("@")
    if at:
        m = _BATV.match(local)
        if m:
            return f"{m.group(1)}@{domain}"
    return address


#: ``context.notes`` key of the transaction's ``inbound_filter_data`` reads.
_INBOUND_NOTE = "_inbound_filter_data"


def inbound_filter_data(store, context) -> defer.Deferred | None:
    """The recipients' sender rules, spam thresholds and active Sieve scripts
    (``IMailStore.inbound_filter_data``) for the transaction in ``context``: read once, in one
    read transaction, and shared by every filter of the transaction that asks (the
    ``sender_rules``, ``spam_score`` and ``sieve`` filters), instead of a read each. Fires
    with the ``InboundFilterData``; None when ``store`` cannot read it that way (the filter
    reads what it needs itself). A failed read is not kept: the next filter reads again."""
    read = getattr(store, "inbound_filter_data", None)
    if read is None:
        return None
    recipients = context.envelope.recipients
    ids = tuple(sorted({m for r in recipients for m in r.mailbox_ids}))
    domains = tuple(sorted({r.domain for r in recipients}))
    shared = context.notes.setdefault(_INBOUND_NOTE, {})
    key = (ids, domains)
    entry = shared.get(key)
    if entry is None:
        entry = shared[key] = _Shared(defer.maybeDeferred(read, ids, domains))
    return entry.wait(lambda: shared.pop(key, None))


class _Shared:
    """One Deferred's outcome that several callers wait for, each with a Deferred of its own
    (a filter's timeout cancels only its own wait, never the read the others share)."""

    def __init__(self, running: defer.Deferred):
        self.done = False
        self.failed = False
        self.outcome = None
        self._waiters: list = []
        running.addBoth(self._finish)

    def _finish(self, outcome):
        self.done, self.outcome = True, outcome
        self.failed = isinstance(outcome, Failure)
        waiters, self._waiters = self._waiters, []
        for waiter, forget in waiters:
            self._fire(waiter, forget)
        return None

    def _fire(self, waiter, forget):
        if self.failed:
            forget()
            if not waiter.called:
                waiter.errback(self.outcome)
        elif not waiter.called:
            waiter.callback(self.outcome)

    def wait(self, forget) -> defer.Deferred:
        waiter = defer.Deferred()
        if self.done:
            self._fire(waiter, forget)
        else:
            self._waiters.append((waiter, forget))
        return waiter
