"""Outgoing messages as files: addresses, the REST API's structured body, and the finishing
step every submitted message goes through (API.md 1.8 steps 5 and 6).

``finish`` reads the client's message from one file and writes the message we send to another,
a line at a time: line endings become CRLF (what SMTP carries, and what the signature must be
computed over), ``Bcc`` goes, ``From``/``Date``/``Message-ID`` are added when missing, our
trace headers are set, and a ``DKIM-Signature`` goes on top. The signature needs the body hash
before the first byte is written, so the body is read twice (hashing, then copying); neither pass
holds more than a line. Everything here blocks: the pipeline runs it in a thread.
"""

from __future__ import annotations

import datetime
import email.header
import email.utils
import functools
import re
from email.policy import default as _default_policy

import attrs

from haitatsu import dkim

#: Header fields a client may not set itself: removed, then set by us (``Bcc`` only removed).
_REMOVED = {b"bcc", b"x-haitatsu-trace-id", b"x-haitatsu-node"}

_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_address(text) -> str | None:
    """The bare address (``local@domain``) of one RFC 5322 address (``a@b.example`` or
    ``Alice <a@b.example>``), or None if ``text`` is not exactly one valid address."""
    if not isinstance(text, str) or not text.strip() or "\r" in text or "\n" in text:
        return None
    return _parse_address(text)


@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> str | None:
    """``parse_address`` proper; cached: the email package's parser is slow, and a
    submission session checks the same sender at MAIL FROM and again at the end of DATA."""
    try:
        header = _default_policy.header_factory("to", text)
        addresses = header.addresses
    except Exception:  # the email package raises a variety of errors on odd input
        return None
    if header.defects or len(addresses) != 1:
        return None
    (address,) = addresses
    if not address.username or not address.domain or not address.addr_spec.isascii():
        return None
    return address.addr_spec


def header_addresses(values) -> list[str]:
    """Bare addresses from header values (a raw message's To, Cc and Bcc); what does not parse
    is left out."""
    out = []
    for _, addr in email.utils.getaddresses([str(v) for v in values]):
        if addr and parse_address(addr) is not None:
            out.append(addr)
    return out


def _header_value(value: str) -> str:
    """API.md 1.8: CR or LF inside a header value becomes a space."""
    return value.replace("\r", " ").replace("\n", " ")


def _subject(value: str) -> str:
    # Raw UTF-8 in a header needs SMTPUTF8 all along the way; RFC 2047 does not.
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode()


def _text_part_headers(text: str, subtype: str) -> str:
    headers = f"Content-Type: text/{subtype}; charset=utf-8\r\n"
    if not text.isascii():
        headers += "Content-Transfer-Encoding: 8bit\r\n"
    return headers


def _crlf(text: str) -> str:
    return re.sub(r"\r?\n", "\r\n", text)


def build_structured(
    from_: str, to: list[str], cc: list[str], subject: str, text: str, html: str
) -> bytes:
    """The message for a structured send (API.md 1.8): From, To, Cc (only when non-empty) and
    Subject in that order, then the body: ``multipart/alternative`` with boundary
    ``haitatsu-alt`` when there is HTML, else one ``text/plain`` part. Bcc is never written."""
    lines = [f"From: {_header_value(from_)}\r\n", f"To: {_header_value(', '.join(to))}\r\n"]
    if cc:
        lines.append(f"Cc: {_header_value(', '.join(cc))}\r\n")
    lines.append(f"Subject: {_subject(_header_value(subject))}\r\n")
    lines.append("MIME-Version: 1.0\r\n")
    if html:
        lines.append('Content-Type: multipart/alternative; boundary="haitatsu-alt"\r\n')
        lines.append("\r\n")
        for subtype, body in (("plain", text), ("html", html)):
            lines.append("--haitatsu-alt\r\n")
            lines.append(_text_part_headers(body, subtype))
            lines.append("\r\n")
            lines.append(_crlf(body) + "\r\n")
        lines.append("--haitatsu-alt--\r\n")
    else:
        lines.append(_text_part_headers(text, "plain"))
        lines.append("\r\n")
        lines.append(_crlf(text) + ("\r\n" if text and not text.endswith("\n") else ""))
    return "".join(lines).encode("utf-8")


def rfc1123z(when: float) -> str:
    """``Mon, 02 Jan 2006 15:04:05 +0000``: Go's RFC1123Z in UTC, as the original writes Date."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(when, datetime.UTC))


@attrs.frozen
class Finished:
    size: int
    message_id: str


def _lines(f):
    """The file's lines, each ending in CRLF (a bare LF becomes CRLF; a last line without one
    gets one)."""
    for line in f:
        if line.endswith(b"\r\n"):
            yield line
        elif line.endswith(b"\n"):
            yield line[:-1] + b"\r\n"
        else:
            yield line + b"\r\n"


def _read_header(f) -> tuple[list[list[bytes]], bytes | None]:
    """Header fields as ``[lowercased name, raw field bytes]`` and the first body line (None
    when the header section ended at its blank line or at the end of the file). A line that is
    neither a field nor a continuation ends the header section and starts the body."""
    fields: list[list[bytes]] = []
    for line in _lines(f):
        if line == b"\r\n":
            return fields, None
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1] += line
            continue
        m = _FIELD.match(line)
        if m is None:
            return fields, line
        fields.append([line[: line.index(b":")].rstrip(b" \t").lower(), line])
    return fields, None


def finish(
    in_path: str,
    out_path: str,
    *,
    mail_from: str,
    message_id: str,
    trace_id: str,
    node: str,
    when: float,
    key: dkim.SigningKey | None,
) -> Finished:
    """Write the message to send (see the module docstring) from ``in_path`` to ``out_path``.

    ``message_id`` (``<ULID@public_hostname>``) is used only when the message has none; the
    returned ``Finished.message_id`` is the one the message carries. ``key`` None: unsigned.
    """
    node = _CONTROL.sub("", node)
    with open(in_path, "rb") as f:
        fields, first_body_line = _read_header(f)
        body_start = f.tell() if first_body_line is None else None
        kept = [field for field in fields if field[0] not in _REMOVED]
        names = {name for name, _ in kept}
        added = []
        if b"from" not in names:
            added.append(f"From: {mail_from}\r\n")
        if b"date" not in names:
            added.append(f"Date: {rfc1123z(when)}\r\n")
        if b"message-id" not in names:
            added.append(f"Message-ID: {message_id}\r\n")
        else:
            raw = next(value for name, value in kept if name == b"message-id")
            message_id = raw.split(b":", 1)[1].strip().decode("ascii", "replace")
        added.append(f"X-Haitatsu-Trace-ID: {trace_id}\r\n")
        added.append(f"X-Haitatsu-Node: {node}\r\n")
        header = b"".join(value for _, value in kept) + "".join(added).encode("utf-8")

        body_hash = dkim.RelaxedBodyHash()
        if first_body_line is not None:
            body_hash.update_line(first_body_line)
        for line in _lines(f):
            body_hash.update_line(line)
        signature = b""
        if key is not None:
            signature = dkim.signature(header, body_hash.digest(), key, int(when))

        size = 0
        with open(out_path, "wb") as out:
            for chunk in (signature, header, b"\r\n"):
                out.write(chunk)
                size += len(chunk)
            if body_start is not None:
                f.seek(body_start)
            else:
                # Re-read up to the line that started the body, then copy from it on.
                f.seek(0)
                _read_header(f)
                out.write(first_body_line)
                size += len(first_body_line)
            for line in _lines(f):
                out.write(line)
                size += len(line)
    return Finished(size=size, message_id=message_id)
