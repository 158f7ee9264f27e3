"""Content-Transfer-Encoding decoding of one body part, a chunk at a time.

The REST API's attachment download and IMAP's ``FETCH BINARY`` (RFC 3516) both turn a byte range
of a stored message back into the part's content. Both read the part in chunks and never hold
more than a chunk of it: a decoder keeps at most an incomplete base64 group or an unfinished
quoted-printable line (itself capped) between chunks.

The decoders are lenient as mail readers are: characters outside the base64 alphabet are
skipped, a broken base64 group is dropped, encoded pieces concatenated after padding are decoded
one after the other. ``decoded_chunks`` always reads the same pieces of a part, so two passes over
it (one to measure it, one to send it) agree to the byte.
"""

from __future__ import annotations

import binascii
import re

#: Transfer encodings that leave the bytes as they are (RFC 2045 section 6; "" means absent).
IDENTITY_ENCODINGS = frozenset(("", "7bit", "8bit", "binary"))
#: Transfer encodings with a decoding step.
DECODED_ENCODINGS = frozenset(("base64", "quoted-printable"))

CHUNK_SIZE = 64 * 1024


class Base64Decoder:
    _junk = re.compile(rb"[^A-Za-z0-9+/=]")

    def __init__(self):
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        self._pending += self._junk.sub(b"", chunk)
        whole = len(self._pending) // 4 * 4
        ready, self._pending = self._pending[:whole], self._pending[whole:]
        return self._decode(ready)

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        if len(rest) < 2:
            return b""
        return self._decode(rest + b"=" * (-len(rest) % 4))

    @staticmethod
    def _decode(text: bytes) -> bytes:
        # a2b_base64 stops at padding: decode group by group past each padded one (messages
        # that concatenate encoded pieces exist). A broken group is skipped, as mail readers do.
        out, start = [], 0
        while start < len(text):
            pad = text.find(b"=", start)
            end = len(text) if pad < 0 else (pad // 4 + 1) * 4
            try:
                out.append(binascii.a2b_base64(text[start:end]))
            except binascii.Error:
                pass
            start = end
        return b"".join(out)


class QuotedPrintableDecoder:
    """Decodes whole lines; a line longer than ``HOLD`` is cut where no ``=XX`` escape or soft
    line break straddles the cut, so memory stays bounded on a part without line ends."""

    HOLD = 64 * 1024

    def __init__(self):
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        self._pending += chunk
        cut = self._pending.rfind(b"\n") + 1
        if not cut and len(self._pending) > self.HOLD:
            cut = len(self._pending)
            equals = self._pending.rfind(b"=", cut - 2)
            if equals >= 0:
                cut = equals
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return binascii.a2b_qp(ready) if ready else b""

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return binascii.a2b_qp(rest) if rest else b""


class IdentityDecoder:
    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


class LineEndings:
    """Turns bare LF into CRLF (RFC 3516 section 6: textual sections are sent with CRLF); a CR
    at the end of a chunk waits for the next one, so a CRLF cut in two is not doubled."""

    def __init__(self):
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        self._carry = b""
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        if b"\n" not in data:
            return data
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry


def decoder_for(encoding: str):
    """A fresh decoder for a (lowercase) transfer encoding, or None when it is not one we know."""
    if encoding in IDENTITY_ENCODINGS:
        return IdentityDecoder()
    if encoding == "base64":
        return Base64Decoder()
    if encoding == "quoted-printable":
        return QuotedPrintableDecoder()
    return None


def decoded_chunks(fileobj, start: int, end: int, encoding: str, textual: bool = False):
    """Yield the decoded content of ``fileobj[start:end]`` in pieces (some may be empty).

    ``textual`` also turns bare LF into CRLF. Raises ValueError for an unknown encoding. The
    file is read in ``CHUNK_SIZE`` pieces from ``start``; the caller owns the file.
    """
    decoder = decoder_for(encoding)
    if decoder is None:
        raise ValueError("unknown transfer encoding %r" % encoding)
    lines = LineEndings() if textual else None
    fileobj.seek(start)
    left = max(0, end - start)
    while left:
        chunk = fileobj.read(min(CHUNK_SIZE, left))
        if not chunk:
            break
        left -= len(chunk)
        out = decoder.feed(chunk)
        yield lines.feed(out) if lines is not None else out
    out = decoder.finish()
    if lines is not None:
        out = lines.feed(out) + lines.finish()
    yield out


class DecodingReader:
    """A file-like ``read(n)`` over ``blob[start:end]``, decoded; ``b""`` only at the end.

    An unknown encoding is passed through as it is (the REST API offers the bytes rather than
    nothing)."""

    def __init__(self, blob, start: int, end: int, encoding: str):
        self._blob = blob
        self._left = max(0, end - start)
        blob.seek(start)
        self._decoder = decoder_for(encoding) or IdentityDecoder()
        self._done = False

    def read(self, size: int = 65536) -> bytes:
        while not self._done:
            chunk = self._blob.read(min(max(size, 4096), self._left)) if self._left else b""
            self._left -= len(chunk)
            if not chunk:
                self._left = 0
            out = self._decoder.feed(chunk)
            if not self._left:
                self._done = True
                out += self._decoder.finish()
            if out:
                return out
        return b""

    def close(self):
        self._blob.close()
