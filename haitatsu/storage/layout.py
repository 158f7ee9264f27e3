"""Splitting a message into a skeleton and part blobs, and reading it back as one byte stream.

A message whose leaf MIME parts have large bodies is stored as one blob per such body (the raw
encoded bytes exactly as received, so the same attachment sent again with the same line
wrapping has the same SHA-256 and is stored once) and a skeleton blob with everything else. The
message row keeps the layout: the ordered segments ``[blob_key, offset, length]`` whose
concatenation is the received message, byte for byte (DESIGN.md invariant 3). The split uses
only the parser's byte offsets, which are exact whatever the line endings or however broken the
MIME, so nothing here interprets the message.

Everything in this module that touches files blocks: run it in a thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import attrs

CHUNK = 256 * 1024


def split_ranges(parts: dict, size: int, threshold: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` body ranges of leaf parts at least ``threshold`` bytes long, in
    order and disjoint. ``threshold`` 0 turns splitting off.

    Leaves are the parser's entries with a ``type`` (not multipart) and no ``text_start`` (not a
    parsed message/rfc822, whose own leaves are listed separately). A range that covers the
    whole message is not split: the skeleton would be empty and the part is the message.
    """
    if threshold <= 0:
        return []
    candidates = []
    for entry in (parts or {}).values():
        if "type" not in entry or "text_start" in entry:
            continue
        start, end = entry.get("body_start", -1), entry.get("end", -1)
        if not (0 <= start < end <= size) or end - start < threshold:
            continue
        candidates.append((start, end))
    chosen: list[tuple[int, int]] = []
    for start, end in sorted(candidates):
        if chosen and start < chosen[-1][1]:
            continue
        chosen.append((start, end))
    if chosen == [(0, size)]:
        return []
    return chosen


@attrs.frozen
class Piece:
    """One blob to store for a message: the file holding it and its precomputed key."""

    path: str
    key: str
    size: int
    temporary: bool


@attrs.frozen
class Prepared:
    """A message ready to be stored: its whole SHA-256 and size, the blobs to put, and the
    layout to record (None when the message is stored whole)."""

    sha256: str
    size: int
    pieces: tuple[Piece, ...]
    layout: list | None

    @property
    def blob_key(self) -> str:
        """What the message row's ``blob_key`` shows: the whole message, or the skeleton."""
        return self.pieces[0].key

    def remove_temporary(self) -> None:
        for piece in self.pieces:
            if piece.temporary:
                try:
                    os.unlink(piece.path)
                except FileNotFoundError:
                    pass


def prepare(
    spool_path: str, parts: dict, threshold: int, workdir: str, whole: tuple | None = None
) -> Prepared:
    """Read the spool file once: hash it and, if it has large parts, copy the skeleton and each
    part body into temporary files in ``workdir`` (hashing those too). Memory stays at one chunk.

    ``whole``: the file's ``(sha256, size)`` when the caller hashed it already; a message that
    is not split is then not read at all.
    """
    size = whole[1] if whole is not None else os.path.getsize(spool_path)
    ranges = split_ranges(parts, size, threshold)
    if not ranges:
        sha = whole[0] if whole is not None else _hash(spool_path)
        return Prepared(sha, size, (Piece(spool_path, sha, size, False),), None)
    made: list[tuple[str, object]] = []
    try:
        return _split(spool_path, ranges, workdir, made)
    except BaseException:
        for path, out in made:
            out.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        raise


def _split(spool_path, ranges, workdir, made) -> Prepared:
    def new_file():
        fd, path = tempfile.mkstemp(dir=workdir, prefix="part-")
        out = os.fdopen(fd, "wb")
        made.append((path, out))
        return path, out

    whole = hashlib.sha256()
    skeleton_path, skeleton = new_file()
    skeleton_hash = hashlib.sha256()
    skeleton_size = 0
    # Segments with None standing for the skeleton's key, known only at the end.
    segments: list[list] = []
    part_files: list[tuple[str, str, int]] = []
    position = 0
    with open(spool_path, "rb") as src:

        def copy(length, out, digest) -> int:
            copied = 0
            while length is None or copied < length:
                want = CHUNK if length is None else min(CHUNK, length - copied)
                chunk = src.read(want)
                if not chunk:
                    break
                whole.update(chunk)
                digest.update(chunk)
                out.write(chunk)
                copied += len(chunk)
            if length is not None and copied != length:
                raise OSError(f"{spool_path}: shorter than its parsed structure")
            return copied

        for start, end in ranges:
            if start > position:
                n = copy(start - position, skeleton, skeleton_hash)
                segments.append([None, skeleton_size, n])
                skeleton_size += n
            path, out = new_file()
            digest = hashlib.sha256()
            copy(end - start, out, digest)
            out.close()
            key = digest.hexdigest()
            part_files.append((path, key, end - start))
            segments.append([key, 0, end - start])
            position = end
        n = copy(None, skeleton, skeleton_hash)
        if n:
            segments.append([None, skeleton_size, n])
            skeleton_size += n
    skeleton.close()
    skeleton_key = skeleton_hash.hexdigest()
    layout = [[key or skeleton_key, offset, length] for key, offset, length in segments]
    pieces = [Piece(skeleton_path, skeleton_key, skeleton_size, True)]
    seen = {skeleton_key}
    for path, key, length in part_files:
        if key in seen:
            # The same bytes twice in one message (or a part equal to the skeleton): one blob.
            os.unlink(path)
            continue
        seen.add(key)
        pieces.append(Piece(path, key, length, True))
    total = sum(length for _, _, length in layout)
    return Prepared(whole.hexdigest(), total, tuple(pieces), layout)


def _hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class SegmentReader(io.RawIOBase):
    """A read-only, seekable file over the concatenation of segments of open blob files.

    ``files`` maps blob keys to binary files positioned anywhere (each is seeked before use);
    the reader owns them and closes them with itself. Reads cross segment boundaries, so
    ``read(n)`` returns ``n`` bytes until the end. Memory is the caller's buffer only.
    """

    def __init__(self, files: dict, segments):
        super().__init__()
        self._files = files
        self._segments = []
        offset = 0
        for key, start, length in segments:
            if length > 0:
                self._segments.append((offset, key, start, length))
                offset += length
        self._size = offset
        self._position = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._position + offset
        elif whence == os.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._position = target
        return target

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self._size:
            index = self._find(self._position)
            begin, key, start, length = self._segments[index]
            within = self._position - begin
            want = min(len(view) - filled, length - within)
            f = self._files[key]
            f.seek(start + within)
            data = f.read(want)
            if not data:
                raise OSError(f"blob {key} is shorter than the message layout says")
            got = len(data)
            view[filled : filled + got] = data
            filled += got
            self._position += got
        return filled

    def _find(self, position: int) -> int:
        low, high = 0, len(self._segments) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self._segments[middle][0] <= position:
                low = middle
            else:
                high = middle - 1
        return low

    def close(self) -> None:
        if not self.closed:
            files, self._files = self._files, {}
            for f in files.values():
                f.close()
        super().close()
