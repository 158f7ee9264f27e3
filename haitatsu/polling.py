"""Worker loops that claim work from the database: the outbound queue, the webhook deliveries
and the export and import jobs all run this way.

A ``PollingService`` runs one loop per lane (``lanes()``). A loop calls ``run_once(lane)``
again at once while it finds work; when it finds none it sleeps, from ``min_poll`` seconds
doubling up to ``max_poll``. A message on the change bus's ``channel`` (any node announces new
work there) wakes every sleeping loop at once. An exception in ``run_once`` is logged and
counts as no work, so a loop never dies of one failure.

Stopping: the loops stop claiming; work in hand may finish for up to ``stop_grace(config)``
seconds, then ``stop_overdue()`` cuts it off (by default it cancels the loops; 0 cancels at
once).
"""

from __future__ import annotations

import os

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from haitatsu.interfaces import StorageUnavailable


class PollingService(Service):
    """Subclasses set ``channel`` and ``label`` and define ``lanes`` and ``run_once``;
    ``self.store`` (for its change bus) and ``self.clock`` must be set by ``__init__``."""

    #: The change-bus channel on which new work is announced.
    channel: str = ""
    #: How the logs name these loops.
    label: str = "worker"
    min_poll = 0.25
    max_poll = 30.0
    _log = Logger()

    store = None
    clock = None
    _loops: list | None = None
    _sleepers: set | None = None
    _unsubscribe = None
    _stopping = False

    def lanes(self) -> list:
        """One entry per loop to run; each loop passes its entry to ``run_once``."""
        raise NotImplementedError

    async def run_once(self, lane) -> bool:
        """Claim and do one piece of work; False when there was none."""
        raise NotImplementedError

    def stop_grace(self) -> float:
        """How long work in hand may go on once the service stops (seconds)."""
        return 0

    def stop_overdue(self):
        """Work in hand outlived ``stop_grace``: cut it off."""
        for d in self._loops or ():
            d.cancel()

    # -- service -----------------------------------------------------------------------------

    def startService(self):
        super().startService()
        self._stopping = False
        self._sleepers = set()
        self._unsubscribe = self.store.changes.subscribe(self.channel, lambda _: self.wake())
        self._loops = []
        for lane in self.lanes():
            d = defer.Deferred.fromCoroutine(self._loop(lane))
            d.addErrback(lambda f: f.trap(CancelledError))
            d.addErrback(lambda f: self._log.failure("{label} loop died", f, label=self.label))
            self._loops.append(d)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.wake()
        loops = self._loops or []
        if not loops:
            return
        grace = self.stop_grace()
        if grace <= 0:
            self.stop_overdue()
        done = defer.DeferredList(loops, consumeErrors=True)
        timer = self.clock.callLater(grace, self.stop_overdue) if grace > 0 else None
        yield done
        self._loops = []
        if timer is not None and timer.active():
            timer.cancel()

    def wake(self):
        """Cut every idle sleep short: new work was announced."""
        sleepers, self._sleepers = self._sleepers or set(), set()
        for d in sleepers:
            if not d.called:
                d.callback(None)

    def _sleep(self, seconds: float) -> defer.Deferred:
        def cancel(_):
            if call.active():
                call.cancel()

        d = defer.Deferred(cancel)
        call = self.clock.callLater(seconds, lambda: d.called or d.callback(None))
        self._sleepers.add(d)

        def done(result):
            self._sleepers.discard(d)
            cancel(None)
            return result

        return d.addBoth(done)

    async def _loop(self, lane):
        delay = self.min_poll
        while self.running:
            try:
                worked = await self.run_once(lane)
            except CancelledError:
                raise
            except StorageUnavailable as e:
                self._log.warn(
                    "{label}: storage unavailable: {error}", label=self.label, error=str(e)
                )
                worked = False
            except Exception:
                self._log.failure("{label} failed ({lane})", label=self.label, lane=lane)
                worked = False
            if not self.running:
                break
            if worked:
                delay = self.min_poll
                continue
            await self._sleep(delay)
            delay = min(delay * 2, self.max_poll)


class LeasedWorkers(PollingService):
    """A ``PollingService`` whose loops claim rows with a lease: the outbound queue and the job
    workers. ``reactor`` runs threads and connections; ``clock`` (the reactor unless given) is
    the time of claims, leases and polls; ``node`` names the lease owner (default
    ``server.instance_name``); work in transit is spooled under ``spool_dir`` (made at start)."""

    #: How long a claim holds before another node may take the work over.
    DEFAULT_LEASE_SECONDS = 300

    def __init__(
        self,
        store,
        get_config,
        reactor,
        spool_dir: str,
        clock=None,
        node: str | None = None,
        lease_seconds: float | None = None,
    ):
        self.store = store
        self.get_config = get_config
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.node = node or get_config().server.instance_name
        self.lease_seconds = self.DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds
        self.spool_dir = os.path.abspath(spool_dir)

    def startService(self):
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        super().startService()

    def stop_grace(self) -> float:
        """Work in hand may finish for up to ``server.shutdown_timeout_seconds`` (10 s if 0)."""
        return self.get_config().server.shutdown_timeout_seconds or 10

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1_000_000_000)
