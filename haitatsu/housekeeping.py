"""Housekeeping: periodic background work on the store (DESIGN.md service tree).

Today that is blob garbage collection. Each job is a named background task: it logs when it
starts, what it did and its own failures, and a failure never stops the schedule (the next run
tries again). Runs of one job never overlap, and stopping the service lets a run in progress end
at its next blob instead of cutting it mid-transaction.
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
    unreferenced blobs for ``gc_grace`` seconds. The first run comes one interval after start,
    when the store has long been opened."""

    name = "housekeeping"

    def __init__(self, store, clock, gc_interval: float, gc_grace: float):
        self.store = store
        self.clock = clock
        self.gc_interval = gc_interval
        self.gc_grace = gc_grace
        self.garbage_collection = BackgroundTask("blob garbage collection", self._collect)
        self._loop: task.LoopingCall | None = None

    def _collect(self):
        return self.store.collect_garbage(
            grace_seconds=self.gc_grace, should_continue=lambda: self.running
        )

    def startService(self):
        super().startService()
        if self.gc_interval > 0:
            self._loop = task.LoopingCall(self.garbage_collection.run)
            self._loop.clock = self.clock
            self._loop.start(self.gc_interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        running = self.garbage_collection.running
        return running if running is not None else defer.succeed(None)
