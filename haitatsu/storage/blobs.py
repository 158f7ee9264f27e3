"""Blob stores: message bodies addressed by the SHA-256 of their content.

The directory store is the embedded default. A blob is written to a temporary file, fsynced and
renamed into place (then the directory is fsynced), so a blob either exists whole or not at all;
identical content maps to the same key and is written once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile

import attrs
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from haitatsu.interfaces import IBlobStore, StorageUnavailable

CHUNK = 256 * 1024


@attrs.frozen
class BlobRef:
    key: str
    sha256: str
    size: int


def hash_file(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@implementer(IBlobStore)
class DirectoryBlobStore:
    def __init__(self, root: str, reactor, threadpool=None):
        self.root = os.path.abspath(root)
        self._reactor = reactor
        self._pool = threadpool if threadpool is not None else reactor.getThreadPool()
        self._tmp = os.path.join(self.root, "tmp")

    def _run(self, fn, *args):
        d = deferToThreadPool(self._reactor, self._pool, fn, *args)

        def wrap(failure):
            if failure.check(OSError):
                raise StorageUnavailable(f"blobs: {failure.value}")
            return failure

        return d.addErrback(wrap)

    def path(self, key: str) -> str:
        if len(key) != 64 or not _is_hex(key):
            raise ValueError(f"not a blob key: {key!r}")
        return os.path.join(self.root, key[:2], key[2:4], key)

    # -- IBlobStore -----------------------------------------------------------------------

    def put_file(self, path):
        return self._run(self._put_file, path)

    def _put_file(self, source: str) -> BlobRef:
        sha, size = hash_file(source)
        dest = self.path(sha)
        if os.path.exists(dest) and os.path.getsize(dest) == size:
            return BlobRef(sha, sha, size)
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.dirname(dest))
        return BlobRef(sha, sha, size)

    def open(self, key):
        return self._run(self._open, key)

    def _open(self, key):
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def read(self, key, start=0, length=None):
        return self._run(self._read, key, start, length)

    def _read(self, key, start, length):
        with self._open(key) as f:
            f.seek(start)
            return f.read() if length is None else f.read(length)

    def read_many(self, ranges):
        """Fire with the bytes of each ``(key, start, length)``, read one after the other in
        one thread call: for callers that read many small ranges (SEARCH BODY), where a
        thread hop per read is what costs."""
        return self._run(lambda: [self._read(key, start, length) for key, start, length in ranges])

    def delete(self, key):
        return self._run(self._delete, key)

    def _delete(self, key):
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def list_keys(self, start_after="", limit=1000):
        return self._run(self._list_keys, start_after, limit)

    def _list_keys(self, start_after: str, limit: int) -> list[tuple[str, int]]:
        """Walk ``ab/cd/<key>`` in key order, skipping whole directories before ``start_after``
        (``tmp/`` and anything not named like a key is not a blob)."""
        out: list[tuple[str, int]] = []

        def names(path, width):
            try:
                entries = os.listdir(path)
            except FileNotFoundError:
                return []
            return sorted(n for n in entries if len(n) == width and _is_hex(n))

        for first in names(self.root, 2):
            if first < start_after[:2]:
                continue
            level1 = os.path.join(self.root, first)
            for second in names(level1, 2):
                if first + second < start_after[:4]:
                    continue
                level2 = os.path.join(level1, second)
                for key in names(level2, 64):
                    if key <= start_after or not key.startswith(first + second):
                        continue
                    try:
                        modified = os.stat(os.path.join(level2, key)).st_mtime_ns
                    except FileNotFoundError:
                        continue
                    out.append((key, modified))
                    if len(out) >= limit:
                        return out
        return out

    def check(self):
        return self._run(self._check)

    def _check(self):
        os.makedirs(self._tmp, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=self._tmp, prefix="check-")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)


def _fsync_dir(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EISDIR):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
