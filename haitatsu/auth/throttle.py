"""Login throttling shared by IMAP, POP3 and SMTP submission (API.md 5.3).

Ten failed logins within ten minutes from one remote IP lock that IP out for fifteen minutes; a
successful login clears its count. While an IP is locked its logins fail with the protocol's
ordinary auth-failed reply and the password is not even checked, so a locked-out guesser learns
nothing and costs no argon2 work.

The state lives in two places. The ``auth_lockouts`` table (through the store) is what makes a
lockout hold on every node behind the load balancer; the memory of this process answers for a
locked IP without a database round trip, and keeps throttling when the database is unavailable.

twisted.cred credentials do not carry the client's address, so the protocols log in through
``ThrottledPortal.login(..., remote_ip=...)`` instead of the ``Portal`` itself.
"""

from __future__ import annotations

import attrs
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger

from haitatsu.interfaces import StorageUnavailable

_NS = 1_000_000_000


@attrs.frozen
class ThrottlePolicy:
    """How many failures within which window lock an IP out, and for how long (seconds)."""

    max_failures: int = 10
    window: float = 600.0
    lockout: float = 900.0


@attrs.define
class _Entry:
    failures: int
    window_start: float
    locked_until: float = 0.0


class LoginThrottle:
    """Failed-login counting per remote IP, in memory and in the store.

    ``clock`` is an ``IReactorTime``; tests pass a ``task.Clock``. ``max_tracked`` bounds the
    memory an attacker spraying from many addresses can make us use: beyond it, entries whose
    window and lockout are over are dropped, then the oldest.
    """

    _log = Logger()

    def __init__(self, store, clock, policy: ThrottlePolicy = ThrottlePolicy(), max_tracked=10000):
        self.store = store
        self.clock = clock
        self.policy = policy
        self.max_tracked = max_tracked
        self._entries: dict[str, _Entry] = {}

    def _now(self) -> float:
        return self.clock.seconds()

    async def is_locked(self, remote_ip: str) -> bool:
        """Whether logins from ``remote_ip`` are refused right now (on any node's count)."""
        now = self._now()
        entry = self._entries.get(remote_ip)
        if entry is not None and entry.locked_until > now:
            return True
        try:
            until = await self.store.login_locked(remote_ip, int(now * _NS))
        except StorageUnavailable as e:
            self._log.warn(
                "cannot read login lockouts ({error}); using this node's count",
                error=str(e),
                remote_ip=remote_ip,
            )
            return False
        if until is None:
            return False
        self._remember_lock(remote_ip, until / _NS, now)
        return True

    async def record_failure(self, remote_ip: str) -> bool:
        """Count a failed login; return whether the IP is locked out now."""
        now = self._now()
        policy = self.policy
        entry = self._entries.get(remote_ip)
        if (
            entry is None
            or entry.window_start <= now - policy.window
            or (entry.locked_until and entry.locked_until <= now)
        ):
            entry = self._entries[remote_ip] = _Entry(failures=0, window_start=now)
            self._bound()
        was_locked = entry.locked_until > now
        entry.failures += 1
        if entry.failures >= policy.max_failures and not was_locked:
            entry.locked_until = now + policy.lockout
        try:
            until = await self.store.record_login_failure(
                remote_ip,
                int(now * _NS),
                int(policy.window * _NS),
                policy.max_failures,
                int(policy.lockout * _NS),
            )
        except StorageUnavailable as e:
            self._log.warn(
                "cannot record a login failure ({error}); counting on this node only",
                error=str(e),
                remote_ip=remote_ip,
            )
            until = None
        if until is not None:
            self._remember_lock(remote_ip, until / _NS, now)
        locked_until = max(entry.locked_until, until / _NS if until is not None else 0.0)
        locked = locked_until > now
        if locked and not was_locked:
            self._log.warn(
                "too many failed logins from {remote_ip}: locked out for {seconds} s",
                remote_ip=remote_ip,
                seconds=round(locked_until - now),
            )
        return locked

    async def record_success(self, remote_ip: str) -> None:
        """A login succeeded: clear the IP's count here and in the store."""
        self._entries.pop(remote_ip, None)
        try:
            await self.store.clear_login_failures(remote_ip)
        except StorageUnavailable as e:
            self._log.warn(
                "cannot clear login failures ({error})", error=str(e), remote_ip=remote_ip
            )

    def _remember_lock(self, remote_ip, until, now):
        entry = self._entries.get(remote_ip)
        if entry is None:
            entry = self._entries[remote_ip] = _Entry(failures=0, window_start=now)
            self._bound()
        entry.locked_until = max(entry.locked_until, until)

    def _bound(self):
        if len(self._entries) <= self.max_tracked:
            return
        now = self._now()
        for ip, entry in list(self._entries.items()):
            if entry.locked_until <= now and entry.window_start <= now - self.policy.window:
                del self._entries[ip]
        # Drop to 90% so that a flood of new addresses does not sweep on every failure.
        while len(self._entries) > self.max_tracked * 9 // 10:
            # dicts keep insertion order: the first entry is the oldest one still tracked
            del self._entries[next(iter(self._entries))]


class ThrottledPortal:
    """A twisted.cred ``Portal`` behind a ``LoginThrottle``.

    ``login`` takes the client's address as ``remote_ip``. A locked IP fails with
    ``UnauthorizedLogin`` before any checker runs; a credential failure (``LoginFailed``) is
    counted; a success clears the count. Other errors (``StorageUnavailable``) pass through
    uncounted: the client gets a temporary failure, not a strike.
    """

    _log = Logger()

    def __init__(self, portal, throttle: LoginThrottle):
        self.portal = portal
        self.throttle = throttle

    def login(self, credentials, mind, *interfaces, remote_ip: str):
        return defer.Deferred.fromCoroutine(
            self._login(credentials, mind, interfaces, remote_ip or "")
        )

    async def _login(self, credentials, mind, interfaces, remote_ip):
        if await self.throttle.is_locked(remote_ip):
            self._log.info("login refused: {remote_ip} is locked out", remote_ip=remote_ip)
            raise UnauthorizedLogin("too many failed logins from this address")
        try:
            result = await self.portal.login(credentials, mind, *interfaces)
        except LoginFailed:
            await self.throttle.record_failure(remote_ip)
            raise
        await self.throttle.record_success(remote_ip)
        return result


__all__ = ["LoginThrottle", "ThrottledPortal", "ThrottlePolicy"]
