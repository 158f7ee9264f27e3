"""Hot reload: re-evaluate the config file on change, SIGHUP or request, and swap it in.

``ConfigWatcher.current`` is the one live ``Config``. Components read it when a connection or
request starts (never copy values at start-up), so a swapped config applies to the next
connection. Listeners registered with ``add_listener`` are told of each swap, for things that must
be rebuilt (the log level, for example).

A reload is refused, and the running config stays, when the file fails to evaluate or validate, or
when it changes a restart-only key (``RESTART_KEYS``): the error text is the one the REST endpoint
returns with 409 ``reload_failed``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from haitatsu.config.loader import load_config_async
from haitatsu.config.model import Config, ConfigError, restart_keys_changed

#: Seconds of quiet after the last file event before reloading: an editor's save is several
#: events (truncate, writes, close, or write-temp + rename), and we want to read the end result.
DEBOUNCE_SECONDS = 0.2

#: The name Kubernetes swaps atomically when a mounted ConfigMap changes.
_K8S_DATA_LINK = b"..data"


class ReloadError(Exception):
    """A reload was refused; the message says why, the running config is unchanged."""


Listener = Callable[[Config, Config], object]

#: ``async check(new) -> commit | None``: runs on every reload, before the swap, even when the
#: file is unchanged; raising ``ConfigError`` refuses the reload; ``commit()`` runs after the swap.
ReloadCheck = Callable[[Config], Awaitable[Callable[[], None] | None]]


class ConfigWatcher(Service):
    """Owns the live configuration and reloads it; a twisted ``Service``.

    Triggers: inotify on the file's directory (so rename-saves and editors that replace the file
    count), SIGHUP, and ``reload()`` (``POST /api/v1/admin/reload``). Reloads run one at a time.
    """

    _log = Logger()

    def __init__(
        self,
        path: str | os.PathLike,
        reactor,
        initial: Config,
        *,
        debounce: float = DEBOUNCE_SECONDS,
        handle_sighup: bool = True,
    ):
        self.path = os.path.abspath(path)
        self.current: Config = initial
        self._reactor = reactor
        self._debounce = debounce
        self._handle_sighup = handle_sighup
        self._listeners: list[Listener] = []
        self._checks: list[ReloadCheck] = []
        self._lock = DeferredLock()
        self._auto_queued = False
        self._pending_call = None
        self._notifier = None
        self._previous_sighup = None
        self._sighup_installed = False
        self._name = os.fsencode(os.path.basename(self.path))

    # -- public API --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` after each successful swap, in the reactor thread."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def add_reload_check(self, check: ReloadCheck) -> None:
        """Run ``check(new)`` on every reload that passes validation, before the swap and even
        when the file did not change: for state that lives outside the file but is re-read on
        reload (TLS certificate files). A ``ConfigError`` from it refuses the reload; the
        callable it returns (if any) runs once the reload is accepted."""
        self._checks.append(check)

    def reload(self) -> Deferred[Config]:
        """Re-evaluate the file and swap it in; fire with the live config or fail ``ReloadError``.

        Waits for any reload already running, so concurrent calls are applied in order.
        """
        return self._lock.run(lambda: Deferred.fromCoroutine(self._reload("request")))

    # -- service -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._start_inotify()
        if self._handle_sighup:
            try:
                self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
                self._sighup_installed = True
            except ValueError:  # not the main thread
                self._log.warn("cannot handle SIGHUP outside the main thread")

    def stopService(self):
        if self._sighup_installed:
            previous = self._previous_sighup
            signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)
            self._sighup_installed = False
            self._previous_sighup = None
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.cancel()
        self._pending_call = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        super().stopService()
        # A reload in progress finishes (its thread cannot be stopped); wait for it.
        return self._lock.run(lambda: None)

    # -- triggers ----------------------------------------------------------------------

    def _start_inotify(self) -> None:
        try:
            from twisted.internet import inotify
        except ImportError:
            self._log.warn("no inotify here: config file changes need SIGHUP or the reload API")
            return
        mask = (
            inotify.IN_CLOSE_WRITE
            | inotify.IN_MOVED_TO
            | inotify.IN_CREATE
            | inotify.IN_MODIFY
            | inotify.IN_DELETE
        )
        try:
            notifier = inotify.INotify(self._reactor)
            notifier.startReading()
            notifier.watch(
                FilePath(os.path.dirname(self.path)), mask=mask, callbacks=[self._on_file_event]
            )
        except (OSError, inotify.INotifyError) as e:
            self._log.warn(
                "cannot watch {directory} ({error}): config file changes need SIGHUP or the "
                "reload API",
                directory=os.path.dirname(self.path),
                error=e,
            )
            return
        self._notifier = notifier

    def _on_file_event(self, ignored, filepath, mask) -> None:
        if filepath.basename() not in (self._name, _K8S_DATA_LINK):
            return
        if self._pending_call is not None and self._pending_call.active():
            self._pending_call.reset(self._debounce)
        else:
            self._pending_call = self._reactor.callLater(
                self._debounce, self._trigger, "file change"
            )

    def _on_sighup(self, signum, frame) -> None:
        # Runs between bytecodes of whatever the main thread was doing: hand over to the reactor.
        self._reactor.callFromThread(self._trigger, "SIGHUP")

    def _trigger(self, trigger: str) -> Deferred | None:
        """An automatic reload: at most one waits behind a running one; failures are logged."""
        self._pending_call = None
        if self._auto_queued:
            return None

        async def run():
            self._auto_queued = False
            try:
                await self._reload(trigger)
            except ReloadError:
                pass  # logged by _reload

        self._auto_queued = True
        return self._lock.run(lambda: Deferred.fromCoroutine(run()))

    # -- the reload itself --------------------------------------------------------------

    async def _reload(self, trigger: str) -> Config:
        try:
            new = await load_config_async(self.path, self._reactor)
        except ConfigError as e:
            self._log.error(
                "config reload ({trigger}) failed, keeping the running config: {reason}",
                trigger=trigger,
                reason=str(e),
            )
            raise ReloadError(str(e)) from None
        old = self.current
        changed = restart_keys_changed(old, new)
        if changed:
            reason = "reload requires restart: [" + " ".join(changed) + "]"
            self._log.error(
                "config reload ({trigger}) refused, keeping the running config: {reason}",
                trigger=trigger,
                reason=reason,
            )
            raise ReloadError(reason)
        commits = []
        for check in list(self._checks):
            try:
                commit = await check(new)
            except ConfigError as e:
                self._log.error(
                    "config reload ({trigger}) refused, keeping the running config: {reason}",
                    trigger=trigger,
                    reason=str(e),
                )
                raise ReloadError(str(e)) from None
            if commit is not None:
                commits.append(commit)
        for commit in commits:
            commit()
        if new == old:
            self._log.info("config reload ({trigger}): no change", trigger=trigger)
            return old
        self.current = new
        self._log.info(
            "config reloaded from {path} ({trigger}); changed: {blocks}",
            path=self.path,
            trigger=trigger,
            blocks=" ".join(_changed_blocks(old, new)),
        )
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                self._log.failure("config listener {listener!r} failed", listener=listener)
        return new


def _changed_blocks(old: Config, new: Config) -> list[str]:
    """Top-level block names that differ (names only: values may be secrets)."""
    return [f.name for f in attrs.fields(Config) if getattr(old, f.name) != getattr(new, f.name)]
