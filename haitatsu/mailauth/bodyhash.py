"""DKIM body hashes (RFC 6376 3.4.3, 3.4.4, 3.7) computed while the message streams past.

dkimpy hashes the body from one bytes object, so verifying with it as it is would put the whole
message in memory. ``read_signed_message`` reads the header section (bounded), asks which body
hashes its signatures need (canonicalization, hash algorithm, ``l=``), then reads the body once
in chunks and feeds every ``BodyHasher`` line by line: memory is one chunk and one line, however
large the message. The canonical forms are dkimpy's own, byte for byte (tests compare them on
CPython's email corpus): lines end at LF with an optional CR before it, trailing empty lines do
not count, an empty body is CRLF in ``simple`` and nothing in ``relaxed``.
"""

from __future__ import annotations

import hashlib
import re

import attrs

#: Largest header section read; a longer one cannot be verified.
HEADER_LIMIT = 256 * 1024

_CHUNK = 256 * 1024
_WSP_RUN = re.compile(rb"[ \t]+")

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


class HeaderTooLarge(Exception):
    """The header section is longer than the limit."""


@attrs.frozen
class BodySpec:
    """Which body hash a signature needs: ``canonicalization`` (``simple``/``relaxed``),
    ``algorithm`` (``sha1``/``sha256``) and ``limit`` (``l=``; None for the whole body)."""

    canonicalization: str
    algorithm: str
    limit: int | None = None


class BodyHasher:
    """The hash of a body's canonical form, fed one line at a time (without its line ending).

    Empty lines are counted, not hashed, until a line with content follows: empty lines at the
    end of the body do not count (RFC 6376 3.4.3, 3.4.4).
    """

    def __init__(self, spec: BodySpec):
        self.spec = spec
        self._relaxed = spec.canonicalization == "relaxed"
        self._hash = ALGORITHMS[spec.algorithm]()
        self._remaining = spec.limit
        self._held = 0
        self._emitted = False

    def _emit(self, data: bytes) -> None:
        self._emitted = True
        if self._remaining is not None:
            if self._remaining <= 0:
                return
            data = data[: self._remaining]
            self._remaining -= len(data)
        self._hash.update(data)

    def line(self, content: bytes, ended: bool = True) -> None:
        """One line; ``ended`` False for a last line that had no line ending, whose trailing
        whitespace dkimpy keeps (it strips whitespace only before a CRLF)."""
        if self._relaxed:
            content = _WSP_RUN.sub(b" ", content.rstrip(b" \t") if ended else content)
        if not content:
            self._held += 1
            return
        if self._held:
            self._emit(b"\r\n" * self._held)
            self._held = 0
        self._emit(content + b"\r\n")

    def digest(self) -> bytes:
        if not self._emitted and not self._relaxed:
            self._emit(b"\r\n")
        return self._hash.digest()


@attrs.frozen
class SignedMessage:
    """What verification needs from a message: its ``header`` section (each field with its
    line ending, without the blank line after them) and the ``body_hashes`` asked for."""

    header: bytes
    body_hashes: dict


def _lines(f, first: bytes):
    """The lines of ``first`` and then of the rest of ``f``: ``(content, ended)`` pairs, content
    without LF and the CR before it; ``ended`` False only for a last line with no LF."""
    pending = first
    while True:
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            line = pending[start:end]
            yield (line[:-1] if line.endswith(b"\r") else line), True
            start = end + 1
        pending = pending[start:]
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        pending += chunk
    if pending:
        yield pending, False


def read_signed_message(path: str, specs_for, header_limit: int = HEADER_LIMIT) -> SignedMessage:
    """Read the message at ``path``: its header section, then ``specs_for(header)`` (the
    ``BodySpec`` values its signatures need), then the body once, hashing it for each.
    ``HeaderTooLarge`` when the header section is longer than ``header_limit``. Blocking I/O."""
    with open(path, "rb") as f:
        head = f.read(min(header_limit + 2, _CHUNK))
        header: list[bytes] = []
        size = 0
        lines = _lines(f, head)
        in_header = True
        for content, ended in lines:
            if not content:
                in_header = False
                break
            size += len(content) + 2
            if size > header_limit:
                raise HeaderTooLarge(f"header section over {header_limit} bytes")
            header.append(content + b"\r\n")
            if not ended:
                break
        header_bytes = b"".join(header)
        hashers = {spec: BodyHasher(spec) for spec in set(specs_for(header_bytes))}
        if hashers and not in_header:
            for content, ended in lines:
                for hasher in hashers.values():
                    hasher.line(content, ended)
    return SignedMessage(header_bytes, {spec: h.digest() for spec, h in hashers.items()})
