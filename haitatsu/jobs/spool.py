"""Copying a source's message into a spool file, in a thread, a chunk at a time.

File sources (maildir, mbox) hold messages with LF line ends, as Unix mail tools write them;
IMAP and every other path of ours store CRLF, so those are converted (``crlf=True``): a lone LF
becomes CRLF, a CRLF stays, a lone CR stays. A ZIP of ours is copied as it is. A message longer
than the limit stops the copy (``TooLarge``) and leaves no file behind.
"""

from __future__ import annotations

import os
import tempfile

CHUNK = 256 * 1024

#: Header bytes read to find Status/X-Status (mbox) before giving up.
MAX_HEADER_BYTES = 256 * 1024


class TooLarge(Exception):
    """The message is longer than the import's size limit."""


def new_spool_file(spool_dir: str, prefix: str = "import-"):
    """A new spool file: ``(binary file open for writing, path)``."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".eml", dir=spool_dir)
    return os.fdopen(fd, "wb"), path


def remove(path: str | None):
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def copy_to_spool(source, spool_dir: str, limit: int, crlf: bool) -> str:
    """Copy the binary file ``source`` (from its position) into a new spool file; its path.
    ``TooLarge`` past ``limit`` bytes (as stored)."""
    out, path = new_spool_file(spool_dir)
    try:
        with out:
            if crlf:
                _copy_crlf(source, out, limit)
            else:
                _copy(source, out, limit)
    except BaseException:
        remove(path)
        raise
    return path


def _copy(source, out, limit):
    size = 0
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(size)
        out.write(chunk)


def _copy_crlf(source, out, limit):
    size = 0
    carry = b""
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            break
        data = carry + chunk
        # A CR at the end may be the first half of a CRLF split between two chunks.
        if data.endswith(b"\r"):
            data, carry = data[:-1], b"\r"
        else:
            carry = b""
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        size += len(data)
        if size > limit:
            raise TooLarge(size)
        out.write(data)
    if carry:
        if size + 1 > limit:
            raise TooLarge(size + 1)
        out.write(carry)


def copy_file(path: str, spool_dir: str, limit: int, crlf: bool) -> str:
    with open(path, "rb") as source:
        return copy_to_spool(source, spool_dir, limit, crlf)


def header_fields(path: str, names) -> dict[str, str]:
    """The first value of each header field in ``names`` (lowercase) of the message at
    ``path``, reading at most ``MAX_HEADER_BYTES`` of its header."""
    wanted = {n.lower() for n in names}
    found: dict[str, str] = {}
    read = 0
    current = None
    with open(path, "rb") as f:
        for line in f:
            read += len(line)
            if read > MAX_HEADER_BYTES or line in (b"\r\n", b"\n"):
                break
            if line[:1] in (b" ", b"\t"):
                if current is not None:
                    found[current] += " " + line.strip().decode("latin-1")
                continue
            name, colon, value = line.partition(b":")
            current = None
            if not colon:
                continue
            key = name.strip().decode("latin-1").lower()
            if key in wanted and key not in found:
                found[key] = value.strip().decode("latin-1")
                current = key
    return found
