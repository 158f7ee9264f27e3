"""SEARCH keys compiled into a predicate over metadata rows.

twisted.mail's SEARCH calls ``IMessage.getHeaders`` per message and breaks on Python 3 for header
keys; ours reads the header fields and address lists stored at delivery (``MessageInfo``), flags
and sizes from the row, and only BODY/TEXT need the message text (loaded by the server).
Every RFC 3501 key parses; RECENT and NEW match nothing because we do not track ``\\Recent``.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
from collections.abc import Callable

import attrs

from haitatsu.imap.wire import (
    Atom,
    IMAPSyntaxError,
    String,
    is_sequence_set,
    parse_date,
    parse_sequence_set,
    resolve_sequence_set,
    utc_date,
)

CHARSETS = ("UTF-8", "US-ASCII")


class BadCharset(Exception):
    """SEARCH CHARSET named a charset we do not search in (``NO [BADCHARSET]``)."""


@attrs.define
class Candidate:
    """One message under test: its sequence number, row, and what the program asked for."""

    seq: int
    row: object  # MailboxMessage
    info: object = None  # MessageInfo when needs_info, else a MessageSummary with the fields
    text: MessageText | None = None  # when needs_text


class MessageText:
    """What BODY and TEXT look in: a message's stored text extracts and the first bytes of its
    body, casefolded. Matching is lazy: the extracts first, then, for an ASCII search string,
    the raw bytes lowercased (an ASCII match there is a match of the decoded text, and in an
    all-ASCII body a miss is a miss); only otherwise is the body decoded and casefolded."""

    __slots__ = ("_extracts", "_raw", "_lowered", "_decoded")

    def __init__(self, extracts: str, raw: bytes):
        self._extracts = extracts.casefold()
        self._raw = raw
        self._lowered = None
        self._decoded = None

    def __contains__(self, needle: str) -> bool:
        if needle in self._extracts:
            return True
        if needle.isascii():
            if self._lowered is None:
                self._lowered = self._raw.lower()
            if needle.encode("ascii") in self._lowered:
                return True
            if self._raw.isascii():
                return False
        if self._decoded is None:
            self._decoded = self._raw.decode("utf-8", "replace").casefold()
        return needle in self._decoded


#: The stored fields BODY needs besides the body bytes (``IMailStore.message_summaries``).
TEXT_FIELDS = (
    "text_body_extract",
    "html_body_extract",
    "header_size",
    "blob_key",
    "layout",
    "parts",
)


def text_ranges(info, limit: int) -> list[tuple[int, int]]:
    """Where BODY and TEXT look in a message's bytes, at most ``limit`` of them: the bodies
    of its ``text/*`` parts (nested messages' included), as stored (the decoded extracts are
    searched too). Attachments of other types are not searched, as Dovecot does not. A message
    with no typed parts (stored unparsed) is searched whole."""
    leaves = [p for p in (info.parts or {}).values() if "type" in p]
    if not leaves:
        size = max(info.size_bytes - info.header_size, 0)
        return [(info.header_size, min(size, limit))] if size else []
    ranges = []
    for part in sorted(leaves, key=lambda p: p["body_start"]):
        if not part["type"].startswith("text/"):
            continue
        length = min(part["end"] - part["body_start"], limit)
        if length > 0:
            ranges.append((part["body_start"], length))
            limit -= length
        if limit <= 0:
            break
    return ranges


@attrs.define
class SearchProgram:
    predicate: Callable[[Candidate], bool]
    #: Some key needs the whole ``MessageInfo`` (headers, address lists, ...).
    needs_info: bool = False
    needs_text: bool = False
    #: Message fields the keys need when ``needs_info`` is not set: read as light rows.
    fields: set = attrs.Factory(set)
    #: The keys include MODSEQ (RFC 7162 3.1.5): the answer reports the highest MODSEQ matched.
    uses_modseq: bool = False
    #: A SUBJECT string every match must contain (a key of the top-level conjunction, not
    #: under NOT or OR; the longest of them): the store narrows the candidates to the
    #: messages whose subject may contain it (``store.subject_candidates``) before the
    #: predicate runs.
    subject_prefilter: str | None = None


def compile_search(
    tokens: list, uids: list[int], saved: list[int] | None = None, now_ns: int = 0
) -> SearchProgram:
    """Compile SEARCH arguments against the session's view (``uids`` in sequence order).

    ``saved`` is SEARCHRES's ``$`` (RFC 5182) as UIDs; ``now_ns`` the time WITHIN's OLDER and
    YOUNGER (RFC 5032) count back from."""
    tokens = list(tokens)
    if len(tokens) >= 2 and _is_word(tokens[0], "CHARSET"):
        charset = _text(tokens[1]).upper()
        if charset not in CHARSETS:
            raise BadCharset(charset)
        tokens = tokens[2:]
    if not tokens:
        raise IMAPSyntaxError("missing search keys")
    program = SearchProgram(predicate=lambda c: True)
    parser = _Parser(tokens, uids, program, saved or [], now_ns)
    predicates = []
    while parser.more():
        predicates.append(parser.key())
    program.predicate = _all(predicates)
    return program


def _is_word(token, word: str) -> bool:
    return isinstance(token, Atom) and token.upper() == word.encode()


def _text(token) -> str:
    if not isinstance(token, (Atom, String)):
        raise IMAPSyntaxError("string expected")
    return bytes(token).decode("utf-8", "replace")


def _all(predicates):
    if len(predicates) == 1:
        return predicates[0]
    return lambda c: all(p(c) for p in predicates)


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}

_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc"}


class _Parser:
    def __init__(self, tokens, uids, program, saved, now_ns, conjunct=True):
        self.tokens = tokens
        self.i = 0
        self.uids = uids
        self.program = program
        self.saved = saved
        self.now_ns = now_ns
        #: Keys parsed now must all hold for a message to match (not under NOT or OR).
        self.conjunct = conjunct

    def more(self) -> bool:
        return self.i < len(self.tokens)

    def next(self):
        if not self.more():
            raise IMAPSyntaxError("missing search argument")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def string(self) -> str:
        return _text(self.next()).casefold()

    def number(self) -> int:
        token = self.next()
        if not isinstance(token, Atom) or not token.isdigit():
            raise IMAPSyntaxError("number expected")
        return int(token)

    def date(self) -> datetime.date:
        token = self.next()
        if not isinstance(token, (Atom, String)):
            raise IMAPSyntaxError("date expected")
        return parse_date(bytes(token))

    def key(self):
        token = self.next()
        if isinstance(token, list):
            if not token:
                raise IMAPSyntaxError("empty search list")
            inner = _Parser(token, self.uids, self.program, self.saved, self.now_ns, self.conjunct)
            predicates = []
            while inner.more():
                predicates.append(inner.key())
            return _all(predicates)
        if not isinstance(token, Atom):
            raise IMAPSyntaxError("search key expected")
        if token == b"$":
            wanted = set(self.saved)
            return lambda c: c.row.uid in wanted
        if is_sequence_set(token):
            return self._uid_set(token, by_uid=False)
        name = token.upper().decode("ascii", "replace")
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return lambda c: (flag in c.row.flags) == present
        if name in ("ALL", "OLD"):
            return lambda c: True
        if name in ("NEW", "RECENT"):
            return lambda c: False
        if name in ("KEYWORD", "UNKEYWORD"):
            keyword = self.string()
            present = name == "KEYWORD"
            return lambda c: (keyword in {k.casefold() for k in c.row.keywords}) == present
        if name == "LARGER":
            n = self.number()
            return lambda c: c.row.size_bytes > n
        if name == "SMALLER":
            n = self.number()
            return lambda c: c.row.size_bytes < n
        if name in ("BEFORE", "ON", "SINCE"):
            return _date_test(name, self.date(), lambda c: utc_date(c.row.internal_date))
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            self.program.needs_info = True
            return _date_test(name[4:], self.date(), _sent_date)
        if name in _ADDRESS_KEYS:
            self.program.needs_info = True
            field, needle = _ADDRESS_KEYS[name], self.string()
            return lambda c: needle in _address_text(c.info, field)
        if name == "SUBJECT":
            # The Subject field as stored (decoded); MessageInfo adds every Subject header.
            self.program.fields.add("subject")
            needle = self.string()
            current = self.program.subject_prefilter
            if self.conjunct and (current is None or len(needle) > len(current)):
                self.program.subject_prefilter = needle
            return lambda c: needle in _subject_text(c.info)
        if name == "HEADER":
            self.program.needs_info = True
            field, needle = self.string(), self.string()
            return lambda c: _header_matches(c.info, field, needle)
        if name == "BODY":
            self.program.needs_text = True
            self.program.fields.update(TEXT_FIELDS)
            needle = self.string()
            return lambda c: needle in (c.text or "")
        if name == "TEXT":
            self.program.needs_info = self.program.needs_text = True
            self.program.fields.update(TEXT_FIELDS)
            needle = self.string()
            return lambda c: needle in (c.text or "") or needle in _all_headers_text(c.info)
        if name in ("OLDER", "YOUNGER"):
            seconds = self.number()
            if seconds == 0:
                raise IMAPSyntaxError("interval must be positive")
            limit = self.now_ns - seconds * 1_000_000_000
            if name == "OLDER":
                return lambda c: c.row.internal_date <= limit
            return lambda c: c.row.internal_date >= limit
        if name == "MODSEQ":
            # MODSEQ [entry-name entry-type] n: every flag shares the message's MODSEQ here,
            # so the entry is checked for syntax and the message's MODSEQ compared.
            if self.more() and isinstance(self.tokens[self.i], String):
                self.next()
                entry_type = self.next()
                if (
                    not _is_word(entry_type, "PRIV")
                    and not _is_word(entry_type, "SHARED")
                    and not _is_word(entry_type, "ALL")
                ):
                    raise IMAPSyntaxError("MODSEQ entry type is priv, shared or all")
            modseq = self.number()
            self.program.uses_modseq = True
            return lambda c: c.row.modseq >= modseq
        if name == "UID":
            token = self.next()
            if token == b"$":
                wanted = set(self.saved)
                return lambda c: c.row.uid in wanted
            if not is_sequence_set(token):
                raise IMAPSyntaxError("UID needs a sequence set")
            return self._uid_set(token, by_uid=True)
        if name == "NOT":
            inner = self._alternative()
            return lambda c: not inner(c)
        if name == "OR":
            first, second = self._alternative(), self._alternative()
            return lambda c: first(c) or second(c)
        raise IMAPSyntaxError("unknown search key %s" % name[:40])

    def _alternative(self):
        """A key under NOT or OR: one a match need not satisfy."""
        conjunct, self.conjunct = self.conjunct, False
        try:
            return self.key()
        finally:
            self.conjunct = conjunct

    def _uid_set(self, token, by_uid):
        ranges = parse_sequence_set(bytes(token))
        wanted = {self.uids[i] for i in resolve_sequence_set(ranges, self.uids, by_uid)}
        return lambda c: c.row.uid in wanted


def _date_test(kind, day, get):
    if kind == "BEFORE":
        return lambda c: get(c) < day
    if kind == "ON":
        return lambda c: get(c) == day
    return lambda c: get(c) >= day


def _sent_date(c) -> datetime.date:
    """The day of the Date header as written, "disregarding time and timezone" (RFC 3501
    6.4.4): ``Mon, 7 Feb 1994 21:52:25 -0800`` is 7 Feb. Without a usable Date, the internal
    date's day (UTC)."""
    for value in header_values(c.info, "date")[:1]:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                return datetime.date(*parsed[:3])
    ns = getattr(c.info, "date", None)
    return utc_date(ns if ns is not None else c.row.internal_date)


def header_values(info, name: str) -> list[str]:
    """The values of header ``name`` from ``MessageInfo.headers``, whatever its value shape."""
    headers = getattr(info, "headers", None) or {}
    values: list[str] = []
    for key, value in headers.items():
        if str(key).lower() != name:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            values.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return values


def _address_list_text(addresses) -> str:
    parts = []
    for a in addresses or ():
        if isinstance(a, dict):
            parts.append(" ".join(str(a.get(k) or "") for k in ("name", "address", "email")))
        elif isinstance(a, (list, tuple)):
            parts.append(" ".join(str(x or "") for x in a))
        else:
            parts.append(str(a))
    return " ".join(parts)


def _address_text(info, field: str) -> str:
    text = " ".join(header_values(info, field))
    text += " " + _address_list_text(getattr(info, f"{field}_addresses", None))
    return text.casefold()


def _subject_text(info) -> str:
    return (" ".join(header_values(info, "subject")) + " " + (info.subject or "")).casefold()


def _header_matches(info, field: str, needle: str) -> bool:
    values = header_values(info, field)
    if field in _ADDRESS_KEYS.values():
        values.append(_address_list_text(getattr(info, f"{field}_addresses", None)))
    if field == "subject" and info.subject:
        values.append(info.subject)
    if not needle:
        return bool(header_values(info, field))
    return any(needle in v.casefold() for v in values)


def _all_headers_text(info) -> str:
    headers = getattr(info, "headers", None) or {}
    return " ".join(
        f"{k}: {' '.join(header_values(info, str(k).lower()))}" for k in headers
    ).casefold()
