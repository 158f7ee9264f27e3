"""Housekeeping: periodic background work on the store (DESIGN.md service tree).

Today that is blob garbage collection and the removal of expired exports (API.md 5.7). Each
job is a named background task: it logs when it starts, what it did and its own failures, and a
failure never stops the schedule (the next run tries again). Runs of one job never overlap, and
stopping the service lets a run in progress end at its next blob instead of cutting it
mid-transaction.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger


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
    unreferenced blobs for ``gc_grace`` seconds, and removes expired exports every
    ``expiry_interval`` seconds (hourly). The first runs come one interval after start, when
    the store has long been opened."""

    name = "housekeeping"

    def __init__(
        self, store, clock, gc_interval: float, gc_grace: float, expiry_interval: float = 3600
    ):
        self.store = store
        self.clock = clock
        self.gc_interval = gc_interval
        self.gc_grace = gc_grace
        self.expiry_interval = expiry_interval
        self.garbage_collection = BackgroundTask("blob garbage collection", self._collect)
        self.export_expiry = BackgroundTask("expired exports", self._expire_exports)
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

    def startService(self):
        super().startService()
        if self.gc_interval > 0:
            self._loop = task.LoopingCall(self.garbage_collection.run)
            self._loop.clock = self.clock
            self._loop.start(self.gc_interval, now=False)
        if self.expiry_interval > 0:
            self._expiry_loop = task.LoopingCall(self.export_expiry.run)
            self._expiry_loop.clock = self.clock
            self._expiry_loop.start(self.expiry_interval, now=False)

    def stopService(self):
        super().stopService()
        for loop in (self._loop, self._expiry_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._expiry_loop = None
        running = [t.running for t in (self.garbage_collection, self.export_expiry) if t.running]
        return defer.DeferredList(running) if running else defer.succeed(None)
