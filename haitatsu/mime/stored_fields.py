"""The header fields IMAP clients fetch for their message lists, kept at delivery.

Thunderbird, Apple Mail, K-9, Evolution, mutt's header cache, mbsync and offlineimap open a
folder with ``BODY.PEEK[HEADER.FIELDS (...)]`` over every message. ``select`` picks the raw lines
of the fields in ``STORED_FIELDS`` out of a message's top-level header once, at delivery; FETCH
answers a ``HEADER.FIELDS`` request that names only those fields from the stored lines
(``header_fields`` over them gives the same bytes as over the whole header), without opening
the blob.

``header_fields`` is the one cutter both ways use: IMAP's ``BODY[HEADER.FIELDS (...)]`` and
``HEADER.FIELDS.NOT`` on a header read from the blob, and the stored lines. It works on bytes,
so raw 8-bit headers pass through untouched, and keeps every line as it was (folds, line ends,
repeated fields, message order).
"""

from __future__ import annotations

import functools

#: The fields whose raw lines are stored at delivery (lowercase). The union of what common
#: clients fetch for a message list, without the large or per-hop ones (Received,
#: DKIM-Signature, ARC-*, Authentication-Results, BIMI-Indicator), which are left to the blob.
STORED_FIELDS = frozenset(
    name.encode()
    for name in (
        # RFC 5322 originator, destination, identification and informational fields
        "date",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "subject",
        "message-id",
        "in-reply-to",
        "references",
        "keywords",
        "comments",
        # MIME
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-description",
        "content-disposition",
        "content-language",
        # priority and importance (Thunderbird, Apple Mail, Evolution, Outlook's)
        "priority",
        "x-priority",
        "importance",
        "x-msmail-priority",
        # mailing lists (mutt, Evolution, Apple Mail, K-9)
        "list-id",
        "list-post",
        "list-subscribe",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-help",
        "list-archive",
        "list-owner",
        "mailing-list",
        "x-mailing-list",
        "x-loop",
        "x-beenthere",
        "precedence",
        # delivery and others clients show or key on
        "newsgroups",
        "lines",
        "return-path",
        "delivered-to",
        "x-original-to",
        "organization",
        "user-agent",
        "x-mailer",
        "disposition-notification-to",
        "return-receipt-to",
        "thread-topic",
        "thread-index",
        "auto-submitted",
        "x-label",
        "x-keywords",
        "x-spam-flag",
        # client bookkeeping fields
        "x-tuid",  # mbsync
        "x-offlineimap",  # offlineimap
        "x-k9mail-identity",  # K-9 / Thunderbird for Android
        "chat-version",  # K-9, Delta Chat
        "x-uniform-type-identifier",  # Apple Mail (notes)
        "x-universally-unique-identifier",  # Apple Mail (notes)
        "x-mail-created-date",  # Apple Mail (notes)
        "x-calendar-attachment",  # Evolution
        "x-mozilla-draft-info",  # Thunderbird drafts
    )
)

#: Stored lines longer than this are not kept (FETCH then reads the blob).
MAX_STORED = 64 * 1024


def header_fields(header: bytes, names, negate: bool) -> bytes:
    """The header lines named (or, negated, not named) in ``names``, plus the blank line.

    A field's name is what comes before its first colon, stripped and compared without case;
    a line that is not a field (no colon) is named by the whole line. A continuation line
    belongs to the field above it; a last line without a line end gets CRLF.
    """
    return b"".join(
        _lines(_split_fields(_strip_blank_line(header)), _wanted(tuple(names)), negate)
    ) + (b"\r\n")


def covered(names) -> bool:
    """True if every field in ``names`` is in ``STORED_FIELDS``."""
    return all(n.lower() in STORED_FIELDS for n in names)


def select(header: bytes) -> bytes | None:
    """The lines of ``header`` (a top-level header block, with or without its blank line)
    that ``header_fields(header, STORED_FIELDS, False)`` returns, without the final blank
    line: what is stored. None where the stored lines could not stand in for the header
    (more than ``MAX_STORED`` bytes, or lines that would split differently on their own)."""
    fields = _lines(_split_fields(_strip_blank_line(header)), STORED_FIELDS, False)
    stored = b"".join(fields)
    if len(stored) > MAX_STORED:
        return None
    # Served as header_fields(stored, names): the stored lines must split into the same fields.
    if _lines(_split_fields(_strip_blank_line(stored)), STORED_FIELDS, False) != fields:
        return None
    return stored


def _lines(fields, wanted, negate) -> list[bytes]:
    """The ``fields`` named (or not) in ``wanted``, each ending in a line end."""
    out = []
    for field in fields:
        colon = field.find(b":")
        name = (field if colon < 0 else field[:colon]).strip().lower()
        if (name in wanted) != negate:
            out.append(field if field[-1:] == b"\n" else field + b"\r\n")
    return out


@functools.lru_cache(maxsize=256)
def _wanted(names) -> frozenset:
    return frozenset(n.lower() for n in names)


def _strip_blank_line(header: bytes) -> bytes:
    if header.endswith(b"\r\n\r\n"):
        return header[:-2]
    if header.endswith(b"\n\n"):
        return header[:-1]
    return header


def _split_fields(header: bytes) -> list[bytes]:
    lines = header.splitlines(keepends=True)
    if header[:1] not in (b" ", b"\t") and b"\n " not in header and b"\n\t" not in header:
        if b"\r " not in header and b"\r\t" not in header:
            # No continuation lines: every line that is not blank is a field.
            return [line for line in lines if line.strip()]
    fields: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    return fields
