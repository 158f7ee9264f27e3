"""Importing a Maildir (Maildir++, as Dovecot and Courier write it).

The directory itself is INBOX; each subdirectory ``.Name.Sub`` with ``cur/`` or ``new/`` is the
folder ``Name/Sub`` (levels in IMAP's modified UTF-7, as Dovecot stores them). A message's flags
are the letters after ``:2,`` in its file name (``S`` seen, ``R`` replied, ``F`` flagged, ``T``
trashed, ``D`` draft, ``P`` passed, which becomes ``$Forwarded``) and Dovecot's keyword letters
``a``-``z`` named in the folder's ``dovecot-keywords`` file; a message still in ``new/`` has
none. Its internal date is the file's modification time, as Dovecot reads it.

Messages of a folder are imported in the order of their unique names (before the ``:``), which
is also the resume marker. Every path is checked to resolve inside the import directory.
"""

from __future__ import annotations

import os

from haitatsu.jobs import spool
from haitatsu.jobs.common import FileSource, SourceError, SourceFolder, SourceMessage
from haitatsu.jobs.sources import inside

_FLAG_LETTERS = {
    "S": "\\Seen",
    "R": "\\Answered",
    "F": "\\Flagged",
    "T": "\\Deleted",
    "D": "\\Draft",
    "P": "$Forwarded",
}

#: The info separators seen in the wild: ``:`` (the standard), ``!`` and ``;`` (file systems
#: where ``:`` is not allowed).
_INFO_SEPARATORS = (":2,", "!2,", ";2,")


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new"))


def _decode(level: str) -> str:
    try:
        import twisted.mail.imap4  # noqa: F401  (registers the imap4-utf-7 codec)

        return level.encode("ascii").decode("imap4-utf-7")
    except (UnicodeError, ValueError):
        return level


def split_name(filename: str) -> tuple[str, str]:
    """``(unique name, info)`` of a maildir file name; info is the flag letters."""
    for separator in _INFO_SEPARATORS:
        unique, found, info = filename.partition(separator)
        if found:
            return unique, info
    return filename, ""


def read_keywords(folder: str) -> dict[str, str]:
    """Dovecot's ``dovecot-keywords``: keyword letter (``a`` is 0) to keyword."""
    keywords = {}
    try:
        with open(os.path.join(folder, "dovecot-keywords"), encoding="utf-8") as f:
            for line in f:
                number, _, name = line.strip().partition(" ")
                if number.isdigit() and int(number) < 26 and name:
                    keywords[chr(ord("a") + int(number))] = name
    except (OSError, UnicodeError):
        pass
    return keywords


def flags_of(info: str, keywords: dict[str, str]) -> tuple[str, ...]:
    flags = []
    for letter in info:
        flag = _FLAG_LETTERS.get(letter) or keywords.get(letter)
        if flag and flag not in flags:
            flags.append(flag)
    return tuple(flags)


def list_folders(root: str) -> list[SourceFolder]:
    if not os.path.isdir(root):
        raise SourceError("the maildir path is not a directory")
    folders = []
    if is_maildir(root):
        folders.append(SourceFolder("", ("INBOX",)))
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not name.startswith(".") or name in (".", "..") or not inside(root, path):
            continue
        if is_maildir(path):
            levels = tuple(_decode(level) for level in name[1:].split("."))
            folders.append(SourceFolder(name, levels))
    if not folders:
        raise SourceError("no maildir found at the path (no cur/ or new/ directory)")
    return folders


def list_messages(root: str, key: str) -> list[tuple[str, str, str]]:
    """``(unique name, path, info)`` of every message of the folder, in unique-name order."""
    folder = os.path.join(root, key) if key else root
    found = []
    for sub in ("cur", "new"):
        directory = os.path.join(folder, sub)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(".") or not os.path.isfile(path) or not inside(root, path):
                continue
            unique, info = split_name(name)
            found.append((unique, path, info if sub == "cur" else ""))
    found.sort()
    return found


class MaildirSource(FileSource):
    """A maildir below the import directory (``path`` resolved by ``sources.resolve_path``)."""

    list_folders = staticmethod(list_folders)

    async def messages(self, folder: SourceFolder, after):
        entries = await self._thread(list_messages, self.path, folder.key)
        keywords = await self._thread(
            read_keywords, os.path.join(self.path, folder.key) if folder.key else self.path
        )
        for unique, path, info in entries:
            if after is not None and unique <= after:
                continue
            try:
                mtime = (await self._thread(os.stat, path)).st_mtime_ns
                spooled = await self._thread(
                    spool.copy_file, path, self.spool_dir, self.limit, True
                )
            except spool.TooLarge:
                spooled = None
            except FileNotFoundError:
                continue  # moved (new/ to cur/) or deleted since the listing
            yield SourceMessage(unique, spooled, flags_of(info, keywords), mtime)
