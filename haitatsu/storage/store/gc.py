"""Purging messages and collecting unreferenced blobs (the safety argument: docs/storage.md)."""

from __future__ import annotations

from twisted.internet import defer

from haitatsu.interfaces import (
    Conflict,
)
from haitatsu.storage.records import (
    now_ns,
)
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _CLAIMED,
    CLAIM_TIMEOUT_SECONDS,
    _log,
    _message_blob_keys,
    new_id,
)


class GarbageMixin(StoreBase):
    def purge_message(self, message_id):
        """Delete a message row for good once no live placement references it: its
        soft-deleted placements go with it and each of its blobs loses one reference (the blobs
        themselves go later, through ``collect_garbage``). Fire with True if it was purged."""

        async def txn_fn(txn):
            live = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM mailbox_messages WHERE message_id = ? "
                "AND deleted_at IS NULL",
                (message_id,),
            )
            if live["n"]:
                return False
            row = await txn.execute_one(
                "SELECT blob_key, size_bytes, layout FROM messages WHERE id = ?", (message_id,)
            )
            if row is None:
                return False
            await txn.execute("DELETE FROM mailbox_messages WHERE message_id = ?", (message_id,))
            await txn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            now = now_ns()
            for key in _message_blob_keys(row["blob_key"], row["layout"]):
                await txn.execute(
                    "UPDATE blobs SET refcount = refcount - 1, updated_at = ? "
                    "WHERE blob_key = ? AND refcount > 0",
                    (now, key),
                )
            await self._audit(txn, "message.purged", "message", message_id)
            return True

        return self._run("purge_message", txn_fn)

    def collect_garbage(self, grace_seconds=86400, batch=200, should_continue=None):
        """Remove blobs no message references: rows with ``refcount`` 0 untouched for
        ``grace_seconds``, and objects older than that with no row at all. Fire with a dict of
        counts (``unreferenced``, ``orphans``, ``bytes``).

        ``should_continue`` (a callable) is asked between blobs; False ends the pass early
        (shutdown). Never removes a blob a delivery in flight is about to reference: see
        docs/storage.md ("Garbage collection") for why.
        """
        return defer.Deferred.fromCoroutine(
            self._collect_garbage(grace_seconds, batch, should_continue or (lambda: True))
        )

    async def _collect_garbage(self, grace_seconds, batch, should_continue):
        now = now_ns()
        cutoff = now - int(grace_seconds * 1_000_000_000)
        stale_claims = now - CLAIM_TIMEOUT_SECONDS * 1_000_000_000
        report = {"unreferenced": 0, "orphans": 0, "bytes": 0}

        async def candidates(txn, after):
            return await txn.execute(
                "SELECT blob_key, size_bytes FROM blobs WHERE ((refcount = 0 AND updated_at < ?) "
                "OR (refcount = ? AND updated_at < ?)) AND blob_key > ? ORDER BY blob_key LIMIT ?",
                (cutoff, _CLAIMED, stale_claims, after, batch),
            )

        async def claim_row(txn, key, token):
            await txn.execute(
                "UPDATE blobs SET refcount = ?, generation = ?, updated_at = ? WHERE blob_key = ? "
                "AND ((refcount = 0 AND updated_at < ?) OR (refcount = ? AND updated_at < ?))",
                (_CLAIMED, token, now_ns(), key, cutoff, _CLAIMED, stale_claims),
            )
            return txn.rowcount == 1

        async def claim_orphan(txn, key, token):
            now = now_ns()
            await txn.execute(
                "INSERT INTO blobs (blob_key, size_bytes, refcount, created_at, updated_at, "
                "generation) VALUES (?, 0, ?, ?, ?, ?) ON CONFLICT (blob_key) DO NOTHING",
                (key, _CLAIMED, now, now, token),
            )
            return txn.rowcount == 1

        async def release(txn, key, token):
            await txn.execute(
                "DELETE FROM blobs WHERE blob_key = ? AND refcount = ? AND generation = ?",
                (key, _CLAIMED, token),
            )

        async def collect(desc, claim, key) -> bool:
            """Claim the row, delete the object, delete the row: three steps, each atomic.
            While the row is claimed no delivery can lease the blob (it waits), and a lease
            taken before the claim can no longer be committed."""
            token = new_id()
            if not await self.db.run(desc, claim, key, token):
                return False
            if self.before_blob_delete is not None:
                await defer.maybeDeferred(self.before_blob_delete, key)
            # A failure here keeps the claim: the object may be half gone, so deliveries wait
            # until a later pass takes over the stale claim and finishes.
            await self.blobs.delete(key)
            try:
                await self.db.run("gc_release", release, key, token)
            except Conflict:
                _log.critical(
                    "blob {key} had no references but a message names it; it is gone", key=key
                )
            return True

        after = ""
        while should_continue():
            rows = await self.db.run("gc_candidates", candidates, after, readonly=True)
            for row in rows:
                if not should_continue():
                    break
                if await collect("gc_claim", claim_row, row["blob_key"]):
                    report["unreferenced"] += 1
                    report["bytes"] += row["size_bytes"]
            if len(rows) < batch:
                break
            after = rows[-1]["blob_key"]

        async def known(txn, keys):
            clause, params = txn.in_clause("blob_key", keys)
            rows = await txn.execute(f"SELECT blob_key FROM blobs WHERE {clause}", params)
            return {r["blob_key"] for r in rows}

        after = ""
        while should_continue():
            listed = await self.blobs.list_keys(after, batch)
            old = [key for key, modified in listed if modified < cutoff]
            if old:
                referenced = await self.db.run("gc_known", known, old, readonly=True)
                for key in old:
                    if key in referenced or not should_continue():
                        continue
                    if await collect("gc_claim_orphan", claim_orphan, key):
                        report["orphans"] += 1
            if len(listed) < batch:
                break
            after = listed[-1][0]
        _log.info(
            "garbage collection removed {unreferenced} unreferenced blobs ({bytes} bytes) "
            "and {orphans} orphans",
            **report,
        )
        return report
