"""Emptying Trash, purging messages and collecting unreferenced blobs (the safety argument:
docs/storage.md)."""

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
    _MM_COLUMNS,
    CLAIM_TIMEOUT_SECONDS,
    _folder,
    _log,
    _mailbox_message,
    _message_blob_keys,
    new_id,
)


class GarbageMixin(StoreBase):
    def expire_trash(self, updated_before_ns, batch=200, should_continue=None):
        """API.md 5.7: soft-delete every live message of a Trash folder whose row was last
        updated before ``updated_before_ns``, as an EXPUNGE in Trash or ``DELETE
        /messages/:id?force=true`` does (``_remove_placements``): ``deleted_at`` set, the size
        released from ``used_bytes``, the UIDs remembered for QRESYNC and each one announced
        as an expunge, so IMAP sessions and event streams hear it. Up to ``batch`` messages of
        one folder a transaction; fire with ``{"folders", "messages"}``.

        Trash folders are few rows each (their messages leave after the period), so the
        candidates are read by scanning them rather than through an index of ``updated_at``
        that every flag change and delivery would have to keep up."""
        return defer.Deferred.fromCoroutine(
            self._expire_trash(int(updated_before_ns), batch, should_continue or (lambda: True))
        )

    async def _expire_trash(self, updated_before, batch, should_continue):
        async def candidates(txn, after):
            return await txn.execute(
                "SELECT f.id FROM folders f WHERE f.special_use = '\\Trash' AND f.id > ? "
                "AND EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.folder_id = f.id "
                "AND mm.deleted_at IS NULL AND mm.updated_at < ?) ORDER BY f.id LIMIT ?",
                (after, updated_before, batch),
            )

        async def expire(txn, folder_id):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return 0
            # Re-read under the lock: a row moved, flagged or deleted meanwhile is left alone.
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL AND mm.updated_at < ? ORDER BY mm.uid LIMIT ?"
                + txn.for_update,
                (folder_id, updated_before, batch),
            )
            targets = [_mailbox_message(r) for r in rows]
            await self._remove_placements(txn, _folder(row), targets, to_trash=False)
            return len(targets)

        report = {"folders": 0, "messages": 0}
        folders = self._pages("trash_candidates", candidates, "", "id", batch, should_continue)
        async for row in folders:
            report["folders"] += 1
            while should_continue():
                done = await self._run("expire_trash", expire, row["id"])
                report["messages"] += done
                if done < batch:
                    break
        return report

    async def _pages(self, desc, fetch, after, key, batch, should_continue):
        """Yield the rows of ``fetch(txn, after)`` (a read transaction a page of ``batch``),
        continuing after the last row's ``key``, while ``should_continue()``."""
        while should_continue():
            rows = await self.db.run(desc, fetch, after, readonly=True)
            for row in rows:
                if not should_continue():
                    return
                yield row
            if len(rows) < batch:
                return
            after = rows[-1][key]

    def purge_message(self, message_id):
        """Delete a message row for good once no live placement references it and no
        outbound job still has to send it: its soft-deleted placements go with it, the
        finished jobs that sent it keep their recipients and attempts but lose the reference
        (``message_id`` NULL), and each of its blobs loses one reference (the blobs themselves
        go later, through ``collect_garbage``). Fire with True if it was purged."""

        async def txn_fn(txn):
            return await self._purge(txn, message_id)

        return self._run("purge_message", txn_fn)

    async def _purge(
        self, txn, message_id, deleted_before=None, created_before=None, unplaced=False
    ) -> bool:
        """``purge_message`` in the caller's transaction; with ``deleted_before`` only when
        every placement was soft-deleted before it, with ``created_before`` only a message
        stored before it, with ``unplaced`` only a message no placement (even soft-deleted)
        refers to any more (after a mailbox's purge: another mailbox's rows keep it).

        The message row is read (and on PostgreSQL locked) first: of two nodes purging the
        same message at once, the second finds it gone and changes nothing, so no blob loses
        a reference twice."""
        row = await txn.execute_one(
            "SELECT blob_key, size_bytes, layout, created_at FROM messages WHERE id = ?"
            + txn.for_update,
            (message_id,),
        )
        if row is None or (created_before is not None and row["created_at"] >= created_before):
            return False
        placements = await txn.execute_one(
            "SELECT COUNT(*) AS n, "
            "COALESCE(SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END), 0) AS live, "
            "MAX(deleted_at) AS last_deleted FROM mailbox_messages WHERE message_id = ?",
            (message_id,),
        )
        if placements["live"] or (unplaced and placements["n"]):
            return False
        if deleted_before is not None and (
            not placements["n"] or placements["last_deleted"] >= deleted_before
        ):
            return False
        pending = await txn.execute_one(
            "SELECT id FROM outbound_jobs WHERE message_id = ? "
            "AND status NOT IN ('sent', 'failed') LIMIT 1",
            (message_id,),
        )
        if pending is not None:
            return False
        await txn.execute(
            "UPDATE outbound_jobs SET message_id = NULL WHERE message_id = ?", (message_id,)
        )
        # Only soft-deleted placements: one restored meanwhile (PostgreSQL re-reads the row)
        # stays, and the foreign key then refuses to delete its message (Conflict).
        await txn.execute(
            "DELETE FROM mailbox_messages WHERE message_id = ? AND deleted_at IS NOT NULL",
            (message_id,),
        )
        await txn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        if txn.rowcount == 0:
            return False
        now = now_ns()
        for key in _message_blob_keys(row["blob_key"], row["layout"]):
            await txn.execute(
                "UPDATE blobs SET refcount = refcount - 1, updated_at = ? "
                "WHERE blob_key = ? AND refcount > 0",
                (now, key),
            )
        await self._audit(txn, "message.purged", "message", message_id)
        return True

    def purge_deleted_mailboxes(self, deleted_before_ns, batch=50, should_continue=None):
        """API.md 5.7: purge (``hard_delete_mailbox``) every mailbox in status ``deleted``
        since before ``deleted_before_ns``, one transaction per mailbox, which re-checks the
        status under the mailbox row's lock (a mailbox restored meanwhile is kept). Candidates
        are read ``batch`` at a time; fire with ``{"purged", "kept"}``."""
        return defer.Deferred.fromCoroutine(
            self._purge_deleted_mailboxes(
                int(deleted_before_ns), batch, should_continue or (lambda: True)
            )
        )

    async def _purge_deleted_mailboxes(self, deleted_before, batch, should_continue):
        async def candidates(txn, after):
            return await txn.execute(
                "SELECT id FROM mailboxes WHERE status = 'deleted' AND deleted_at < ? "
                "AND id > ? ORDER BY id LIMIT ?",
                (deleted_before, after, batch),
            )

        report = {"purged": 0, "kept": 0}
        mailboxes = self._pages(
            "deleted_mailbox_candidates", candidates, "", "id", batch, should_continue
        )
        async for row in mailboxes:
            purged = await self.hard_delete_mailbox(row["id"], deleted_before=deleted_before)
            report["purged" if purged else "kept"] += 1
        return report

    def purge_expired_messages(
        self, deleted_before_ns, created_before_ns, batch=200, should_continue=None
    ):
        """API.md 5.7: purge (``purge_message``) every message whose placements were all
        soft-deleted before ``deleted_before_ns``, stored before ``created_before_ns``, with
        no outbound job left to send it. Found through the soft-deleted placements (one
        short transaction per message); fire with ``{"purged", "kept"}`` (kept: a candidate
        that still had a reason to stay)."""
        return defer.Deferred.fromCoroutine(
            self._purge_expired(
                int(deleted_before_ns),
                int(created_before_ns),
                batch,
                should_continue or (lambda: True),
            )
        )

    async def _purge_expired(self, deleted_before, created_before, batch, should_continue):
        async def candidates(txn, after):
            return await txn.execute(
                "SELECT id, message_id, deleted_at FROM mailbox_messages "
                "WHERE deleted_at IS NOT NULL AND deleted_at < ? "
                "AND (deleted_at > ? OR (deleted_at = ? AND id > ?)) "
                "ORDER BY deleted_at, id LIMIT ?",
                (deleted_before, after[0], after[0], after[1], batch),
            )

        async def purge(txn, message_id):
            return await self._purge(txn, message_id, deleted_before, created_before)

        report = {"purged": 0, "kept": 0}
        seen: set[str] = set()
        after = (-1, "")
        while should_continue():
            rows = await self.db.run("purge_candidates", candidates, after, readonly=True)
            for row in rows:
                if not should_continue():
                    break
                if row["message_id"] in seen:
                    continue
                seen.add(row["message_id"])
                try:
                    purged = await self._run("purge_expired_message", purge, row["message_id"])
                except Conflict:  # restored (or queued) while we looked: it stays
                    purged = False
                report["purged" if purged else "kept"] += 1
            if len(rows) < batch:
                break
            after = (rows[-1]["deleted_at"], rows[-1]["id"])
            seen.clear()
        return report

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

        pages = self._pages("gc_candidates", candidates, "", "blob_key", batch, should_continue)
        async for row in pages:
            if await collect("gc_claim", claim_row, row["blob_key"]):
                report["unreferenced"] += 1
                report["bytes"] += row["size_bytes"]

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
