"""Importing mbox files (our addition to the contract's source types).

``path`` is one mbox file, imported into INBOX, or a directory of them (as mutt, Thunderbird and
Apple Mail keep them): each file is a folder named by its path below the directory, with
Thunderbird's ``.sbd`` suffix dropped from directory levels and its ``.msf`` index files
ignored. A file counts only if it starts with a ``From `` line. Messages are split on ``From ``
lines by Python's ``mailbox.mbox``; ``>From`` quoting is left as it is (mboxo and mboxrd cannot
be told apart).

Flags come from the ``Status`` (``R`` seen) and ``X-Status`` (``A`` answered, ``F`` flagged,
``T`` draft, ``D`` deleted) header fields mail readers write; the internal date from the
``From `` line. The resume marker is the message's position in the file.
"""

from __future__ import annotations

import calendar
import mailbox
import os
import re
import time

from haitatsu.jobs import spool
from haitatsu.jobs.common import FileSource, SourceError, SourceFolder, SourceMessage
from haitatsu.jobs.sources import inside

_X_STATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}

_IGNORED_SUFFIXES = (".msf", ".dat", ".json", ".lock", ".html")


def is_mbox(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def list_folders(root: str) -> list[SourceFolder]:
    if os.path.isfile(root):
        if not is_mbox(root):
            raise SourceError("the file is not an mbox (it does not start with a From line)")
        return [SourceFolder("", ("INBOX",))]
    if not os.path.isdir(root):
        raise SourceError("the mbox path is neither a file nor a directory")
    folders = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(directory, name)
            if name.startswith(".") or name.lower().endswith(_IGNORED_SUFFIXES):
                continue
            if not inside(root, path) or not is_mbox(path):
                continue
            relative = os.path.relpath(path, root)
            levels = [p[:-4] if p.endswith(".sbd") else p for p in relative.split(os.sep)]
            folders.append(SourceFolder(relative, tuple(levels)))
    if not folders:
        raise SourceError("no mbox file found at the path")
    return folders


def from_line_date(line: bytes) -> int | None:
    """The internal date (ns) of an mbox ``From sender date`` line (asctime, UTC), or None."""
    m = re.search(
        rb"([A-Z][a-z]{2}) +([A-Z][a-z]{2}) +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))? +"
        rb"(?:[A-Z]{3,4} +|[+-]\d{4} +)?(\d{4})",
        line,
    )
    if m is None:
        return None
    try:
        parsed = time.strptime(
            "{} {} {:02d}:{}:{} {}".format(
                m.group(2).decode(),
                m.group(3).decode(),
                int(m.group(4)),
                m.group(5).decode(),
                (m.group(6) or b"00").decode(),
                m.group(7).decode(),
            ),
            "%b %d %H:%M:%S %Y",
        )
    except ValueError:
        return None
    return calendar.timegm(parsed) * 1_000_000_000


def flags_from_headers(fields: dict[str, str]) -> tuple[str, ...]:
    flags = []
    if "R" in fields.get("status", ""):
        flags.append("\\Seen")
    for letter in fields.get("x-status", ""):
        flag = _X_STATUS.get(letter)
        if flag and flag not in flags:
            flags.append(flag)
    return tuple(flags)


class _Mbox:
    """One open mbox file, used from one thread at a time."""

    def __init__(self, path: str):
        try:
            self.box = mailbox.mbox(path, create=False)
            self.keys = sorted(self.box.keys())
        except (OSError, mailbox.Error) as e:
            raise SourceError(f"cannot read the mbox: {e}") from None

    def copy(self, key, spool_dir, limit):
        """Spool message ``key``; ``(path, flags, internal date)``."""
        source = self.box.get_file(key, from_=True)
        try:
            first = source.readline()
            path = spool.copy_to_spool(source, spool_dir, limit, crlf=True)
        finally:
            source.close()
        try:
            fields = spool.header_fields(path, ("status", "x-status"))
        except BaseException:
            spool.remove(path)
            raise
        return path, flags_from_headers(fields), from_line_date(first)

    def close(self):
        self.box.close()


class MboxSource(FileSource):
    """mbox files below the import directory (``path`` resolved by ``sources.resolve_path``)."""

    list_folders = staticmethod(list_folders)

    async def messages(self, folder: SourceFolder, after):
        path = os.path.join(self.path, folder.key) if folder.key else self.path
        box = await self._thread(_Mbox, path)
        try:
            for key in box.keys:
                if after is not None and key <= after:
                    continue
                try:
                    spooled, flags, date = await self._thread(
                        box.copy, key, self.spool_dir, self.limit
                    )
                except spool.TooLarge:
                    spooled, flags, date = None, (), None
                yield SourceMessage(key, spooled, flags, date)
        finally:
            await self._thread(box.close)
