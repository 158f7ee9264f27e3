"""The ``q`` search syntax of the message list (API.md 1.7), read into a ``MessageQuery``.

The query is split on spaces, double quotes grouping words. A ``key:value`` token with a known
key is a filter (quotes around the value stripped, the key without case); anything else is a
free-text term, kept with its quotes so a quoted phrase stays a phrase for the full-text search.
"""

from __future__ import annotations

import re

import attrs

from haitatsu.api.conventions import APIError, parse_rfc3339
from haitatsu.storage.store import MessageQuery

_DAY_NS = 86_400 * 1_000_000_000

_SUBSTRING_KEYS = {"from": "from_", "to": "to", "cc": "cc", "subject": "subject"}


def invalid_search(message: str) -> APIError:
    return APIError(400, "invalid_message_search", message)


def split(q: str) -> list[str]:
    """Tokens separated by spaces outside double quotes; the quotes stay in the token."""
    tokens, current, quoted = [], [], False
    for ch in q:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                tokens.append("".join(current))
            current = []
            continue
        current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens


def _date(value: str, end_of_day: bool) -> int:
    """RFC 3339, or ``YYYY-MM-DD`` (UTC): its first instant, or with ``end_of_day`` its last,
    so ``before:2025-05-01`` includes the whole day."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        start = parse_rfc3339(value + "T00:00:00Z")
        return start + _DAY_NS - 1 if end_of_day else start
    return parse_rfc3339(value)


def parse(q: str, base: MessageQuery) -> MessageQuery:
    """``base`` (the list's other filters) narrowed by the search ``q``."""
    found: dict[str, list] = {}
    text: list[str] = []
    has_attachment = False
    for token in split(q):
        key, colon, raw = token.partition(":")
        key = key.lower()
        value = raw.replace('"', "")
        if not colon or '"' in key:
            text.append(token)
        elif key in _SUBSTRING_KEYS:
            if value:
                found.setdefault(_SUBSTRING_KEYS[key], []).append(value)
        elif key in ("folder", "label"):
            found.setdefault(key + "_names", []).append(value)
        elif key == "has":
            if value.lower() != "attachment":
                raise invalid_search(f'unknown has: value "{value}" (has:attachment)')
            has_attachment = True
        elif key == "is":
            flag = value.lower()
            if flag not in ("read", "unread", "flagged"):
                raise invalid_search(f'unknown is: value "{value}" (read, unread, flagged)')
            if flag == "flagged":
                found.setdefault("flagged", []).append(True)
            else:
                found.setdefault("read", []).append(flag == "read")
        elif key == "tag":
            found.setdefault("plus_tags", []).append(value)
        elif key in ("after", "before"):
            try:
                bound = _date(value, end_of_day=key == "before")
            except ValueError:
                raise invalid_search(
                    f'{key}: "{value}" is not a date (RFC 3339 or YYYY-MM-DD)'
                ) from None
            found.setdefault(key, []).append(bound)
        else:
            text.append(token)
    changes = {name: tuple(getattr(base, name)) + tuple(values) for name, values in found.items()}
    return attrs.evolve(
        base,
        **changes,
        has_attachment=base.has_attachment or has_attachment,
        text=" ".join([base.text, *text]).strip(),
    )
