"""Housekeeping: periodic background work on the store (DESIGN.md service tree).

Today that is blob garbage collection, and hourly: the removal of expired exports, the soft
deletion of messages left in Trash, the purge of messages and of mailboxes soft-deleted long ago
(API.md 5.7), the pruning of old auth lockout rows and of old QRESYNC vanished UIDs
(docs/storage.md "Retention"), with the periods of the
``retention`` config block, read at each run (a reload applies from the next one). Each job is a
named background task: it logs when it starts, what it did and its own failures, and a failure
never stops the schedule (the next run tries again). Runs of one job never overlap, and stopping
the service lets a run in progress end at its next blob (message, folder) instead of cutting it
mid-transaction.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from haitatsu.config.model import RetentionConfig

DAY = 86400
#: API.md 5.7: a message is purged once every placement was soft-deleted ``deleted_days`` ago
#: (``retention`` config block) and it was stored at least this long ago.
PURGE_MIN_AGE_SECONDS = DAY
#: API.md 5.7 / docs/imap.md "Login throttling": throttling rows idle this long are removed.
LOCKOUT_MAX_AGE_SECONDS = DAY


class BackgroundTask:
    """A named, repeatable piece of background work (Synapse's ``run_as_background_process``
    idea): ``run()`` never fails; it logs the failure with the task's name instead."""

    _log = Logger()

    def __init__(self, name: str, work):
        self.name = name
        self._work = work
        self.running: defer.Deferred | None = None

    def run(self) -> defer.Deferred:
        if self.running is not None:
            self._log.info("{task} still running; skipping this turn", task=self.name)
            return defer.succeed(None)
        self._log.debug("{task} starting", task=self.name)
        d = defer.maybeDeferred(self._work)

        def done(result):
            self._log.info("{task} finished: {result}", task=self.name, result=result)

        def failed(failure):
            self._log.failure("{task} failed", failure, task=self.name)

        d.addCallbacks(done, failed)

        def finished(_):
            self.running = None

        self.running = d
        d.addBoth(finished)
        return d


class Housekeeping(Service):
    """Runs blob garbage collection every ``gc_interval`` seconds (0 = never), keeping
    unreferenced blobs for ``gc_grace`` seconds; every ``expiry_interval`` seconds (hourly)
    removes expired exports, soft-deletes the messages of Trash untouched for
    ``trash_days``, purges messages whose placements were all soft-deleted ``deleted_days``
    ago (and no outbound job still has to send them), purges the mailboxes in status
    ``deleted`` for ``deleted_days``, prunes login throttling rows idle for a day and vanished
    UIDs older than ``vanished_days``. The periods come from ``retention``, a callable that
    returns the current ``RetentionConfig`` (the defaults when None). The first runs come one
    interval after start, when the store has long been opened."""

    name = "housekeeping"

    def __init__(
        self,
        store,
        clock,
        gc_interval: float,
        gc_grace: float,
        expiry_interval: float = 3600,
        retention=None,
    ):
        self.store = store
        self.clock = clock
        self.gc_interval = gc_interval
        self.gc_grace = gc_grace
        self.expiry_interval = expiry_interval
        self.retention = retention or RetentionConfig
        self.garbage_collection = BackgroundTask("blob garbage collection", self._collect)
        self.export_expiry = BackgroundTask("expired exports", self._expire_exports)
        self.trash_expiry = BackgroundTask("trash expiry", self._expire_trash)
        self.message_purge = BackgroundTask("message purge", self._purge_messages)
        self.mailbox_purge = BackgroundTask("deleted mailbox purge", self._purge_mailboxes)
        self.lockout_pruning = BackgroundTask("auth lockout pruning", self._prune_lockouts)
        self.vanished_pruning = BackgroundTask("vanished UID pruning", self._prune_vanished)
        self._loop: task.LoopingCall | None = None
        self._expiry_loop: task.LoopingCall | None = None

    def _collect(self):
        return self.store.collect_garbage(
            grace_seconds=self.gc_grace, should_continue=lambda: self.running
        )

    def _expire_exports(self):
        from haitatsu.jobs.exporter import remove_expired_exports

        return defer.Deferred.fromCoroutine(
            remove_expired_exports(
                self.store, int(self.clock.seconds() * 1e9), should_continue=lambda: self.running
            )
        )

    def _ago(self, seconds: float) -> int:
        return int((self.clock.seconds() - seconds) * 1e9)

    def _expire_trash(self):
        return self.store.expire_trash(
            self._ago(self.retention().trash_days * DAY), should_continue=lambda: self.running
        )

    def _purge_messages(self):
        return self.store.purge_expired_messages(
            self._ago(self.retention().deleted_days * DAY),
            self._ago(PURGE_MIN_AGE_SECONDS),
            should_continue=lambda: self.running,
        )

    def _purge_mailboxes(self):
        return self.store.purge_deleted_mailboxes(
            self._ago(self.retention().deleted_days * DAY), should_continue=lambda: self.running
        )

    def _prune_lockouts(self):
        return self.store.prune_login_failures(self._ago(LOCKOUT_MAX_AGE_SECONDS))

    def _prune_vanished(self):
        return self.store.prune_vanished(
            self._ago(self.retention().vanished_days * DAY), should_continue=lambda: self.running
        )

    def _hourly(self):
        return defer.DeferredList([t.run() for t in self._hourly_tasks()])

    def _hourly_tasks(self):
        return (
            self.trash_expiry,
            self.export_expiry,
            self.message_purge,
            self.mailbox_purge,
            self.lockout_pruning,
            self.vanished_pruning,
        )

    def startService(self):
        super().startService()
        if self.gc_interval > 0:
            self._loop = task.LoopingCall(self.garbage_collection.run)
            self._loop.clock = self.clock
            self._loop.start(self.gc_interval, now=False)
        if self.expiry_interval > 0:
            self._expiry_loop = task.LoopingCall(self._hourly)
            self._expiry_loop.clock = self.clock
            self._expiry_loop.start(self.expiry_interval, now=False)

    def stopService(self):
        super().stopService()
        for loop in (self._loop, self._expiry_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._expiry_loop = None
        tasks = (self.garbage_collection, *self._hourly_tasks())
        running = [t.running for t in tasks if t.running]
        return defer.DeferredList(running) if running else defer.succeed(None)
