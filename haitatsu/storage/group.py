"""Group commit: write transactions that arrive together share one database transaction.

Deliveries arrive many at a time (twenty SMTP sessions finishing DATA together) and each is a
small transaction. Run one by one, every one pays its own BEGIN, COMMIT (a WAL fsync on SQLite,
a WAL flush and a round trip on PostgreSQL) and a thread hop, and on PostgreSQL they queue on the
same folder and mailbox rows, each holding the locks across its own commit.

``GroupCommitter`` queues transaction functions (``async def fn(txn, *args)``, the store's
usual kind) and runs whatever has queued up as one database transaction. A function that raises
fails alone (``OverQuota`` for one delivery does not refuse its neighbours): on SQLite each runs
inside a savepoint of its own, rolled back if it raises, and the others go on; on PostgreSQL,
where a savepoint costs two more round trips per function, the whole transaction is rolled back
and each function is run again alone (below). Each caller hears its result only after the
shared COMMIT, and its after-commit callbacks (change bus announcements) run only then, so a
250 still means "committed" (DESIGN.md invariant 1).

When the transaction as a whole fails (the database is locked, a connection dies, a database
error other than a constraint violation, a failed COMMIT), nothing of the batch was committed
and each function is run again in a transaction of its own (``run_single``, the database's
``run`` with its usual retries), so each caller gets the outcome of its own work. The one
exception is a PostgreSQL connection lost during COMMIT: the outcome is unknown, so nothing is
run again and every caller fails with ``StorageUnavailable`` (SMTP answers 451 and the client
sends again: a possible duplicate, never a loss).

There is no timer: the first transaction to arrive when nothing is running starts at once, and
those that arrive while a batch runs form the next one. An idle server adds no latency.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from haitatsu.interfaces import StorageUnavailable

_log = Logger()

#: At most this many transaction functions share one transaction.
MAX_BATCH = 64


@attrs.define
class GroupItem:
    """One queued transaction function and the Deferred its caller waits on."""

    desc: str
    fn: object
    args: tuple
    waiter: defer.Deferred = attrs.Factory(defer.Deferred)


@attrs.frozen
class Outcome:
    """What one function of a batch did: ``ok`` with its ``value`` (the result) and its ``txn``
    (whose after-commit callbacks run once the batch committed), or not ``ok`` with ``value``
    the exception it raised (its savepoint was rolled back)."""

    ok: bool
    value: object
    txn: object = None


class OutcomeUnknown(StorageUnavailable):
    """The batch's COMMIT was sent and the connection died before the answer: it may or may
    not have committed, so none of its functions may run again."""


class GroupCommitter:
    """Queues transaction functions and runs them in shared transactions.

    ``run_batch(items)`` runs a list of ``GroupItem`` in one transaction and returns one
    ``Outcome`` per item, or raises if the transaction as a whole failed (``OutcomeUnknown``
    if it may have committed). ``run_single(desc, fn, *args)`` runs one function in a
    transaction of its own with the database's retries. ``map_error(exception)`` turns an
    item's exception into what callers of ``run`` would see (a constraint violation becomes
    ``Conflict``). ``lock`` (a ``DeferredLock``), when given, is held while a batch runs and
    taken before the batch is chosen, so whatever queued while waiting for it joins the batch
    (SQLite's single writer).
    """

    def __init__(
        self, run_batch, run_single, map_error=lambda e: e, max_batch=MAX_BATCH, lock=None
    ):
        self._run_batch = run_batch
        self._lock = lock
        self._run_single = run_single
        self._map_error = map_error
        self.max_batch = max_batch
        self._queue: list[GroupItem] = []
        self._running = False
        #: Sizes of the batches run so far (the last few hundred), for tests and the benchmark.
        self.batch_sizes: list[int] = []

    def run(self, desc, fn, *args) -> defer.Deferred:
        """Queue ``fn(txn, *args)``; fire with its result once its batch has committed."""
        item = GroupItem(desc, fn, args)
        self._queue.append(item)
        if not self._running:
            self._running = True
            defer.Deferred.fromCoroutine(self._loop())
        return item.waiter

    async def _loop(self):
        try:
            while self._queue:
                if self._lock is not None:
                    await self._lock.acquire()
                try:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    # Callers hear of their batch before the next transaction can commit, so
                    # announcements keep commit order.
                    self._finish(batch, await self._attempt(batch))
                finally:
                    if self._lock is not None:
                        self._lock.release()
        except BaseException:  # pragma: no cover - _finish reports every failure to its items
            _log.failure("group commit loop failed")
        finally:
            self._running = False

    async def _attempt(self, batch: list[GroupItem]):
        """Run the batch; return its outcomes, or the exception that failed it as a whole."""
        self.batch_sizes.append(len(batch))
        del self.batch_sizes[:-500]
        try:
            return await self._run_batch(batch)
        except Exception as e:
            return e

    def _finish(self, batch: list[GroupItem], outcomes):
        if isinstance(outcomes, OutcomeUnknown):
            for item in batch:
                item.waiter.errback(StorageUnavailable(str(outcomes)))
            return
        if isinstance(outcomes, Exception):
            if len(batch) > 1:
                _log.warn(
                    "a shared transaction of {count} failed ({error}); running each alone",
                    count=len(batch),
                    error=str(outcomes) or type(outcomes).__name__,
                )
            for item in batch:
                d = defer.Deferred.fromCoroutine(self._run_single(item.desc, item.fn, *item.args))
                d.chainDeferred(item.waiter)
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome.ok:
                outcome.txn.run_after_commit()
                item.waiter.callback(outcome.value)
            else:
                item.waiter.errback(self._map_error(outcome.value))
