"""Spool files: where a message goes while DATA is being received.

A message is never held in memory on the receive path (DESIGN.md, invariant 2): what arrives is
written to its spool file through a buffer of at most ``SpoolFile.BUFFER`` bytes and the store
reads the finished file. Writes go into the page cache and do not wait on the disk; durability
comes later, from the blob store's fsync, before the client is told 250.

Creating and removing a file changes its directory, and on a journalling file system that can
wait for a journal commit that other threads' fsyncs (blobs, the database) keep starting: a
millisecond or more that the reactor would spend blocked. So ``SpoolDirectory`` creates spool
files ahead of need and removes used ones in a thread when the reactor can run threads, and the
last buffered bytes of a message are written by ``SpoolFile.close``, which the store calls in its
own thread before reading the file (``MailStore.deliver(finish=...)``). A message that fits the
buffer costs the reactor no file system call at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: Spool files start with this, so an operator can tell them from other files in the directory.
PREFIX = "smtp-"


class SpoolFile:
    """One message being received: a private file (mode 0600) in the spool directory.

    ``write`` keeps up to ``BUFFER`` bytes and writes them out when the buffer fills; ``close``
    writes the rest and closes the file (blocking: the store calls it in a thread); ``discard``
    drops what is buffered unwritten, closes and removes the file.
    """

    BUFFER = 64 * 1024

    def __init__(self, path: str, fd: int, remove=None):
        self.path = path
        self._fd: int | None = fd
        self._buffer = bytearray()
        self._remove = remove
        self.size = 0

    @classmethod
    def create(cls, directory: str, name: str = "", remove=None) -> SpoolFile:
        """Create an empty spool file; ``OSError`` if the directory is unusable.

        ``name`` (the message's trace id, unique already) names the file directly, which
        spares ``tempfile``'s search for a free name; a clash falls back to it. ``remove(path)``
        is what ``discard`` calls to remove the file (default: remove it at once)."""
        fd = None
        if name:
            path = os.path.join(directory, f"{PREFIX}{name}.eml")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                fd = None
        if fd is None:
            fd, path = tempfile.mkstemp(prefix=PREFIX, suffix=".eml", dir=directory)
        return cls(path, fd, remove)

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError(f"{self.path}: spool file is closed")
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self.BUFFER:
            self._flush()

    def _flush(self) -> None:
        written = 0
        with memoryview(self._buffer) as view:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        self._buffer.clear()

    @property
    def in_memory(self) -> bool:
        """Whether the whole message is still in the buffer (nothing written to the file yet,
        and the file open): ``buffered`` is all of it, and ``rewrite`` may replace it."""
        return self._fd is not None and self.size == len(self._buffer)

    def buffered(self) -> bytes:
        """What is buffered and not written yet (the whole message when ``in_memory``)."""
        return bytes(self._buffer)

    def rewrite(self, data: bytes) -> None:
        """Replace the message with ``data`` while it is all ``in_memory`` (the MX prepends
        its headers this way instead of copying the file); ``ValueError`` otherwise."""
        if not self.in_memory:
            raise ValueError(f"{self.path}: spool file is no longer only in memory")
        self._buffer = bytearray(data)
        self.size = len(data)
        if len(self._buffer) >= self.BUFFER:
            self._flush()

    def flush(self) -> None:
        """Write what is buffered to the file and keep it open (blocking)."""
        if self._fd is not None and self._buffer:
            self._flush()

    def close(self) -> None:
        """Write what is buffered and close; the file stays for the store to read. Safe to
        call more than once."""
        if self._fd is None:
            return
        fd = self._fd
        try:
            self._flush()
        finally:
            self._fd = None
            os.close(fd)

    def discard(self) -> None:
        """Drop unwritten bytes, close and remove the file. Safe to call more than once and
        after ``close``."""
        self._buffer = bytearray()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.path is not None:
            path, self.path = self.path, None
            if self._remove is not None:
                self._remove(path)
            else:
                _unlink(path)


class SpoolDirectory:
    """A listener's spool directory: hands out spool files and removes used ones.

    With a reactor that runs threads, up to ``READY`` empty files are created ahead of need in
    a thread (``take`` uses one and asks for more) and removals are queued and done in a
    thread, many at a time: the reactor does no directory changes. Without one (a test's clock),
    or when no ready file is left, files are created and removed at once.
    """

    _log = Logger()

    READY = 16

    def __init__(self, path: str, reactor=None):
        self.path = path
        self._reactor = reactor if IReactorThreads.providedBy(reactor) else None
        self._ready: list[tuple[int, str]] = []
        self._filling = False
        self._doomed: list[str] = []
        self._removing = False
        self._running = False

    def start(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._running = True
        self._fill()

    def stop(self) -> None:
        """Remove the files made ahead and those waiting to be removed (at shutdown)."""
        self._running = False
        ready, self._ready = self._ready, []
        for fd, path in ready:
            with contextlib.suppress(OSError):
                os.close(fd)
            _unlink(path)
        doomed, self._doomed = self._doomed, []
        for path in doomed:
            _unlink(path)

    def take(self, name: str = "") -> SpoolFile:
        """A new empty spool file (``OSError`` if none can be made)."""
        if self._ready:
            fd, path = self._ready.pop()
            self._fill()
            return SpoolFile(path, fd, self.remove)
        self._fill()
        return SpoolFile.create(self.path, name, self.remove)

    def remove(self, path: str) -> None:
        """Remove a spool file: soon, in a thread, or now without one."""
        if self._reactor is None or not self._running:
            _unlink(path)
            return
        self._doomed.append(path)
        if not self._removing:
            self._removing = True
            self._reactor.callLater(0, self._remove_queued)

    def _remove_queued(self):
        doomed, self._doomed = self._doomed, []
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _unlink_all, doomed)
        d.addErrback(lambda f: self._log.failure("removing spool files failed", f))

        def done(_):
            if self._doomed:
                self._reactor.callLater(0, self._remove_queued)
            else:
                self._removing = False

        d.addBoth(done)

    def _fill(self) -> None:
        if (
            self._reactor is None
            or not self._running
            or self._filling
            or len(self._ready) > self.READY // 2
        ):
            return
        self._filling = True
        want = self.READY - len(self._ready)
        d = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _create_files, self.path, want
        )

        def filled(files):
            self._filling = False
            if self._running:
                self._ready.extend(files)
            else:
                for fd, path in files:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    _unlink(path)

        def failed(failure):
            self._filling = False
            self._log.failure(
                "cannot create spool files in {spool_dir}", failure, spool_dir=self.path
            )

        d.addCallbacks(filled, failed)


def _create_files(directory: str, count: int) -> list[tuple[int, str]]:
    """``count`` empty spool files (fewer if the directory fails part way; an error if it
    fails at once). Runs in a thread."""
    files = []
    try:
        for _ in range(count):
            files.append(tempfile.mkstemp(prefix=PREFIX, suffix=".eml", dir=directory))
    except OSError:
        if not files:
            raise
    return files


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unlink_all(paths) -> None:
    for path in paths:
        _unlink(path)


def sweep(directory: str, older_than: float, now: float) -> int:
    """Remove the regular files in ``directory`` last modified before ``now - older_than``:
    spool and part files a crashed process left behind. Return how many were removed.

    Files still being written are recent (every write moves their mtime), so a threshold of an
    hour or more never touches a live transfer. Blocking: call it in a thread.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < now - older_than:
                os.unlink(entry.path)
                removed += 1
    return removed
