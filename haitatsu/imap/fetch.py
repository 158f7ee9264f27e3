"""FETCH items: parsing the request and cutting sections out of a stored message.

twisted.mail's FETCH asks a synchronous ``IMessage`` per message and computes ENVELOPE and
BODYSTRUCTURE itself. Ours sends the strings computed once at delivery (``MessageInfo``) and cuts
body sections by the byte offsets recorded then, so a section is a byte range of the message: the
server streams it (``IMailStore.open_message``/``read_message``) without reading the message
into memory.
"""

from __future__ import annotations

import re

import attrs

from haitatsu.imap.wire import Atom, IMAPSyntaxError
from haitatsu.mime.stored_fields import covered
from haitatsu.mime.stored_fields import header_fields as header_fields  # the blob path's cutter

#: Items answered from the mailbox_message row alone.
ROW_ITEMS = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
#: Items answered from the stored MessageInfo strings.
INFO_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})

#: The stored message fields each metadata item is answered from (``message_summaries``).
_ITEM_FIELDS = {
    "ENVELOPE": ("envelope",),
    "BODY": ("body", "header_size"),
    "BODYSTRUCTURE": ("bodystructure", "header_size"),
}


def summary_fields(items) -> tuple[str, ...]:
    """The message fields a FETCH of row and metadata items (and ``stored_section`` items)
    needs."""
    fields: dict[str, None] = {}
    for item in items:
        if isinstance(item, Section):
            fields.setdefault("header_fields", None)
            continue
        for field in _ITEM_FIELDS.get(item, ()):
            fields.setdefault(field, None)
    return tuple(fields)


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


@attrs.frozen
class Section:
    """A ``BODY[...]``-like item: which part, which piece of it, which byte window."""

    label: bytes  # the item name as it appears in the response, without the partial origin
    peek: bool
    part: tuple[int, ...] = ()
    kind: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[bytes, ...] = ()
    partial: tuple[int, int] | None = None


@attrs.frozen
class BinarySection:
    """A ``BINARY[...]`` or ``BINARY.SIZE[...]`` item (RFC 3516): a part, transfer-decoded."""

    label: bytes  # ``BINARY[1.2]`` or ``BINARY.SIZE[1.2]``, without the partial origin
    peek: bool
    part: tuple[int, ...] = ()
    size_only: bool = False
    partial: tuple[int, int] | None = None


_BINARY = re.compile(
    rb"^BINARY(\.PEEK|\.SIZE)?\[((?:[1-9][0-9]*)(?:\.[1-9][0-9]*)*)?\](?:<(\d+)\.(\d+)>)?$", re.I
)

_BODY = re.compile(rb"^BODY(\.PEEK)?\[(.*)\](?:<(\d+)\.(\d+)>)?$", re.S | re.I)
_SECTION_TEXT = re.compile(
    rb"^(?:(\d+(?:\.\d+)*)(?:\.|$))?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?(.*)$",
    re.S | re.I,
)


def parse_fetch_items(tokens: list) -> list:
    """Parse the FETCH item list (after the sequence set) into names and ``Section`` values.

    A name is a str (``"FLAGS"``, ``"ENVELOPE"``, ...); sections are ``Section``.
    """
    if len(tokens) != 1:
        raise IMAPSyntaxError("expected one fetch item or a parenthesised list")
    spec = tokens[0]
    if isinstance(spec, Atom) and spec.upper().decode("ascii", "replace") in _MACROS:
        return list(_MACROS[spec.upper().decode()])
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise IMAPSyntaxError("empty fetch item list")
    return [_item(token) for token in items]


