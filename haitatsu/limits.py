"""Per-IP limits of the listeners (API.md 5.2, 5.5): concurrent connections or sessions per
remote address, and a token bucket of messages per minute per remote address.

Both live in this process's memory, so with several nodes behind a load balancer each node
counts the connections it holds and the messages it received: the limits are per node. (Rates
shared across nodes belong to the filter chain's rate limiting, a later issue.) A limit of 0
means no limit. The value is passed on every call, so a reload that changes it applies at once
to the next connection or message.
"""

from __future__ import annotations

from collections import OrderedDict


class PeerCounter:
    """How many connections (or sessions) each remote address holds on this node.

    ``acquire`` takes one unless the address already holds ``limit``; whoever took one gives it
    back with ``release`` exactly once, whatever ends the connection (the protocols release in
    ``connectionLost``, which Twisted calls for every kind of end: QUIT, a reset, a timeout, a
    failed TLS handshake).
    """

    def __init__(self):
        self._held: dict[str, int] = {}

    def acquire(self, address: str, limit: int) -> bool:
        held = self._held.get(address, 0)
        if limit > 0 and held >= limit:
            return False
        self._held[address] = held + 1
        return True

    def release(self, address: str) -> None:
        held = self._held.get(address, 0)
        if held <= 1:
            self._held.pop(address, None)
        else:
            self._held[address] = held - 1

    def held(self, address: str) -> int:
        return self._held.get(address, 0)

    def total(self) -> int:
        return sum(self._held.values())


class TokenBuckets:
    """A token bucket per remote address: ``per_minute`` tokens a minute, at most
    ``per_minute`` saved up, one taken per message (API.md 5.2 checks it at MAIL FROM).

    Buckets are kept for the ``max_addresses`` addresses seen most recently; one forgotten is
    full again when its address comes back, which errs towards letting mail in.
    """

    def __init__(self, clock, max_addresses: int = 65536):
        self._clock = clock
        self._max = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str, per_minute: int) -> bool:
        """Take a token for ``address``; False when its bucket is empty (0: no limit)."""
        if per_minute <= 0:
            return True
        now = self._clock.seconds()
        tokens, stamp = self._buckets.pop(address, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + max(now - stamp, 0.0) * per_minute / 60.0)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return allowed


__all__ = ["PeerCounter", "TokenBuckets"]
