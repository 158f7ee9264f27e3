"""The streaming MIME structure parser.

The message is read once, line by line, in chunks; what is kept is the header block of the entity
being read (at most ``HEADER_CAP`` bytes), the tree of entities with their offsets and a few header
values each, and the first bytes of the first text and HTML parts. Bodies are never held, so a
50 MB attachment costs no more memory than a 5 kB one.

Offsets and line counts are computed from the positions of line ends as they stream by, which is
what keeps them exact on any input: CRLF or bare LF line ends, missing final boundaries, headers
without a blank line after them, 8-bit bytes anywhere.
"""

from __future__ import annotations

import binascii

import attrs

from haitatsu.mime import _wire, stored_fields
from haitatsu.mime._headers import (
    all_values,
    bare_addresses,
    cap_utf8,
    decode_text,
    decoded_value,
    first,
    param,
    param_2231,
    parse_date_ns,
    parse_structured,
    raw_text,
    split_fields,
)

#: Largest header block held for one entity; lines beyond it start the body.
HEADER_CAP = 1024 * 1024
#: Chunk size for reading files.
CHUNK_SIZE = 64 * 1024
#: A line longer than this is handled in pieces, so one huge line does not grow the buffer.
_SEGMENT = 64 * 1024
#: Entities below this depth are not descended into (multiparts and messages become leaves).
MAX_DEPTH = 40
#: Body parts beyond this count (over the whole message) are skipped like a preamble.
MAX_PARTS = 5000
#: Caps on what the stored message row carries (API.md 1.7).
HEADER_VALUE_CAP = 8 * 1024
HEADER_ENTRIES_CAP = 500
EXTRACT_CAP = 8 * 1024
#: Transfer-decoded bytes kept to make an extract: enough for EXTRACT_CAP bytes of text in any
#: charset, even UTF-16 or a multibyte character cut at the end.
_EXTRACT_KEEP = 4 * EXTRACT_CAP
#: Cap on each header-derived value kept for encapsulated messages and body parts, whose number
#: only the message size bounds.
FIELD_CAP = 16 * 1024

_IDENTITY_ENCODINGS = frozenset(("", "7bit", "8bit", "binary"))
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64_ALPHABET)

# Phases of an entity while it is being read.
_HEADER = 0
_BODY = 1
_PREAMBLE = 2
_IN_CHILD = 3
_EPILOGUE = 4
_SKIP = 5
_ENCAPSULATED = 6
_CLOSED = 7

# Kinds of entity once its header is read.
LEAF = "leaf"
MULTIPART = "multipart"
MESSAGE = "message"


@attrs.frozen
class ParsedMessage:
    """Everything IMAP FETCH and the REST API need from a message, computed once at delivery.

    ``parts`` maps IMAP part specifiers to byte offsets into the raw message:
    ``raw[header_start:body_start]`` is ``BODY[n.MIME]`` and ``raw[body_start:end]`` is
    ``BODY[n]``. Entries of message/rfc822 parts also carry ``text_start``, where the
    encapsulated message's body starts: ``raw[body_start:text_start]`` is ``BODY[n.HEADER]`` and
    ``raw[text_start:end]`` is ``BODY[n.TEXT]``. Entries of non-multipart parts carry ``type``
    (lowercase ``type/subtype`` as declared) and ``encoding`` (lowercase Content-Transfer-Encoding,
    ``""`` when absent); those counted for attachments also carry ``leaf_index``, the
    ``attachments[].part_index`` that names them in the REST API.
    """

    size: int
    header_size: int
    headers: dict
    rfc_message_id: str
    subject: str
    date: int | None
    from_addresses: list
    to_addresses: list
    cc_addresses: list
    bcc_addresses: list
    envelope: str
    body: str
    bodystructure: str
    parts: dict
    text_body_extract: str
    html_body_extract: str
    attachments: list
    #: The raw lines of the top-level header's ``stored_fields.STORED_FIELDS``, or None
    #: (FETCH of them then reads the blob).
    header_fields: bytes | None = None


@attrs.frozen
class _Content:
    """The MIME header fields of one entity that BODYSTRUCTURE and the extracts need."""

    type: str
    subtype: str
    params: list
    encoding: str
    id: str | None
    description: str | None
    md5: str | None
    disposition: str
    disposition_params: list
    languages: list
    location: str | None
    filename: str | None


