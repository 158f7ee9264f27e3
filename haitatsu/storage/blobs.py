"""Blob stores: message bodies addressed by the SHA-256 of their content.

The directory store is the embedded default. A blob is written to a temporary file, fsynced and
renamed into place (then the directory is fsynced), so a blob either exists whole or not at all;
identical content maps to the same key and is written once. A file its caller will not write
again (a delivery's spool file) is fsynced and hard-linked into place instead of copied.

Besides blobs, a store keeps a few *named* objects (an export's ZIP under ``exports/<job id>``),
written the same way under the root; their names never look like the blob tree's
(``check_object_name``), so garbage collection, which lists blobs only, never sees them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
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


_OBJECT_LEVEL = re.compile(r"[A-Za-z0-9._-]+")

#: First levels a named object may not use: the blob stores' own layout.
_RESERVED_LEVELS = ("blobs", "tmp")


def check_object_name(name: str) -> str:
    """``name`` if it may name an object (levels of letters, digits, ``.``, ``_``, ``-``,
    joined by ``/``; no ``.`` or ``..`` level; not under the blob layout), else ``ValueError``.
    """
    if not isinstance(name, str) or not name or len(name) > 512:
        raise ValueError("an object name is 1 to 512 characters")
    levels = name.split("/")
    for level in levels:
        if not _OBJECT_LEVEL.fullmatch(level) or level in (".", ".."):
            raise ValueError(f"bad object name {name!r}: letters, digits, '.', '_', '-' and '/'")
    first = levels[0]
    if first in _RESERVED_LEVELS or (len(first) == 2 and _is_hex(first)):
        raise ValueError(f"object name {name!r} is in the blob layout: use e.g. exports/")
    return name


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

    def put_file(self, path, sha256=None, size=None, link=False):
        return self._run(self._put_file, path, sha256, size, link)

    def _put_file(self, source: str, sha256=None, size=None, link=False) -> BlobRef:
        """In one thread hop: the key (hashing the file unless ``sha256`` is given), then the
        file linked into place (``link``) or copied there through ``tmp/``, fsynced before it
        gets its name, and the directory fsynced after."""
        if sha256 is None:
            sha, size = hash_file(source)
        else:
            sha = sha256
            if size is None:
                size = os.path.getsize(source)
        dest = self.path(sha)
        if link and self._link(source, dest, size):
            return BlobRef(sha, sha, size)
        try:
            existing = os.path.getsize(dest)
        except FileNotFoundError:
            existing = None
        if existing == size:
            _fsync_dir(os.path.dirname(dest))
            return BlobRef(sha, sha, size)
        fd, tmp = self._temporary()
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            self._with_directories(os.replace, tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.dirname(dest))
        return BlobRef(sha, sha, size)

    def _link(self, source: str, dest: str, size: int) -> bool:
        """Give the caller's file (which it will not write again) the blob's name: fsync it,
        hard-link it into place, fsync the directory. A blob already there with the same size
        is the same content (its name is its hash), so the new name is not needed; the
        directory is fsynced anyway, in case a concurrent put of it has not done so yet.
        False: no link can be made here (another file system, no hard links, or a file of the
        wrong size in the blob's place); the caller copies."""
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            self._with_directories(os.link, source, dest)
        except FileExistsError:
            if os.path.getsize(dest) != size:
                return False
        except OSError as e:
            if e.errno in _CANNOT_LINK:
                return False
            raise
        _fsync_dir(os.path.dirname(dest))
        return True

    def _temporary(self):
        try:
            return tempfile.mkstemp(dir=self._tmp, prefix="put-")
        except FileNotFoundError:
            self._make_directories(self._tmp)
            return tempfile.mkstemp(dir=self._tmp, prefix="put-")

    def _with_directories(self, fn, source: str, dest: str):
        """``fn(source, dest)`` (link or rename), creating ``dest``'s directories if they are
        missing: the common case costs no extra system call."""
        try:
            return fn(source, dest)
        except FileNotFoundError:
            if not os.path.exists(source):
                raise
            self._make_directories(os.path.dirname(dest))
            return fn(source, dest)

    def _make_directories(self, path: str) -> None:
        """Create ``path`` and missing parents, fsyncing each parent that got a new entry, so
        a blob's name never depends on a directory entry that a crash could lose."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._make_directories(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        _fsync_dir(parent)

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

    # -- named objects --------------------------------------------------------------------

    def object_path(self, name: str) -> str:
        return os.path.join(self.root, *check_object_name(name).split("/"))

    def put_object(self, name, path):
        return self._run(self._put_object, self.object_path(name), path)

    def _put_object(self, dest: str, source: str) -> int:
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="object-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.dirname(dest))
        return size

    def open_object(self, name):
        return self._run(self._open_object, self.object_path(name))

    def _open_object(self, path: str):
        # A symbolic link placed under the root must not lead out of it.
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            raise KeyError(path)
        try:
            return open(real, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(path) from None

    def delete_object(self, name):
        return self._run(self._delete_object, self.object_path(name))

    def _delete_object(self, path: str):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _check(self):
        self._make_directories(self._tmp)
        fd, probe = tempfile.mkstemp(dir=self._tmp, prefix="check-")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)


#: errno values for which a hard link cannot be made and the blob is copied instead.
_CANNOT_LINK = frozenset(
    (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES)
)


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
