"""Names a client chooses for folders and labels: what the API refuses before the store sees.

A name is a path of ``/``-separated levels (IMAP shows a label as ``Labels/<name>``). Besides the
store's own rules (no empty level, no control character, at most 1000 characters), a level may
not be ``.`` or ``..``: such a name reads as a path traversal to any tool that maps folders to
directories (Maildir exports, IMAP clients' local caches), so it is refused with a 400.
"""

from __future__ import annotations

from haitatsu.api.conventions import APIError


def checked_name(body: dict, required_code: str, invalid_code: str, what: str) -> str:
    """The ``name`` of a request body, checked; ``required_code`` when absent or empty."""
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise APIError(400, invalid_code, "name must be a string")
    if not name:
        raise APIError(400, required_code, f"{what} name is required")
    problem = name_problem(name)
    if problem:
        raise APIError(400, invalid_code, f"invalid {what} name: {problem}")
    return name


def name_problem(name: str) -> str:
    """Why ``name`` cannot name a folder or label, or "" if it can."""
    if len(name) > 1000:
        return "longer than 1000 characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control character"
    levels = name.split("/")
    if any(not level for level in levels):
        return "empty level (leading, trailing or double /)"
    if any(level in (".", "..") for level in levels):
        return '"." and ".." are not allowed as a level'
    return ""