def _item(token):
    if not isinstance(token, Atom):
        raise IMAPSyntaxError("invalid fetch item")
    upper = token.upper()
    name = upper.decode("ascii", "replace")
    if name in ROW_ITEMS or name in INFO_ITEMS:
        return name
    if name == "RFC822":
        return Section(label=b"RFC822", peek=False)
    if name == "RFC822.HEADER":
        return Section(label=b"RFC822.HEADER", peek=True, kind="HEADER")
    if name == "RFC822.TEXT":
        return Section(label=b"RFC822.TEXT", peek=False, kind="TEXT")
    if upper.startswith(b"BINARY"):
        return _binary_item(token)
    m = _BODY.match(token)
    if not m:
        raise IMAPSyntaxError("unknown fetch item %s" % name[:40])
    peek = m.group(1) is not None
    spec = m.group(2)
    partial = None
    if m.group(3) is not None:
        count = int(m.group(4))
        if count == 0:
            raise IMAPSyntaxError("partial length must be positive")
        partial = (int(m.group(3)), count)
    s = _SECTION_TEXT.match(spec)
    part_text, kind, tail = s.group(1), (s.group(2) or b"").upper().decode(), s.group(3)
    part = tuple(int(p) for p in part_text.split(b".")) if part_text else ()
    if any(p == 0 for p in part):
        raise IMAPSyntaxError("section part numbers start at 1")
    if part_text and not kind and spec != part_text:
        raise IMAPSyntaxError("invalid section")
    if kind == "MIME" and not part:
        raise IMAPSyntaxError("MIME needs a part number")
    fields: tuple[bytes, ...] = ()
    if kind.startswith("HEADER.FIELDS"):
        fm = re.fullmatch(rb"\s*\(([^()]*)\)\s*", tail)
        if not fm:
            raise IMAPSyntaxError("header list expected")
        fields = tuple(_field_names(fm.group(1)))
        if not fields:
            raise IMAPSyntaxError("empty header list")
        tail = b""
    if tail.strip():
        raise IMAPSyntaxError("invalid section")
    label = b"BODY[" + _section_label(part, kind, fields) + b"]"
    return Section(label=label, peek=peek, part=part, kind=kind, fields=fields, partial=partial)


def _binary_item(token) -> BinarySection:
    m = _BINARY.match(token)
    if not m:
        raise IMAPSyntaxError("invalid BINARY item (a section is part numbers only)")
    modifier = (m.group(1) or b"").upper()
    part = tuple(int(p) for p in m.group(2).split(b".")) if m.group(2) else ()
    partial = None
    if m.group(3) is not None:
        if modifier == b".SIZE":
            raise IMAPSyntaxError("BINARY.SIZE takes no partial")
        count = int(m.group(4))
        if count == 0:
            raise IMAPSyntaxError("partial length must be positive")
        partial = (int(m.group(3)), count)
    text = b".".join(b"%d" % p for p in part)
    size_only = modifier == b".SIZE"
    label = (b"BINARY.SIZE[" if size_only else b"BINARY[") + text + b"]"
    return BinarySection(
        label=label,
        peek=modifier == b".PEEK",
        part=part,
        size_only=size_only,
        partial=partial,
    )


def _field_names(text: bytes) -> list[bytes]:
    names = []
    for raw in re.findall(rb'"(?:[^"\\]|\\.)*"|[^\s"]+', text):
        name = raw[1:-1] if raw.startswith(b'"') else raw
        if not re.fullmatch(rb"[!-9;-~]+", name):
            raise IMAPSyntaxError("invalid header field name")
        names.append(name.upper())
    return names


def _section_label(part, kind, fields) -> bytes:
    text = b".".join(b"%d" % p for p in part)
    if kind:
        text = (text + b"." if text else b"") + kind.encode()
    if fields:
        text += b" (" + b" ".join(fields) + b")"
    return text


def sets_seen(item) -> bool:
    if isinstance(item, BinarySection):
        return not item.peek and not item.size_only
    return isinstance(item, Section) and not item.peek


def stored_section(item) -> bool:
    """True if ``item`` is answered from the header lines stored at delivery
    (``haitatsu.mime.stored_fields``): ``BODY[HEADER.FIELDS (...)]`` of the message (not of a
    part) naming only stored fields. ``HEADER.FIELDS.NOT`` is not: its answer holds the fields
    that are not stored."""
    return (
        isinstance(item, Section)
        and item.kind == "HEADER.FIELDS"
        and not item.part
        and covered(item.fields)
    )


def summary_items(items) -> bool:
    """True if FETCH ``items`` are all answered from metadata rows (``message_summaries``)."""
    return all(isinstance(i, str) or stored_section(i) for i in items)


# -- cutting sections out of a message ---------------------------------------------------


def find_header_end(data: bytes) -> int | None:
    """Offset just past the blank line ending a header block in ``data``, or None."""
    candidates = [i + 4 for i in [data.find(b"\r\n\r\n")] if i >= 0]
    candidates += [i + 2 for i in [data.find(b"\n\n")] if i >= 0]
    if data.startswith(b"\r\n"):
        candidates.append(2)
    elif data.startswith(b"\n"):
        candidates.append(1)
    return min(candidates) if candidates else None


def window(length: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    """``(offset, count)`` of the bytes a partial fetch returns from data of ``length``."""
    if partial is None:
        return 0, length
    origin, count = partial
    start = min(origin, length)
    return start, min(count, length - start)
