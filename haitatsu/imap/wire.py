"""IMAP wire syntax: command arguments, sequence sets, dates and quoting.

twisted.mail parses each command argument with a separate ``arg_*`` function and reads literals
one argument at a time, in memory. We frame a whole command first (lines plus literals, a large
APPEND literal spooled to a file by the server) and then tokenize it here into a small tree, so a
literal may appear anywhere an RFC 3501 string may, and new commands only add a handler.
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import re

import attrs
import twisted.mail.imap4  # noqa: F401  (registers the imap4-utf-7 codec)


class IMAPSyntaxError(Exception):
    """The command does not parse; the server answers ``BAD`` and keeps the session."""


class Atom(bytes):
    """An unquoted token (``NIL``, ``\\Seen``, ``1:*``, ``BODY[HEADER]<0.10>``)."""


class String(bytes):
    """A quoted string or a literal held in memory."""


@attrs.define
class SpooledLiteral:
    """A literal written to a file instead of memory (APPEND bodies)."""

    path: str
    size: int


#: One framed command: line segments (bytes, ``{n}`` markers removed) and literals in between.
Chunks = list


def is_string(token) -> bool:
    return isinstance(token, (Atom, String))


class _Reader:
    def __init__(self, chunks: Chunks):
        self.chunks = chunks
        self.index = 0
        self.pos = 0

    def _line(self) -> bytes | None:
        if self.index < len(self.chunks) and isinstance(self.chunks[self.index], bytes):
            return self.chunks[self.index]
        return None

    def peek(self):
        """The next byte (as a 1-byte bytes), a literal object, or None at the end."""
        while self.index < len(self.chunks):
            item = self.chunks[self.index]
            if isinstance(item, (bytes, bytearray)) and not isinstance(item, String):
                if self.pos < len(item):
                    return item[self.pos : self.pos + 1]
                self.index += 1
                self.pos = 0
                continue
            return item
        return None

    def take_literal(self):
        item = self.chunks[self.index]
        self.index += 1
        self.pos = 0
        return item

    def advance(self, n=1):
        self.pos += n

    def rest_of_segment(self) -> bytes:
        line = self._line()
        return line[self.pos :] if line is not None else b""


_ATOM_END = b' ()"'


def tokenize(chunks: Chunks) -> list:
    """Turn a framed command (after tag and name) into nested lists of tokens.

    Atoms keep ``[...]`` sections whole (with spaces and parentheses inside) and a following
    ``<n.m>`` partial, so ``BODY.PEEK[HEADER.FIELDS (From To)]<0.100>`` is one ``Atom``.
    """
    reader = _Reader(chunks)
    stack: list[list] = [[]]
    while True:
        c = reader.peek()
        if c is None:
            break
        if not isinstance(c, bytes) or isinstance(c, String):
            stack[-1].append(reader.take_literal())
            continue
        if c == b" ":
            reader.advance()
        elif c == b"(":
            reader.advance()
            stack.append([])
        elif c == b")":
            reader.advance()
            if len(stack) == 1:
                raise IMAPSyntaxError("unbalanced parenthesis")
            inner = stack.pop()
            stack[-1].append(inner)
        elif c == b'"':
            stack[-1].append(_quoted(reader))
        elif c in (b"\r", b"\n", b"\x00"):
            raise IMAPSyntaxError("control character in command")
        else:
            stack[-1].append(_atom(reader))
    if len(stack) != 1:
        raise IMAPSyntaxError("unbalanced parenthesis")
    return stack[0]


def _quoted(reader: _Reader) -> String:
    text = reader.rest_of_segment()
    out = bytearray()
    i = 1
    while i < len(text):
        c = text[i]
        if c == 0x5C:  # backslash
            if i + 1 >= len(text) or text[i + 1] not in b'"\\':
                raise IMAPSyntaxError("bad escape in quoted string")
            out.append(text[i + 1])
            i += 2
        elif c == 0x22:
            reader.advance(i + 1)
            return String(bytes(out))
        else:
            out.append(c)
            i += 1
    raise IMAPSyntaxError("unterminated quoted string")


def _atom(reader: _Reader) -> Atom:
    text = reader.rest_of_segment()
    i = 0
    depth = 0
    in_quote = False
    while i < len(text):
        c = text[i : i + 1]
        if depth:
            if in_quote:
                if c == b"\\":
                    i += 1
                elif c == b'"':
                    in_quote = False
            elif c == b'"':
                in_quote = True
            elif c == b"[":
                depth += 1
            elif c == b"]":
                depth -= 1
        elif c == b"[":
            depth = 1
        elif c in _ATOM_END or c == b"]":
            break
        elif c == b"{":
            raise IMAPSyntaxError("literal not at the end of a line")
        i += 1
    if depth:
        raise IMAPSyntaxError("unbalanced brackets")
    if i == 0:
        raise IMAPSyntaxError("unexpected character %r" % text[:1])
    reader.advance(i)
    return Atom(text[:i])


_LITERAL_MARKER = re.compile(rb"\{(\d{1,20})(\+?)\}$")


def literal_marker(line: bytes):
    """``(size, synchronizing)`` when ``line`` ends with a literal marker, else None."""
    m = _LITERAL_MARKER.search(line)
    if m is None:
        return None
    return int(m.group(1)), m.group(2) != b"+", m.start()


_TAG = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~\[\]\x80-\xff]+")


def split_command(first: bytes):
    """``(tag, name, rest)`` from the first line segment of a command.

    Raises IMAPSyntaxError with the tag (or None) when the line has no command.
    """
    parts = first.split(b" ", 2)
    tag = parts[0]
    if not tag or not _TAG.fullmatch(tag) or tag.startswith(b"+"):
        raise IMAPSyntaxError("invalid tag")
    if len(parts) < 2 or not parts[1]:
        raise IMAPSyntaxError("missing command")
    return tag, parts[1].upper(), parts[2] if len(parts) == 3 else b""


# -- sequence sets ---------------------------------------------------------------------


def parse_sequence_set(text: bytes) -> list[tuple[int | None, int | None]]:
    """Parse ``1:3,5,7:*`` into ranges; ``None`` stands for ``*``. Raises IMAPSyntaxError."""
    if not text:
        raise IMAPSyntaxError("empty sequence set")
    ranges = []
    for part in text.split(b","):
        bounds = part.split(b":")
        if len(bounds) > 2:
            raise IMAPSyntaxError("invalid sequence set %r" % part.decode("ascii", "replace"))
        values = []
        for b in bounds:
            if b == b"*":
                values.append(None)
            elif b.isdigit() and b[:1] != b"0" and int(b) <= 0xFFFFFFFF:
                values.append(int(b))
            else:
                raise IMAPSyntaxError("invalid sequence set %r" % part.decode("ascii", "replace"))
        ranges.append((values[0], values[-1]))
    return ranges


def format_uid_set(uids) -> bytes:
    """``1:3,7`` for 1, 2, 3, 7, keeping the given order (COPYUID pairs its two sets by
    position, so runs are only joined where they ascend by one)."""
    parts = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = uid
    if start is not None:
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(parts)


def is_sequence_set(token) -> bool:
    return isinstance(token, Atom) and re.fullmatch(rb"[0-9*:,]+", token) is not None


def resolve_sequence_set(ranges, uids: list[int], by_uid: bool) -> list[int]:
    """Indexes into the sorted ``uids`` that the ranges name, ascending and unique.

    Work is proportional to the messages that exist, never to the numbers in the set, so
    ``1:4294967295`` costs the same as ``1:*``.
    """
    count = len(uids)
    if not count:
        return []
    star = uids[-1] if by_uid else count
    spans = []
    for low, high in ranges:
        low = star if low is None else low
        high = star if high is None else high
        if low > high:
            low, high = high, low
        if by_uid:
            start = bisect.bisect_left(uids, low)
            stop = bisect.bisect_right(uids, high)
        else:
            start = max(low, 1) - 1
            stop = min(high, count)
        if start < stop:
            spans.append((start, stop))
    spans.sort()
    result: list[int] = []
    last = 0
    for start, stop in spans:
        start = max(start, last)
        if start < stop:
            result.extend(range(start, stop))
            last = stop
    return result


# -- dates -----------------------------------------------------------------------------

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}

_DATE_TIME = re.compile(
    rb"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)
_DATE = re.compile(rb"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")


def parse_date_time(text: bytes) -> int:
    """Parse an IMAP ``date-time`` (APPEND) into nanoseconds since the epoch."""
    m = _DATE_TIME.match(text)
    month = _MONTH_NUMBER.get(m.group(2).decode().lower()) if m else None
    if not m or month is None:
        raise IMAPSyntaxError("invalid date-time")
    day, year, hh, mm, ss = (int(m.group(i)) for i in (1, 3, 4, 5, 6))
    try:
        seconds = calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0))
        datetime.date(year, month, day)
    except ValueError:
        raise IMAPSyntaxError("invalid date-time") from None
    offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    seconds -= offset if m.group(7) == b"+" else -offset
    return seconds * 1_000_000_000


def parse_date(text: bytes) -> datetime.date:
    """Parse a SEARCH ``date`` (``1-Feb-1994``)."""
    m = _DATE.match(text)
    month = _MONTH_NUMBER.get(m.group(2).decode().lower()) if m else None
    if not m or month is None:
        raise IMAPSyntaxError("invalid date")
    try:
        return datetime.date(int(m.group(3)), month, int(m.group(1)))
    except ValueError:
        raise IMAPSyntaxError("invalid date") from None


def format_internal_date(ns: int) -> bytes:
    """``"17-Jul-1996 02:44:25 +0000"`` in UTC, built without locale-dependent strftime."""
    t = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.UTC)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.day,
        MONTHS[t.month - 1].encode(),
        t.year,
        t.hour,
        t.minute,
        t.second,
    )


def utc_date(ns: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.UTC).date()


# -- output ----------------------------------------------------------------------------


def quote(value: bytes) -> bytes:
    """A quoted string, or a literal when the value cannot be quoted (CR, LF, NUL)."""
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        return b"{%d}\r\n%b" % (len(value), value)
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_mailbox(name: str) -> bytes:
    return quote(name.encode("imap4-utf-7"))


class InvalidMailboxName(ValueError):
    """A mailbox name a client wants to create that is not canonical modified UTF-7."""


def decode_new_mailbox(value: bytes) -> str:
    """A name for CREATE or RENAME: canonical modified UTF-7 (RFC 3501 5.1.3), or raw UTF-8.

    twisted's codec accepts sloppy input (``&AGE-`` for ``a``, a lone ``&``); a folder created
    from it would come back under another spelling, so such names are refused instead.
    """
    value = bytes(value)
    if max(value, default=0) >= 0x80:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMailboxName("mailbox name is neither modified UTF-7 nor UTF-8") from None
    try:
        name = value.decode("imap4-utf-7")
    except Exception:
        raise InvalidMailboxName("invalid modified UTF-7 in mailbox name") from None
    if name.encode("imap4-utf-7") != value:
        raise InvalidMailboxName("mailbox name is not canonical modified UTF-7")
    return name


def decode_mailbox(value: bytes) -> str:
    """A client's mailbox name: modified UTF-7, or raw UTF-8 from clients that send it."""
    try:
        return bytes(value).decode("imap4-utf-7")
    except Exception:
        return bytes(value).decode("utf-8", "replace")
