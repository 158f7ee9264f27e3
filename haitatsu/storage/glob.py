"""Go's ``path.Match`` glob syntax, which the original's ``pattern`` routes use (API.md 1.4).

``*`` matches any run of characters other than ``/``, ``?`` one such character, ``[...]`` a
character class (``^`` negates, ``lo-hi`` ranges, ``\\`` escapes) and ``\\c`` the character c.
A malformed pattern raises ``BadPattern``, as Go's ``ErrBadPattern``; ``compile`` does the work
once so a route's pattern can be checked when it is created and matched cheaply afterwards.
"""

from __future__ import annotations

import functools
import re


class BadPattern(ValueError):
    """The pattern is not valid ``path.Match`` syntax."""


def _escaped(pattern: str, i: int) -> tuple[str, int]:
    """The character at ``i`` (after a backslash, the one it escapes) and the next index."""
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPattern("trailing backslash")
    return pattern[i], i + 1


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; return the regex and the next index."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    items: list[str] = []
    count = 0
    while True:
        if i >= len(pattern):
            raise BadPattern("unterminated character class")
        if pattern[i] == "]" and count > 0:
            i += 1
            break
        if pattern[i] in "-]":
            raise BadPattern("bad character class")
        lo, i = _escaped(pattern, i)
        hi = lo
        if i < len(pattern) and pattern[i] == "-":
            i += 1
            if i >= len(pattern) or pattern[i] in "-]":
                raise BadPattern("bad range")
            hi, i = _escaped(pattern, i)
        count += 1
        if lo <= hi:  # Go accepts a reversed range; it matches nothing
            items.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
    if not items:
        return ("[^/]" if negated else "(?!)"), i
    return "[" + ("^/" if negated else "") + "".join(items) + "]", i


@functools.lru_cache(maxsize=1024)
def compile(pattern: str) -> re.Pattern:
    """The regular expression equivalent to ``pattern``; ``BadPattern`` if malformed."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            regex, i = _class(pattern, i + 1)
            out.append(regex)
        else:
            ch, i = _escaped(pattern, i)
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` whole; a malformed pattern matches nothing."""
    try:
        return compile(pattern).fullmatch(name) is not None
    except BadPattern:
        return False
