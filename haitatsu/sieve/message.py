"""The message as a Sieve script sees it: header fields (decoded, RFC 5228 2.7.2), addresses,
size, and body parts for the ``body`` test (RFC 5173).

Reads the stored message file on request: the header section up to a bound at once, the body
only when a script has a ``body`` test, and then at most ``max_body_bytes`` of it. Blocking file
I/O: the interpreter runs in a thread.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import os

#: How much of the header section is read (a longer one is cut, as in the filter context).
HEADER_LIMIT = 256 * 1024

#: How much of the message the ``body`` test looks at, unless configured.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; a value that does not decode is returned as it is."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


def split_fields(raw: bytes) -> list[tuple[str, str]]:
    """Header fields of ``raw`` (a header section) as ``(name, value)``: unfolded, value
    stripped of the leading and trailing white space, UTF-8 (invalid bytes replaced)."""
    out: list[tuple[str, str]] = []
    name = None
    value: list[bytes] = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            out.append((name, _join(value)))
            name = None
        if not line:
            if out or value:
                break
            continue
        head, colon, rest = line.partition(b":")
        if not colon or not head or head != head.rstrip() or b" " in head:
            continue
        name = head.decode("ascii", "replace")
        value = [rest]
    if name is not None:
        out.append((name, _join(value)))
    return out


def _join(parts: list[bytes]) -> str:
    # Unfolding removes the CRLF only (RFC 5322 2.2.3); the leading space of the value goes.
    return b"".join(parts).decode("utf-8", "replace").strip(" \t")


class SieveMessage:
    """A message file, read lazily."""

    def __init__(self, path: str, size: int | None = None, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
        self.path = path
        self.size = os.path.getsize(path) if size is None else size
        self.max_body_bytes = max_body_bytes
        self._fields: list[tuple[str, str]] | None = None
        self._header_end = 0
        self._parsed = None

    @classmethod
    def from_bytes(cls, data: bytes, directory: str) -> SieveMessage:
        """For tests and tools: write ``data`` to a file under ``directory``."""
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".eml", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return cls(path)

    def _read_header(self):
        with open(self.path, "rb") as f:
            head = f.read(HEADER_LIMIT)
        if head.startswith(b"\r\n") or head.startswith(b"\n"):
            end = 2 if head.startswith(b"\r\n") else 1
        else:
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                end += 4
            else:
                end = head.find(b"\n\n")
                end = end + 2 if end >= 0 else len(head)
        self._header_end = end
        self._fields = split_fields(head[:end])

    @property
    def fields(self) -> list[tuple[str, str]]:
        if self._fields is None:
            self._read_header()
        return self._fields

    def raw_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for field, value in self.fields if field.lower() == name]

    def header_values(self, name: str) -> list[str]:
        """The values of every ``name`` field, unfolded, encoded words decoded."""
        return [decode_words(v) for v in self.raw_values(name)]

    def addresses(self, name: str) -> list[str]:
        """Every address in every ``name`` field (groups included), as ``local@domain``;
        ``<>`` is the empty string."""
        out = []
        for value in self.raw_values(name):
            for _display, address in email.utils.getaddresses([value]):
                if address or "<>" in value:
                    out.append(address)
        return out

    # -- body ------------------------------------------------------------------------------

    def _message(self):
        if self._parsed is None:
            with open(self.path, "rb") as f:
                data = f.read(self.max_body_bytes)
            self._parsed = email.message_from_bytes(data, policy=email.policy.compat32)
            self._raw = data
        return self._parsed

    def body_raw(self) -> list[str]:
        """``:raw``: the body as it is, undecoded (at most ``max_body_bytes`` of the message)."""
        self._message()
        if self._fields is None:
            self._read_header()
        return [self._raw[self._header_end :].decode("utf-8", "replace")]

    def body_parts(self, types: list[str] | None) -> list[str]:
        """``:content types`` (``types``) or ``:text`` (``types`` None: text parts): each
        matching leaf part, transfer-decoded and converted from its charset."""
        out = []
        for part in self._message().walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type().lower()
            main = ctype.split("/", 1)[0]
            if types is None:
                if main != "text":
                    continue
            elif not any(t == "" or t.lower() in (ctype, main) for t in types):
                continue
            try:
                payload = part.get_payload(decode=True) or b""
            except Exception:
                payload = b""
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, "replace")
            except LookupError:
                text = payload.decode("utf-8", "replace")
            out.append(text)
        return out
