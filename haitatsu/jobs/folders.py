"""Naming an imported folder the way haitatsu names it (API.md 1.13: "Sent Items" becomes
``Sent``, "Spam" becomes ``Junk``).

A source folder arrives as its hierarchy levels (split on the source's delimiter) and, from an
IMAP server, its SPECIAL-USE attribute. The attribute wins; else the whole name, or a well-known
name under ``INBOX`` (Courier and Dovecot's ``INBOX.`` namespaces) or ``[Gmail]``, is looked up
among the names clients and servers give the special folders. Anything else keeps its levels,
joined by ``/``, each made a valid level of ours (no control characters, no ``/``, no ``.`` or
``..``).
"""

from __future__ import annotations

import attrs

#: SPECIAL-USE attributes (RFC 6154) and the system folder they map to. Gmail's ``\All`` (every
#: message) lands in Archive: imported last, it brings only what no other folder had.
SPECIAL_USE = {
    "\\sent": ("Sent", "\\Sent"),
    "\\drafts": ("Drafts", "\\Drafts"),
    "\\trash": ("Trash", "\\Trash"),
    "\\junk": ("Junk", "\\Junk"),
    "\\archive": ("Archive", "\\Archive"),
    "\\all": ("Archive", "\\Archive"),
}

#: Folders that are views of messages found elsewhere (Gmail's Starred and Important), or not
#: folders at all: not imported.
SKIPPED_ATTRIBUTES = ("\\noselect", "\\nonexistent", "\\flagged", "\\important")

_NAMES = {
    "INBOX": ["inbox"],
    "Sent": [
        "sent",
        "sent items",
        "sent messages",
        "sent mail",
        "sent-mail",
        "sentmail",
        "gesendet",
        "gesendete elemente",
        "envoyés",
        "éléments envoyés",
        "enviados",
        "posta inviata",
    ],
    "Drafts": ["drafts", "draft", "entwürfe", "brouillons", "borradores", "bozze"],
    "Trash": [
        "trash",
        "deleted items",
        "deleted messages",
        "deleted",
        "bin",
        "papierkorb",
        "gelöschte elemente",
        "corbeille",
        "papelera",
        "cestino",
    ],
    "Junk": [
        "junk",
        "spam",
        "junk e-mail",
        "junk email",
        "junk mail",
        "bulk mail",
        "spamverdacht",
        "courrier indésirable",
        "correo no deseado",
        "posta indesiderata",
    ],
    "Archive": ["archive", "archives", "archiv", "archivo", "archivio"],
}

_SPECIAL_OF = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
    "INBOX": "",
}

WELL_KNOWN = {alias: name for name, aliases in _NAMES.items() for alias in aliases}

#: Parents under which a well-known name still means the special folder.
_CONTAINERS = ("inbox", "[gmail]", "[google mail]")


@attrs.frozen
class LocalFolder:
    """Where an imported folder's messages go: a folder name, and the SPECIAL-USE attribute
    that picks the mailbox's own folder first (so a mailbox whose Sent folder was renamed still
    gets sent mail in it)."""

    name: str
    special_use: str = ""


def clean_level(level: str) -> str:
    """One hierarchy level as a valid level of ours ("" when nothing is left)."""
    text = "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in level).strip()
    text = text.replace("/", "_")
    if text in (".", ".."):
        text = "_" * len(text)
    return text[:200]


def local_folder(levels, attributes=()) -> LocalFolder:
    """The ``LocalFolder`` for a source folder with these levels and LIST attributes."""
    for attribute in attributes:
        special = SPECIAL_USE.get(attribute.lower())
        if special is not None:
            return LocalFolder(*special)
    cleaned = [c for c in (clean_level(level) for level in levels) if c]
    if not cleaned:
        return LocalFolder("INBOX")
    whole = " ".join("/".join(cleaned).lower().split())
    name = WELL_KNOWN.get(whole)
    if name is None and len(cleaned) == 2 and cleaned[0].lower() in _CONTAINERS:
        name = WELL_KNOWN.get(" ".join(cleaned[1].lower().split()))
    if name is not None:
        return LocalFolder(name, _SPECIAL_OF[name])
    if cleaned[0].upper() == "INBOX":
        cleaned[0] = "INBOX"
    return LocalFolder("/".join(cleaned)[:1000].rstrip("/"))


def skipped(attributes) -> bool:
    return any(a.lower() in SKIPPED_ATTRIBUTES for a in attributes)


def import_order(name: str, attributes=()) -> tuple:
    """Sort key of a source folder: INBOX first, ``\\All`` last, the rest by name."""
    lowered = [a.lower() for a in attributes]
    if "\\all" in lowered:
        return (2, name)
    return (0 if name.upper() == "INBOX" else 1, name)
