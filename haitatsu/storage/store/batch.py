"""Several messages delivered as one: IMAP MULTIAPPEND (RFC 3502) stores all or none.

Each message is parsed, split and its blobs stored as ``deliver`` does; then one transaction
inserts every message and placement. A refusal for any of them (quota, missing folder) rolls
the whole transaction back, so no message of the batch becomes visible; the blobs already put
are unreferenced and garbage collection removes them, as after any failed delivery.
"""

from __future__ import annotations

import os

from twisted.internet import task

from haitatsu.interfaces import StorageUnavailable
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    DELIVERY_RETRY_DELAYS,
    _BlobBusy,
    _LeaseLost,
    _log,
    _prepare_spool,
)


class BatchMixin(StoreBase):
    async def deliver_batch(self, items, trace_id):
        """Deliver every ``(spool_path, Delivery, internal_date or None)`` in ``items`` in one
        transaction. Return the placed ``MailboxMessage`` of each, in order.

        ``OverQuota`` when any would exceed a quota (the quota is charged message by message,
        so the third of three that no longer fits refuses all three), ``ValueError`` for a
        missing folder, ``StorageUnavailable`` for storage failures: nothing is stored then.
        """
        items = list(items)
        if not items:
            raise ValueError("deliver_batch needs at least one message")
        prepared_items = []
        try:
            for spool_path, delivery, internal_date in items:
                try:
                    parsed, prepared = await self._thread(
                        _prepare_spool,
                        spool_path,
                        self.attachment_dedup_threshold,
                        os.path.dirname(os.path.abspath(spool_path)),
                    )
                except OSError as e:
                    raise StorageUnavailable(f"spool: {e}") from e
                prepared_items.append((prepared, parsed, delivery, internal_date))
            for attempt, delay in enumerate((*DELIVERY_RETRY_DELAYS, None), 1):
                try:
                    generations = [
                        await self._store_blobs(prepared) for prepared, *_ in prepared_items
                    ]
                    placed = await self._commit_batch(prepared_items, generations, trace_id)
                    break
                except (_LeaseLost, _BlobBusy) as e:
                    _log.warn(
                        "blob {key} is being collected during a batch delivery (attempt "
                        "{attempt}); storing it again",
                        key=str(e),
                        attempt=attempt,
                        trace_id=trace_id,
                    )
                    if delay is None:
                        raise StorageUnavailable(
                            "blobs kept being collected during delivery"
                        ) from None
                    await task.deferLater(self._reactor, delay, lambda: None)
        finally:
            for prepared, *_ in prepared_items:
                await self._thread(prepared.remove_temporary)
        _log.info("stored {count} messages in one batch", count=len(placed), trace_id=trace_id)
        return placed

    async def _commit_batch(self, prepared_items, generations, trace_id):
        async def txn_fn(txn):
            placed = []
            for (prepared, parsed, delivery, internal_date), leased in zip(
                prepared_items, generations, strict=True
            ):
                rows, _ = await self._insert_delivery(
                    txn, prepared, leased, parsed, [delivery], trace_id, None, internal_date
                )
                placed.extend(rows)
            return placed

        try:
            return await self._run("deliver_batch", txn_fn)
        except KeyError as e:
            raise ValueError(str(e)) from None
