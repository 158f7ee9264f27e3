"""What every part of the store uses: lifecycle, transactions, announcements, audit, UIDs."""

from __future__ import annotations

import inspect

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from haitatsu.interfaces import (
    StorageUnavailable,
)
from haitatsu.storage.records import (
    now_ns,
)
from haitatsu.storage.store.common import (
    DEFAULT_DEDUP_THRESHOLD,
    new_id,
)


class StoreBase:
    """The store.

    ``attachment_dedup_threshold`` (bytes, 0 = off) is the size from which a leaf part's body is
    stored as a blob of its own. ``before_commit`` is an optional callable run with the blob keys
    after a delivery stored its blobs and before its metadata transaction, and
    ``before_blob_delete`` with a key after garbage collection claimed it and before it deletes
    the object; a Deferred either returns is waited for. They exist for race and fault tests
    (pausing one side there), and are None in production.
    """

    def __init__(
        self,
        database,
        blobs,
        changes,
        reactor,
        hash_pool=None,
        attachment_dedup_threshold=DEFAULT_DEDUP_THRESHOLD,
    ):
        self.db = database
        self.blobs = blobs
        self.changes = changes
        self._reactor = reactor
        self._hash_pool = hash_pool if hash_pool is not None else reactor.getThreadPool()
        self.attachment_dedup_threshold = attachment_dedup_threshold
        self.before_commit = None
        self.before_blob_delete = None

    async def open(self):
        """Connect and apply schema migrations; until this is done every call is unavailable."""
        await self.db.open()
        try:
            await self.db.migrate()
            await self.changes.open()
        except BaseException:
            await self.db.close()
            raise

    async def close(self):
        await self.changes.close()
        await self.db.close()
        close_blobs = getattr(self.blobs, "close", None)  # the S3 store's connection pool
        if close_blobs is not None:
            await close_blobs()

    async def _announce(self, txn, mailbox_id, change):
        """Publish ``change`` as part of ``txn``: heard on every node once it commits."""
        result = self.changes.publish_in(txn, mailbox_id, change)
        if inspect.isawaitable(result):
            await result

    def _thread(self, fn, *args):
        return deferToThreadPool(self._reactor, self._hash_pool, fn, *args)

    @staticmethod
    async def _audit(txn, event_type, entity_type, entity_id, mailbox_id=""):
        await txn.execute(
            "INSERT INTO audit_events (id, event_type, entity_type, entity_id, mailbox_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (new_id(), event_type, entity_type, entity_id, mailbox_id, now_ns()),
        )

    def _run_noting(self, desc, fn, *args):
        """Run a write transaction ``fn(txn, *args, notes)`` that collects the changes it
        makes as ``(mailbox_id, change)`` in ``notes``; they are announced inside the same
        transaction, so every node hears them once it commits and never if it fails."""

        async def txn_fn(txn, *args):
            notes: list = []
            result = await fn(txn, *args, notes)
            for mailbox_id, change in notes:
                await self._announce(txn, mailbox_id, change)
            return result

        return self._run(desc, txn_fn, *args)

    @staticmethod
    async def _allocate_uids(txn, folder_id, count) -> tuple[int, int]:
        """Take ``count`` consecutive UIDs and one MODSEQ of the folder, in the caller's
        transaction; return the first UID and the MODSEQ."""
        await txn.execute(
            "UPDATE folders SET uid_next = uid_next + ?, highest_modseq = highest_modseq + 1, "
            "updated_at = ? WHERE id = ?",
            (count, now_ns(), folder_id),
        )
        row = await txn.execute_one(
            "SELECT uid_next, highest_modseq FROM folders WHERE id = ?", (folder_id,)
        )
        return row["uid_next"] - count, row["highest_modseq"]

    @staticmethod
    async def _allocate_uid(txn, folder_id) -> tuple[int, int]:
        """Take the folder's next UID and MODSEQ, in the caller's transaction."""
        await txn.execute(
            "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1, "
            "updated_at = ? WHERE id = ?",
            (now_ns(), folder_id),
        )
        row = await txn.execute_one(
            "SELECT uid_next, highest_modseq FROM folders WHERE id = ?", (folder_id,)
        )
        return row["uid_next"] - 1, row["highest_modseq"]

    @staticmethod
    async def _bump_modseq(txn, folder_id) -> int:
        await txn.execute(
            "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = ?", (folder_id,)
        )
        row = await txn.execute_one("SELECT highest_modseq FROM folders WHERE id = ?", (folder_id,))
        return row["highest_modseq"]

    @defer.inlineCallbacks
    def check(self):
        current = yield defer.Deferred.fromCoroutine(self.db.schema_current())
        if not current:
            raise StorageUnavailable("migrations not complete")
        if not getattr(self.changes, "listening", True):
            # IMAP IDLE on this node would miss changes made elsewhere.
            raise StorageUnavailable("change bus is not listening")

    def _run(self, desc, fn, *args, readonly=False):
        return defer.Deferred.fromCoroutine(self.db.run(desc, fn, *args, readonly=readonly))

    def _run_grouped(self, desc, fn, *args):
        """A write transaction that may share one database transaction with others queued at
        the same time (group commit, ``haitatsu.storage.group``); fires once it committed."""
        return self.db.run_grouped(desc, fn, *args)
