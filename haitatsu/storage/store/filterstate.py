"""State the filters share across nodes: greylisting triplets and rate-limit token buckets.

Each call is one short transaction that reads and updates its row under a lock (``FOR UPDATE``
on PostgreSQL, SQLite's single writer), so two nodes answering the same client at once still
count every attempt once.
"""

from __future__ import annotations

import attrs

from haitatsu.storage.store.base import StoreBase

#: What ``greylist_check`` found.
GREYLIST_NEW = "new"  # first attempt: defer it
GREYLIST_EARLY = "early"  # retried before the delay was over: defer it again
GREYLIST_PASSED = "passed"  # retried after the delay: let it through (now and from now on)
GREYLIST_KNOWN = "known"  # passed before, within the allow period: let it through
GREYLIST_CLIENT = "client"  # the client network passed often enough to be let through at once


@attrs.frozen
class GreylistAnswer:
    state: str
    #: When the triplet was first seen (ns).
    first_seen: int
    #: Seconds until a retry passes (for GREYLIST_NEW and GREYLIST_EARLY), else 0.
    retry_after: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.state in (GREYLIST_PASSED, GREYLIST_KNOWN, GREYLIST_CLIENT)


@attrs.frozen
class RateAnswer:
    allowed: bool
    #: Tokens left after this take.
    tokens: float
    #: Seconds until one token is there again (0 when allowed).
    retry_after: float = 0.0


class FilterStateMixin(StoreBase):
    def greylist_check(
        self,
        client: str,
        sender: str,
        recipient: str,
        now: int,
        delay: int,
        retry_window: int,
        allow_for: int,
        auto_allow_passes: int = 0,
    ):
        """Record an attempt of the triplet at ``now`` and fire with a ``GreylistAnswer``.

        Times are nanoseconds: a retry passes once ``delay`` has gone by since the first
        attempt, unless more than ``retry_window`` has (then it starts over); a passed triplet
        stays allowed while it comes back within ``allow_for``. With ``auto_allow_passes``, a
        client network with that many passed triplets seen within ``allow_for`` is let
        through at once.
        """

        async def txn_fn(txn):
            if auto_allow_passes > 0:
                row = await txn.execute_one(
                    "SELECT passes, last_pass FROM greylist_clients WHERE client = ?", (client,)
                )
                if (
                    row
                    and row["passes"] >= auto_allow_passes
                    and row["last_pass"] >= now - allow_for
                ):
                    return GreylistAnswer(GREYLIST_CLIENT, row["last_pass"])
            await txn.execute(
                "INSERT INTO greylist (client, sender, recipient, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client, sender, recipient) DO NOTHING",
                (client, sender, recipient, now, now),
            )
            if txn.rowcount == 1:
                return GreylistAnswer(GREYLIST_NEW, now, delay / 1e9)
            row = await txn.execute_one(
                "SELECT first_seen, last_seen, passed_at FROM greylist "
                "WHERE client = ? AND sender = ? AND recipient = ?" + txn.for_update,
                (client, sender, recipient),
            )
            key = (client, sender, recipient)
            if row["passed_at"] and row["last_seen"] >= now - allow_for:
                await txn.execute(
                    "UPDATE greylist SET last_seen = ? "
                    "WHERE client = ? AND sender = ? AND recipient = ?",
                    (max(now, row["last_seen"]), *key),
                )
                return GreylistAnswer(GREYLIST_KNOWN, row["first_seen"])
            age = now - row["first_seen"]
            if row["passed_at"] or age > retry_window:
                # Allowed once but gone too long, or never retried in time: start over.
                await txn.execute(
                    "UPDATE greylist SET first_seen = ?, last_seen = ?, passed_at = 0, "
                    "deferrals = 1 WHERE client = ? AND sender = ? AND recipient = ?",
                    (now, now, *key),
                )
                return GreylistAnswer(GREYLIST_NEW, now, delay / 1e9)
            if age < delay:
                await txn.execute(
                    "UPDATE greylist SET last_seen = ?, deferrals = deferrals + 1 "
                    "WHERE client = ? AND sender = ? AND recipient = ?",
                    (max(now, row["last_seen"]), *key),
                )
                return GreylistAnswer(GREYLIST_EARLY, row["first_seen"], (delay - age) / 1e9)
            await txn.execute(
                "UPDATE greylist SET last_seen = ?, passed_at = ? "
                "WHERE client = ? AND sender = ? AND recipient = ?",
                (now, now, *key),
            )
            await txn.execute(
                "INSERT INTO greylist_clients (client, passes, last_pass) VALUES (?, 1, ?) "
                "ON CONFLICT (client) DO UPDATE SET passes = greylist_clients.passes + 1, "
                "last_pass = ?",
                (client, now, now),
            )
            return GreylistAnswer(GREYLIST_PASSED, row["first_seen"])

        return self._run("greylist_check", txn_fn)

    def rate_limit_take(self, bucket: str, capacity: float, per_second: float, now: int):
        """Take one token from ``bucket`` (created full), which holds at most ``capacity`` and
        refills ``per_second``; fire with a ``RateAnswer`` (not allowed: nothing taken)."""

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO rate_limits (bucket, tokens, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (bucket) DO NOTHING",
                (bucket, float(capacity), now),
            )
            row = await txn.execute_one(
                "SELECT tokens, updated_at FROM rate_limits WHERE bucket = ?" + txn.for_update,
                (bucket,),
            )
            elapsed = max(0, now - row["updated_at"]) / 1e9
            tokens = min(float(capacity), row["tokens"] + elapsed * per_second)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            await txn.execute(
                "UPDATE rate_limits SET tokens = ?, updated_at = ? WHERE bucket = ?",
                (tokens, max(now, row["updated_at"]), bucket),
            )
            retry = 0.0 if allowed else (1.0 - tokens) / per_second if per_second > 0 else 0.0
            return RateAnswer(allowed, tokens, retry)

        return self._run("rate_limit_take", txn_fn)

    def prune_filter_state(self, greylist_before: int, rate_limits_before: int):
        """Delete greylist triplets and clients last seen before ``greylist_before`` and token
        buckets untouched since ``rate_limits_before`` (ns); fire with the rows removed."""

        async def txn_fn(txn):
            removed = 0
            for sql, before in (
                ("DELETE FROM greylist WHERE last_seen < ?", greylist_before),
                ("DELETE FROM greylist_clients WHERE last_pass < ?", greylist_before),
                ("DELETE FROM rate_limits WHERE updated_at < ?", rate_limits_before),
            ):
                await txn.execute(sql, (before,))
                removed += max(0, txn.rowcount)
            return removed

        return self._run("prune_filter_state", txn_fn)
