"""What an import job reads: its ``source_type`` and ``source`` (API.md 1.13), checked.

``check_source`` is what ``POST /mailboxes/:id/import`` runs (400 ``source_type_required``,
``source_type_invalid`` or ``source_invalid`` with the reason), and the worker runs it again
before it reads anything, against the configuration of that moment.

Paths (``maildir``, and ``mbox``, our addition) are read only inside ``imports.root``: a
relative ``path`` is taken relative to it, an absolute one must lie in it, and both are resolved
through symbolic links first, so neither ``..`` nor a link leads out. With no root configured
those sources are refused: the service token would otherwise read any file the server can.
"""

from __future__ import annotations

import os
import re

from haitatsu.storage.blobs import check_object_name

SOURCE_TYPES = ("zip", "maildir", "imap", "mbox")

#: Shown instead of a secret ``source`` key's value (API.md 1.13).
REDACTED = "[redacted]"


class SourceInvalid(ValueError):
    """The request's source cannot be imported; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> SourceInvalid:
    return SourceInvalid("source_invalid", message)


def check_source(source_type, source, import_root: str) -> dict:
    """The ``source`` to store for a request, or ``SourceInvalid``."""
    if source_type is None or source_type == "":
        raise SourceInvalid("source_type_required", "Source type is required")
    if not isinstance(source_type, str) or source_type not in SOURCE_TYPES:
        raise SourceInvalid(
            "source_type_invalid", f"source_type must be one of {', '.join(SOURCE_TYPES)}"
        )
    if source is None:
        source = {}
    if not isinstance(source, dict):
        raise _invalid("source must be an object")
    if source_type == "zip":
        key = source.get("object_key") or source.get("key")
        if not isinstance(key, str) or not key:
            raise _invalid("source.object_key is required for a zip import")
        try:
            check_object_name(key)
        except ValueError as e:
            raise _invalid(f"source.object_key: {e}") from None
    elif source_type in ("maildir", "mbox"):
        resolve_path(source.get("path"), import_root)
    else:
        imap_address(source.get("addr"))
        for key in ("username", "password", "mailbox"):
            if source.get(key) is not None and not isinstance(source[key], str):
                raise _invalid(f"source.{key} must be a string")
        for key in ("username", "password"):
            if any(c in (source.get(key) or "") for c in "\r\n\x00"):
                raise _invalid(f"source.{key} must not contain CR, LF or NUL")
        boxes = source.get("mailboxes")
        if boxes is not None and (
            not isinstance(boxes, list) or not all(isinstance(b, str) and b for b in boxes)
        ):
            raise _invalid("source.mailboxes must be an array of folder names")
        for key in ("tls", "starttls", "skip_verify"):
            if source.get(key) is not None and not isinstance(source[key], bool):
                raise _invalid(f"source.{key} must be a boolean")
    return source


def zip_object_key(source: dict) -> str:
    return source.get("object_key") or source.get("key")


def resolve_path(path, import_root: str) -> str:
    """The real path a ``maildir``/``mbox`` source reads, inside ``import_root``, or
    ``SourceInvalid``. Whether it exists is the worker's concern."""
    if not isinstance(path, str) or not path:
        raise _invalid("source.path is required")
    if "\x00" in path:
        raise _invalid("source.path must not contain NUL")
    if not import_root:
        raise _invalid(
            "maildir and mbox imports are off on this server: imports.root is not configured"
        )
    root = os.path.realpath(import_root)
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, real]) != root:
        raise _invalid("source.path must lie inside the server's import directory")
    return real


def inside(root: str, path: str) -> bool:
    """Whether ``path`` (a file a source found) resolves inside ``root``: a symbolic link in a
    maildir must not lead out of the import directory."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def imap_address(addr) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``, or ``SourceInvalid``."""
    if not isinstance(addr, str) or not addr:
        raise _invalid("source.addr (host:port) is required for an imap import")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})", addr) or re.fullmatch(
        r"([A-Za-z0-9.-]+):(\d{1,5})", addr
    )
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise _invalid("source.addr must be host:port")
    return m.group(1), int(m.group(2))


def redacted(source: dict) -> dict:
    """``source`` as the API shows it: secret keys' values replaced."""
    from haitatsu.storage.store.jobs import SECRET_SOURCE_KEYS

    return {k: (REDACTED if k in SECRET_SOURCE_KEYS else v) for k, v in source.items()}
