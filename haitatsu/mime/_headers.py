"""Header-level helpers: splitting a header block into fields, RFC 2047 decoding, structured
values (Content-Type and friends, RFC 2231 parameters), address lists and dates.

Everything here works on one header block or one value, never on a whole message, and never
raises on malformed input: a mail server meets every kind of broken header, and one of them must
not stop a delivery.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import codecs
import re
import urllib.parse
from email.utils import parsedate_tz

import attrs

_FOLD = re.compile(rb"\r?\n")
_WSP = b" \t"


def split_fields(block: bytes) -> list[tuple[str, bytes]]:
    """Split a raw header block into ``(name, raw value)`` pairs in order of appearance.

    The raw value is everything after the colon, folds and line ends included. Lines that are
    neither a field nor a continuation (an mbox ``From`` line, garbage) are skipped together with
    their continuations.
    """
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    pieces: list[bytes] = []
    lines = block.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if index == last and not line:
            break
        full = line + b"\n" if index < last else line
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                pieces.append(full)
            continue
        if name is not None:
            fields.append((name, b"".join(pieces)))
            name = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        raw_name = line[:colon].strip(_WSP)
        if not raw_name or b" " in raw_name or b"\t" in raw_name:
            continue
        name = raw_name.decode("ascii", "replace")
        pieces = [full[colon + 1 :]]
    if name is not None:
        fields.append((name, b"".join(pieces)))
    return fields


def raw_text(value: bytes) -> str:
    """The unfolded, trimmed text of a raw value, 8-bit bytes read as UTF-8.

    This is what ENVELOPE and BODYSTRUCTURE carry: header text as written, not RFC 2047 decoded.
    """
    return _FOLD.sub(b"", value).strip(b" \t\r\n").decode("utf-8", "replace")


def first(fields: list[tuple[str, bytes]], name: str) -> bytes | None:
    lname = name.lower()
    size = len(lname)
    for field_name, value in fields:
        # The length test first: most names differ in length, and lower() is the cost here.
        if len(field_name) == size and field_name.lower() == lname:
            return value
    return None


def all_values(fields: list[tuple[str, bytes]], name: str) -> list[bytes]:
    lname = name.lower()
    size = len(lname)
    return [
        value
        for field_name, value in fields
        if len(field_name) == size and field_name.lower() == lname
    ]


def cap_utf8(text: str, limit: int) -> str:
    """Truncate ``text`` so that its UTF-8 encoding is at most ``limit`` bytes."""
    if len(text) * 4 <= limit:
        return text
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


#: Codecs Python knows that are not charsets a message may name.
_NOT_CHARSETS = frozenset(
    ("unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "palmos")
)


def lookup_codec(charset: str | None) -> str:
    """A Python codec name for a MIME charset; unknown, absent and ASCII charsets read as UTF-8,
    and so do names of Python codecs that are not text charsets (``base64``, ``rot13``).

    US-ASCII is read as UTF-8 because mislabelled 8-bit text is far more common than the
    difference matters.
    """
    if not charset:
        return "utf-8"
    try:
        info = codecs.lookup(charset.strip().strip('"'))
    except (LookupError, ValueError):
        return "utf-8"
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return "utf-8"
    if info.name == "ascii":
        return "utf-8"
    return info.name


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode bytes in a MIME charset, never raising: what does not decode becomes U+FFFD."""
    try:
        return data.decode(lookup_codec(charset), "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


# RFC 2047 encoded words. The charset may carry an RFC 2231 language suffix (``utf-8*en``).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _word_bytes(encoding: str, text: str) -> bytes:
    data = text.encode("ascii", "replace")
    if encoding in "bB":
        data = data.rstrip(b"=")
        data += b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            try:
                return binascii.a2b_base64(data)
            except (binascii.Error, ValueError):
                return b""
    return binascii.a2b_qp(data, header=True)


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words in ``text``; what does not decode is left as written.

    Adjacent encoded words are joined without the whitespace between them, and the bytes of
    adjacent words in the same charset are decoded together, so a multibyte character split across
    two words (which RFC 2047 forbids but mailers do) survives.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    run_charset: str | None = None
    run: list[bytes] = []

    def flush() -> None:
        if run:
            out.append(decode_text(b"".join(run), run_charset))
            run.clear()

    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        if not (previous_was_word and not between.strip(" \t\r\n")):
            flush()
            out.append(between)
        charset = match.group(1).split("*", 1)[0]
        if run and charset.lower() != (run_charset or "").lower():
            flush()
        run_charset = charset
        run.append(_word_bytes(match.group(2), match.group(3)))
        previous_was_word = True
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def decoded_value(value: bytes) -> str:
    """The human text of a header value: unfolded, trimmed, RFC 2047 decoded."""
    return decode_words(raw_text(value))


def _strip_comments(text: str) -> str:
    """Remove RFC 5322 comments outside quoted strings."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if quoted:
            out.append(char)
            if char == "\\" and index + 1 < len(text):
                out.append(text[index + 1])
                index += 1
            elif char == '"':
                quoted = False
        elif depth:
            if char == "\\":
                index += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        else:
            out.append(char)
            if char == '"':
                quoted = True
        index += 1
    return "".join(out)


def _split_semicolons(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if quoted:
            current.append(char)
            if char == "\\" and index + 1 < len(text):
                current.append(text[index + 1])
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
            current.append(char)
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip(" \t")
    if not value.startswith('"'):
        return value
    out: list[str] = []
    index = 1
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            out.append(value[index + 1])
            index += 2
            continue
        if char == '"':
            break
        out.append(char)
        index += 1
    return "".join(out)


def parse_structured(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``value; name=value; ...`` (Content-Type, Content-Disposition) into the value and
    its parameters, names as written, values unquoted but otherwise raw (RFC 2231 forms kept)."""
    segments = _split_semicolons(_strip_comments(text))
    value = segments[0].strip(" \t")
    params: list[tuple[str, str]] = []
    for segment in segments[1:]:
        name, sep, raw = segment.partition("=")
        name = name.strip(" \t")
        if not sep or not name:
            continue
        params.append((name, _unquote(raw)))
    return value, params


def param(params: list[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return value
    return None


_CONTINUATION = re.compile(r"([^*]+)\*(\d{1,4})(\*?)$")


def _rfc2231_value(text: str, with_charset: bool, charset: str | None) -> tuple[str, str | None]:
    if with_charset:
        pieces = text.split("'", 2)
        if len(pieces) == 3:
            charset, _language, text = pieces
    return decode_text(urllib.parse.unquote_to_bytes(text), charset), charset


def param_2231(params: list[tuple[str, str]], name: str, words: bool = True) -> str | None:
    """The value of parameter ``name``, with RFC 2231 extended values and continuations decoded
    and, if ``words``, RFC 2047 encoded words (a common non-standard habit for filenames) too."""
    lname = name.lower()
    plain: str | None = None
    extended: str | None = None
    continued: dict[int, tuple[str, bool]] = {}
    for key, value in params:
        lkey = key.lower()
        if lkey == lname:
            if plain is None:
                plain = value
        elif lkey == lname + "*":
            if extended is None:
                extended = value
        else:
            match = _CONTINUATION.match(lkey)
            if match and match.group(1) == lname:
                continued.setdefault(int(match.group(2)), (value, bool(match.group(3))))
    if extended is not None:
        return _rfc2231_value(extended, True, None)[0]
    if continued:
        out: list[str] = []
        charset: str | None = None
        for number in sorted(continued):
            value, encoded = continued[number]
            if encoded:
                text, charset = _rfc2231_value(value, number == 0, charset)
                out.append(text)
            else:
                out.append(value)
        joined = "".join(out)
        return decode_words(joined) if words else joined
    if plain is not None:
        return decode_words(plain) if words else plain
    return None


@attrs.frozen
class Address:
    """One RFC 5322 address as IMAP's ENVELOPE sees it; ``host`` is None only for group
    markers (group start: ``mailbox`` is the group name; group end: ``mailbox`` is None too)."""

    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_marker(self) -> bool:
        return self.host is None

    def bare(self) -> str:
        if self.mailbox is None or self.host is None:
            return ""
        if not self.host:
            return self.mailbox.lower()
        return f"{self.mailbox}@{self.host}".lower()


_ADDRESS_SPECIALS = "<>@,;:"
_ATOM_STOP = frozenset(' \t\r\n()"<>@,;:[')


def _address_tokens(text: str) -> list[tuple[str, str]]:
    """Tokens: ``("a", atom)`` (dots allowed, domain literals included), ``("q", quoted
    content)``, ``("s", special)``; comments and whitespace dropped."""
    tokens: list[tuple[str, str]] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char in " \t\r\n":
            index += 1
        elif char == "(":
            depth = 1
            index += 1
            while index < length and depth:
                if text[index] == "\\":
                    index += 1
                elif text[index] == "(":
                    depth += 1
                elif text[index] == ")":
                    depth -= 1
                index += 1
        elif char == '"':
            index += 1
            out: list[str] = []
            while index < length and text[index] != '"':
                if text[index] == "\\" and index + 1 < length:
                    index += 1
                out.append(text[index])
                index += 1
            index += 1
            tokens.append(("q", "".join(out)))
        elif char == "[":
            end = text.find("]", index)
            end = length - 1 if end < 0 else end
            tokens.append(("a", text[index : end + 1]))
            index = end + 1
        elif char in _ADDRESS_SPECIALS:
            tokens.append(("s", char))
            index += 1
        else:
            end = index
            while end < length and text[end] not in _ATOM_STOP:
                end += 1
            if end == index:
                end += 1
            tokens.append(("a", text[index:end]))
            index = end
    return tokens


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    words = [value for _kind, value in tokens]
    return " ".join(words) if words else None


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str, str]:
    at = None
    for index in range(len(tokens) - 1, -1, -1):
        if tokens[index] == ("s", "@"):
            at = index
            break
    if at is None:
        return "".join(value for _kind, value in tokens), ""
    local = "".join(value for _kind, value in tokens[:at])
    domain = "".join(value for _kind, value in tokens[at + 1 :])
    return local, domain


def _is_special(token: tuple[str, str], chars: str) -> bool:
    return token[0] == "s" and token[1] in chars


def parse_addresses(text: str) -> list[Address]:
    """Parse an address list leniently into ENVELOPE addresses, groups marked RFC 3501 style.

    A mailbox with no domain gets the host ``""`` (not NIL, which would read as a group marker).
    """
    tokens = _address_tokens(text)
    result: list[Address] = []
    in_group = False
    index = 0
    count = len(tokens)
    while index < count:
        token = tokens[index]
        if _is_special(token, ","):
            index += 1
            continue
        if _is_special(token, ";"):
            if in_group:
                result.append(Address(None, None, None, None))
                in_group = False
            index += 1
            continue
        end = index
        while end < count and not _is_special(tokens[end], "<:,;"):
            end += 1
        stop = tokens[end] if end < count else None
        if stop == ("s", ":") and not in_group:
            result.append(Address(None, None, _phrase(tokens[index:end]) or "", None))
            in_group = True
            index = end + 1
            continue
        if stop == ("s", "<"):
            name = _phrase(tokens[index:end])
            inner_end = end + 1
            while inner_end < count and tokens[inner_end] != ("s", ">"):
                inner_end += 1
            inner = tokens[end + 1 : inner_end]
            route = None
            if inner and inner[0] == ("s", "@"):
                for position, inner_token in enumerate(inner):
                    if inner_token == ("s", ":"):
                        route = "".join(value for _kind, value in inner[:position])
                        inner = inner[position + 1 :]
                        break
            mailbox, host = _addr_spec(inner)
            if mailbox or host or name:
                result.append(Address(name, route, mailbox, host))
            index = inner_end + 1
            while index < count and not _is_special(tokens[index], ",;"):
                index += 1
            continue
        item = tokens[index:end]
        if item:
            mailbox, host = _addr_spec(item)
            result.append(Address(None, None, mailbox, host))
        if stop is not None and _is_special(stop, ":<"):
            end += 1
        index = end
    if in_group:
        result.append(Address(None, None, None, None))
    return result


def bare_addresses(values: list[bytes]) -> list[str]:
    """Lowercased ``local@domain`` of every mailbox in the given raw values, in order, once."""
    seen: dict[str, None] = {}
    for value in values:
        for address in parse_addresses(raw_text(value)):
            bare = address.bare()
            if bare:
                seen.setdefault(bare, None)
    return list(seen)


def parse_date_ns(value: bytes | None) -> int | None:
    """Nanoseconds since the epoch (UTC) of an RFC 5322 date, or None if it does not parse.

    A date without a zone is taken as UTC rather than the server's local time.
    """
    if value is None:
        return None
    try:
        parsed = parsedate_tz(raw_text(value))
        if parsed is None:
            return None
        year = parsed[0]
        if not 1 <= year <= 9999:
            return None
        seconds = calendar.timegm(parsed[:6] + (0, 1, 0)) - (parsed[9] or 0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return seconds * 1_000_000_000
