"""Spool files: where a message goes while DATA is being received.

A message is never held in memory on the receive path (DESIGN.md, invariant 2): what arrives is
written here at once and the store reads the finished file. Writes are buffered writes
into the page cache and do not wait on the disk; durability comes later, from the blob store's
fsync, before the client is told 250.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

#: Spool files start with this, so an operator can tell them from other files in the directory.
PREFIX = "smtp-"


class SpoolFile:
    """One message being received: a private temporary file in the spool directory."""

    def __init__(self, path: str, fileobj):
        self.path = path
        self._file = fileobj
        self.size = 0

    @classmethod
    def create(cls, directory: str, name: str = "") -> SpoolFile:
        """Create an empty spool file (mode 0600); ``OSError`` if the directory is unusable.

        ``name`` (the message's trace id, unique already) names the file directly, which
        spares ``tempfile``'s search for a free name; a clash falls back to it."""
        fd = None
        if name:
            path = os.path.join(directory, f"{PREFIX}{name}.eml")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                fd = None
        if fd is None:
            fd, path = tempfile.mkstemp(prefix=PREFIX, suffix=".eml", dir=directory)
        return cls(path, os.fdopen(fd, "wb", buffering=64 * 1024))

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def close(self) -> None:
        """Flush and close; the file stays for the store to read."""
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        """Close and remove the file. Safe to call more than once and after ``close``."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