def _content(fields: list[tuple[str, bytes]], digest_child: bool, cap: int | None) -> _Content:
    def text(name: str) -> str | None:
        value = first(fields, name)
        if value is None:
            return None
        result = raw_text(value)
        return result[:cap] if cap is not None else result

    def capped(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if cap is None:
            return params
        return [(name[:cap], value[:cap]) for name, value in params[:64]]

    content_type = text("Content-Type")
    type_ = subtype = ""
    params: list[tuple[str, str]] = []
    if content_type is not None:
        value, params = parse_structured(content_type)
        type_, _slash, subtype = value.partition("/")
        type_ = type_.strip(" \t").lower()
        subtype = subtype.strip(" \t").lower()
    if not type_ or not subtype or " " in type_ + subtype:
        if digest_child:
            type_, subtype, params = "message", "rfc822", []
        else:
            type_, subtype, params = "text", "plain", [("charset", "US-ASCII")]
    encoding_text = text("Content-Transfer-Encoding")
    encoding = ""
    if encoding_text:
        encoding = parse_structured(encoding_text)[0].strip(" \t").lower()
    disposition = ""
    disposition_params: list[tuple[str, str]] = []
    disposition_text = text("Content-Disposition")
    if disposition_text:
        disposition, disposition_params = parse_structured(disposition_text)
        disposition = disposition.strip(" \t").lower()
    languages: list[str] = []
    language_text = text("Content-Language")
    if language_text:
        languages = [item.strip(" \t") for item in language_text.split(",") if item.strip(" \t")]
    filename = param_2231(disposition_params, "filename") or param_2231(params, "name")
    return _Content(
        type=type_,
        subtype=subtype,
        params=capped(params),
        encoding=encoding,
        id=text("Content-ID"),
        description=text("Content-Description"),
        md5=text("Content-MD5"),
        disposition=disposition,
        disposition_params=capped(disposition_params),
        languages=languages[:64],
        location=text("Content-Location"),
        filename=filename[:cap] if filename and cap is not None else filename,
    )


class _Sink:
    """Transfer-decodes one leaf body as it streams by: the first bytes for an extract, and the
    decoded size for an attachment in base64 or quoted-printable.

    It sees exactly the body's bytes: the line end before a boundary delimiter belongs to the
    delimiter (RFC 2046), so each line's end is held back until the next line shows it was not
    followed by a delimiter.
    """

    def __init__(self, encoding: str, keep: int, count: bool) -> None:
        if encoding == "base64":
            self._mode = "base64"
        elif encoding == "quoted-printable":
            self._mode = "qp"
        else:
            self._mode = "identity"
        self._keep = keep
        self._count = count
        self._kept: list[bytes] = []
        self._kept_size = 0
        self._decoded = 0
        self._carry = b""
        self._pending = b""

    def line(self, piece: bytes, has_newline: bool) -> None:
        if has_newline:
            if piece[-1:] == b"\r":
                self._consume(self._pending + piece[:-1])
                self._pending = b"\r\n"
            else:
                self._consume(self._pending + piece)
                self._pending = b"\n"
        else:
            self._consume(self._pending + piece)
            self._pending = b""

    def lines(self, block: bytes, crlf: bool) -> None:
        """Complete lines at once (``block`` ends with a line end, CRLF when ``crlf``): what
        ``line`` does for each of them, since the sink only sees their concatenation."""
        if crlf:
            self._consume(self._pending + block[:-2])
            self._pending = b"\r\n"
        else:
            self._consume(self._pending + block[:-1])
            self._pending = b"\n"

    def _hold(self, data: bytes) -> None:
        if self._kept_size < self._keep and data:
            data = data[: self._keep - self._kept_size]
            self._kept.append(data)
            self._kept_size += len(data)

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        if self._mode == "base64":
            chars = data.translate(None, _NOT_BASE64)
            self._decoded += len(chars)
            if self._kept_size < self._keep:
                carry = self._carry + chars
                usable = len(carry) // 4 * 4
                self._hold(binascii.a2b_base64(carry[:usable]))
                self._carry = carry[usable:]
        elif self._mode == "qp":
            if not self._count and self._kept_size >= self._keep:
                return
            buffered = self._carry + data
            cut = buffered.rfind(b"\n") + 1
            if not cut and len(buffered) > _SEGMENT:
                cut = len(buffered)
            if cut:
                decoded = binascii.a2b_qp(buffered[:cut])
                self._decoded += len(decoded)
                self._hold(decoded)
            self._carry = buffered[cut:]
        else:
            self._hold(data)

    def finish(self, at_eof: bool) -> None:
        if at_eof:
            self._consume(self._pending)
        self._pending = b""
        carry, self._carry = self._carry, b""
        if self._mode == "base64":
            if len(carry) % 4 >= 2:
                carry += b"=" * (4 - len(carry) % 4)
                try:
                    self._hold(binascii.a2b_base64(carry))
                except binascii.Error:
                    pass
        elif self._mode == "qp" and carry:
            decoded = binascii.a2b_qp(carry)
            self._decoded += len(decoded)
            self._hold(decoded)

    def decoded_size(self) -> int | None:
        if self._mode == "base64":
            return self._decoded * 3 // 4
        if self._mode == "qp":
            return self._decoded
        return None

    def text(self, charset: str | None) -> str:
        data = b"".join(self._kept)
        return cap_utf8(decode_text(data, charset), EXTRACT_CAP)


@attrs.define(eq=False)
class _Entity:
    """A message or body part: where its header and body are, what it is, what it contains."""

    header_start: int
    newlines_at_header: int
    depth: int
    #: Inside an encapsulated message: no extracts, attachments or leaf index come from here.
    nested: bool
    #: A message (the top level or an encapsulated one) rather than a body part: has an ENVELOPE.
    message_root: bool
    digest_child: bool = False
    phase: int = _HEADER
    kind: str = LEAF
    block: list | None = attrs.Factory(list)
    block_size: int = 0
    body_start: int = -1
    newlines_at_body: int = 0
    end: int = -1
    newlines_at_end: int = 0
    content: _Content | None = None
    envelope: str = ""
    delimiter: bytes = b""
    children: list = attrs.Factory(list)
    inner: _Entity | None = None
    sink: _Sink | None = None
    leaf_index: int = 0

    @property
    def lines(self) -> int:
        return self.newlines_at_end - self.newlines_at_body

    @property
    def size(self) -> int:
        return self.end - self.body_start


class MessageParser:
    """Feed a message's bytes in any chunks with ``feed``; ``close`` returns the ParsedMessage.

    Usable while the message is being received, or over a stored file (``parse_file``).
    """

    def __init__(self) -> None:
        self._tail = b""
        self._offset = 0
        self._newlines = 0
        self._previous_eol = 0
        self._continuation = False
        self._root = _Entity(
            header_start=0, newlines_at_header=0, depth=0, nested=False, message_root=True
        )
        self._root_fields: list[tuple[str, bytes]] = []
        self._root_stored: bytes | None = None
        self._stack: list[_Entity] = [self._root]
        self._active: list[tuple[bytes, _Entity]] = []
        self._part_count = 0
        self._leaf_count = 0
        self._text: _Entity | None = None
        self._html: _Entity | None = None
        self._attachments: list[_Entity] = []
        self._result: ParsedMessage | None = None

    #: Take runs of body lines at once (``_bulk``); False reads every line on its own, which
    #: the tests compare against.
    _BULK = True

    def feed(self, data: bytes) -> None:
        if self._result is not None:
            raise ValueError("parser already closed")
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        line = self._line
        if not self._BULK:
            for piece in data[: cut - 1].split(b"\n") if cut else ():
                line(piece, True, False)
        else:
            position = 0
            while position < cut:
                if self._stack[-1].phase != _HEADER and not self._continuation:
                    position = self._bulk(data, position, cut)
                    if position >= cut:
                        break
                end = data.index(b"\n", position)
                line(data[position:end], True, False)
                position = end + 1
        if len(tail) > _SEGMENT:
            cut = len(tail) - 1 if tail.endswith(b"\r") else len(tail)
            line(tail[:cut], False, False)
            tail = tail[cut:]
        self._tail = tail

    def close(self) -> ParsedMessage:
        if self._result is not None:
            return self._result
        if self._tail:
            self._line(self._tail, False, True)
            self._tail = b""
        for entity in reversed(self._stack):
            self._close(entity, self._offset, self._newlines, at_eof=True)
        self._stack = []
        self._result = self._build()
        return self._result

    # Reading.

    def _line(self, piece: bytes, has_newline: bool, final: bool) -> None:
        start = self._offset
        self._dispatch(piece, has_newline, final, start)
        if has_newline:
            self._offset = start + len(piece) + 1
            self._newlines += 1
            self._previous_eol = 2 if piece[-1:] == b"\r" else 1
            self._continuation = False
        else:
            self._offset = start + len(piece)
            self._previous_eol = 0
            self._continuation = True

    def _bulk(self, data: bytes, position: int, cut: int) -> int:
        """Outside a header, only a line starting with ``--`` can change anything (it may be a
        boundary delimiter); every line before the next such line is body, preamble or
        epilogue. Take them all at once, as ``_line`` would one by one (offsets, line count,
        the line end before a delimiter, the leaf's sink), and return where the next line
        that needs looking at starts (``cut`` when none does)."""
        if self._active:
            if data.startswith(b"--", position):
                return position
            stop = data.find(b"\n--", position, cut)
            stop = cut if stop < 0 else stop + 1
        else:
            stop = cut
        if stop <= position:
            return position
        top = self._stack[-1]
        crlf = data[stop - 2 : stop] == b"\r\n" and stop - 2 >= position
        if top.phase == _BODY and top.sink is not None:
            top.sink.lines(data[position:stop], crlf)
        self._offset += stop - position
        self._newlines += data.count(b"\n", position, stop)
        self._previous_eol = 2 if crlf else 1
        return stop

    def _dispatch(self, piece: bytes, has_newline: bool, final: bool, start: int) -> None:
        continuation = self._continuation
        if (
            self._active
            and not continuation
            and (has_newline or final)
            and piece[:2] == b"--"
            and self._delimiter(piece, has_newline, start)
        ):
            return
        top = self._stack[-1]
        if top.phase == _BODY:
            if top.sink is not None:
                top.sink.line(piece, has_newline)
        elif top.phase == _HEADER:
            self._header_line(top, piece, has_newline, final, continuation, start)

    def _header_line(
        self,
        entity: _Entity,
        piece: bytes,
        has_newline: bool,
        final: bool,
        continuation: bool,
        start: int,
    ) -> None:
        if not continuation and has_newline and (not piece or piece == b"\r"):
            self._end_headers(entity, start + len(piece) + 1, self._newlines + 1, live=True)
            return
        if not continuation and entity.block_size >= HEADER_CAP:
            self._end_headers(entity, start, self._newlines, live=True)
            self._dispatch(piece, has_newline, final, start)
            return
        data = piece + b"\n" if has_newline else piece
        room = HEADER_CAP - entity.block_size
        if room > 0:
            entity.block.append(data[:room])
        entity.block_size += len(data)

    def _delimiter(self, piece: bytes, has_newline: bool, start: int) -> bool:
        content = piece[:-1] if has_newline and piece[-1:] == b"\r" else piece
        active = self._active
        for index in range(len(active) - 1, -1, -1):
            delimiter, multipart = active[index]
            if not content.startswith(delimiter):
                continue
            rest = content[len(delimiter) :]
            closing = rest[:2] == b"--"
            if closing:
                rest = rest[2:]
            if rest.strip(b" \t"):
                continue
            after = start + len(piece) + (1 if has_newline else 0)
            newlines_after = self._newlines + (1 if has_newline else 0)
            self._on_delimiter(index, multipart, closing, start, after, newlines_after)
            return True
        return False

    def _on_delimiter(
        self,
        index: int,
        multipart: _Entity,
        closing: bool,
        start: int,
        after: int,
        newlines_after: int,
    ) -> None:
        stack = self._stack
        position = len(stack) - 1
        while stack[position] is not multipart:
            position -= 1
        ending = stack[position + 1 :]
        if ending:
            # The line end before the delimiter belongs to it (RFC 2046 section 5.1.1), unless
            # that would put an entity's end before its own start.
            end = start - self._previous_eol
            newlines = self._newlines - (1 if self._previous_eol else 0)
            latest = max(
                entity.body_start if entity.body_start >= 0 else entity.header_start
                for entity in ending
            )
            if latest > end:
                end, newlines = start, self._newlines
            for entity in reversed(ending):
                self._close(entity, end, newlines, at_eof=False)
            del stack[position + 1 :]
        del self._active[index + 1 :]
        if closing:
            multipart.phase = _EPILOGUE
            del self._active[index]
        elif self._part_count >= MAX_PARTS:
            multipart.phase = _SKIP
        else:
            child = _Entity(
                header_start=after,
                newlines_at_header=newlines_after,
                depth=multipart.depth + 1,
                nested=multipart.nested,
                message_root=False,
                digest_child=multipart.content.subtype == "digest",
            )
            multipart.children.append(child)
            stack.append(child)
            multipart.phase = _IN_CHILD
            self._part_count += 1

    def _end_headers(self, entity: _Entity, body_start: int, newlines: int, live: bool) -> None:
        """The header of ``entity`` is complete: learn what it is and start its body.

        ``live`` is false when the entity is being closed at the same time (a delimiter or the
        end of the message came before its body did): nothing is pushed then.
        """
        entity.body_start = body_start
        entity.newlines_at_body = newlines
        block = b"".join(entity.block)
        fields = split_fields(block)
        entity.block = None
        cap = None if entity is self._root else FIELD_CAP
        content = _content(fields, entity.digest_child, cap)
        entity.content = content
        if entity.message_root:
            entity.envelope = _wire.envelope(fields, cap)
        if entity is self._root:
            self._root_fields = fields
            if entity.block_size == len(block):  # the whole header was kept
                self._root_stored = stored_fields.select(block)
        deep_enough = entity.depth >= MAX_DEPTH
        if content.type == "multipart" and not deep_enough:
            boundary = param_2231(content.params, "boundary", words=False)
            if boundary:
                entity.kind = MULTIPART
                entity.delimiter = b"--" + boundary.encode("utf-8", "replace")
                entity.phase = _PREAMBLE
                if live:
                    self._active.append((entity.delimiter, entity))
                return
        if (
            content.type == "message"
            and content.subtype == "rfc822"
            and content.encoding in _IDENTITY_ENCODINGS
            and not deep_enough
        ):
            entity.kind = MESSAGE
            entity.phase = _ENCAPSULATED
            entity.inner = _Entity(
                header_start=body_start,
                newlines_at_header=newlines,
                depth=entity.depth + 1,
                nested=True,
                message_root=True,
            )
            self._count_leaf(entity)
            if live:
                self._stack.append(entity.inner)
            return
        entity.kind = LEAF
        entity.phase = _BODY
        self._count_leaf(entity)

    def _count_leaf(self, entity: _Entity) -> None:
        """Number the leaf for the REST API and decide whether it is an extract or attachment."""
        if entity.nested:
            return
        self._leaf_count += 1
        entity.leaf_index = self._leaf_count
        content = entity.content
        attachment = bool(content.filename) or content.disposition == "attachment"
        keep = 0
        if entity.kind == LEAF and content.disposition != "attachment" and content.type == "text":
            if content.subtype == "plain" and self._text is None:
                self._text = entity
                keep = _EXTRACT_KEEP
            elif content.subtype == "html" and self._html is None:
                self._html = entity
                keep = _EXTRACT_KEEP
        count = attachment and content.encoding in ("base64", "quoted-printable")
        if attachment:
            self._attachments.append(entity)
        if keep or count:
            entity.sink = _Sink(content.encoding, keep, count)

    def _close(self, entity: _Entity, end: int, newlines: int, at_eof: bool) -> None:
        if entity.phase == _HEADER:
            self._end_headers(entity, end, newlines, live=False)
        entity.end = end
        entity.newlines_at_end = newlines
        entity.phase = _CLOSED
        if entity.kind == MESSAGE and entity.inner.end < 0:
            self._close(entity.inner, end, newlines, at_eof)
        if entity.sink is not None:
            entity.sink.finish(at_eof)
        if entity.kind == MULTIPART and not entity.children:
            # No delimiter ever came: the body is opaque, as it is without a boundary.
            entity.kind = LEAF

    # Results.

    def _build(self) -> ParsedMessage:
        root = self._root
        fields = self._root_fields
        headers: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for count, (name, value) in enumerate(fields):
            if count >= HEADER_ENTRIES_CAP:
                break
            key = names.setdefault(name.lower(), name)
            headers.setdefault(key, []).append(cap_utf8(decoded_value(value), HEADER_VALUE_CAP))
        subject = first(fields, "Subject")
        message_id = first(fields, "Message-ID")
        parts: dict[str, dict] = {}
        _message_parts(root, "", parts)
        attachments = []
        for entity in self._attachments:
            size = entity.sink.decoded_size() if entity.sink is not None else None
            content = entity.content
            attachments.append(
                {
                    "part_index": entity.leaf_index,
                    "filename": content.filename or "",
                    "content_type": f"{content.type}/{content.subtype}",
                    "size_bytes": entity.size if size is None else size,
                }
            )
        return ParsedMessage(
            size=root.end,
            header_size=root.body_start,
            headers=headers,
            rfc_message_id=raw_text(message_id) if message_id is not None else "",
            subject=decoded_value(subject) if subject is not None else "",
            date=parse_date_ns(first(fields, "Date")),
            from_addresses=bare_addresses(all_values(fields, "From")),
            to_addresses=bare_addresses(all_values(fields, "To")),
            cc_addresses=bare_addresses(all_values(fields, "Cc")),
            bcc_addresses=bare_addresses(all_values(fields, "Bcc")),
            envelope=root.envelope,
            body=_body(root, extended=False),
            bodystructure=_body(root, extended=True),
            parts=parts,
            text_body_extract=_extract(self._text),
            html_body_extract=_extract(self._html),
            attachments=attachments,
            header_fields=self._root_stored,
        )


def _extract(entity: _Entity | None) -> str:
    if entity is None or entity.sink is None:
        return ""
    return entity.sink.text(param(entity.content.params, "charset"))


def _join(prefix: str, number: int) -> str:
    return f"{prefix}.{number}" if prefix else str(number)


def _entry(entity: _Entity, header_start: int) -> dict:
    entry = {"header_start": header_start, "body_start": entity.body_start, "end": entity.end}
    if entity.kind != MULTIPART:
        entry["type"] = f"{entity.content.type}/{entity.content.subtype}"
        entry["encoding"] = entity.content.encoding
        if entity.leaf_index:
            entry["leaf_index"] = entity.leaf_index
    return entry


def _message_parts(message: _Entity, prefix: str, parts: dict) -> None:
    """Number the parts of a message (top level or encapsulated) the way IMAP does."""
    if message.kind == MULTIPART:
        _multipart_parts(message, prefix, parts)
        return
    spec = _join(prefix, 1)
    parts[spec] = _entry(message, message.body_start)
    if message.kind == MESSAGE:
        parts[spec]["text_start"] = message.inner.body_start
        _message_parts(message.inner, spec, parts)


def _multipart_parts(multipart: _Entity, prefix: str, parts: dict) -> None:
    for number, child in enumerate(multipart.children, 1):
        spec = _join(prefix, number)
        parts[spec] = _entry(child, child.header_start)
        if child.kind == MULTIPART:
            _multipart_parts(child, spec, parts)
        elif child.kind == MESSAGE:
            parts[spec]["text_start"] = child.inner.body_start
            _message_parts(child.inner, spec, parts)


def _body(entity: _Entity, extended: bool) -> str:
    """BODY (``extended`` false) or BODYSTRUCTURE of an entity, RFC 3501 section 7.4.2."""
    content = entity.content
    astring = _wire.astring
    if entity.kind == MULTIPART:
        out = "(" + "".join(_body(child, extended) for child in entity.children)
        out += " " + astring(content.subtype.upper())
        if extended:
            out += " " + " ".join(
                (
                    _wire.param_list(content.params),
                    _wire.disposition(content.disposition, content.disposition_params),
                    _wire.languages(content.languages),
                    _wire.nstring(content.location),
                )
            )
        return out + ")"
    type_, subtype = content.type, content.subtype
    if entity.kind == LEAF and (type_ == "multipart" or (type_, subtype) == ("message", "rfc822")):
        # Not parsed (no boundary, too deep, an encoded message): saying MESSAGE RFC822 or
        # MULTIPART here would promise clients a structure that is not there.
        type_, subtype = "application", "octet-stream"
    fields = [
        astring(type_.upper()),
        astring(subtype.upper()),
        _wire.param_list(content.params),
        _wire.nstring(content.id),
        _wire.nstring(content.description),
        astring((content.encoding or "7bit").upper()),
        str(entity.size),
    ]
    if entity.kind == MESSAGE:
        fields += [entity.inner.envelope, _body(entity.inner, extended), str(entity.lines)]
    elif type_ == "text":
        fields.append(str(entity.lines))
    if extended:
        fields += [
            _wire.nstring(content.md5),
            _wire.disposition(content.disposition, content.disposition_params),
            _wire.languages(content.languages),
            _wire.nstring(content.location),
        ]
    return "(" + " ".join(fields) + ")"


def parse_bytes(data: bytes) -> ParsedMessage:
    """Parse a message held in memory (tests, small inputs)."""
    parser = MessageParser()
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_SIZE):
        parser.feed(bytes(view[start : start + CHUNK_SIZE]))
    return parser.close()


def parse_file(path) -> ParsedMessage:
    """Parse the message stored at ``path``, reading it in chunks with bounded memory.

    Blocking file I/O: call it from a thread (``deferToThread``), never on the reactor.
    """
    parser = MessageParser()
    with open(path, "rb") as stream:
        while True:
            chunk = stream.read(CHUNK_SIZE)
            if not chunk:
                break
            parser.feed(chunk)
    return parser.close()
