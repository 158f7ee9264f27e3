"""What every import source hands the importer: folders, and messages spooled to files."""

from __future__ import annotations

import attrs
from twisted.internet.threads import deferToThreadPool


class SourceError(Exception):
    """The source cannot be read (no such directory, a broken ZIP, the IMAP server refused the
    login): the import fails with this text in ``last_error``."""


@attrs.frozen
class SourceFolder:
    """One folder of a source. ``key`` names it in the job's resume marker (stable across
    attempts); ``levels`` are its hierarchy levels and ``attributes`` its IMAP LIST
    attributes, from which ``folders.local_folder`` names the folder it is imported into."""

    key: str
    levels: tuple[str, ...]
    attributes: tuple[str, ...] = ()


@attrs.frozen
class SourceMessage:
    """One message of a folder, spooled to ``path`` (None when it was over the size limit and
    is skipped). ``key`` orders it within its folder and is the resume marker after it (any
    JSON value the source understands); ``internal_date`` is in nanoseconds, or None."""

    key: object
    path: str | None
    flags: tuple[str, ...] = ()
    internal_date: int | None = None


class FileSource:
    """A source read from files below the import directory (maildir, mbox): ``path`` as
    ``sources.resolve_path`` resolved it, messages over ``limit`` bytes skipped, file work in
    the reactor's thread pool. Subclasses give ``list_folders(root)`` and ``messages``."""

    #: ``list_folders(root) -> list[SourceFolder]``, run in a thread.
    list_folders = None

    def __init__(self, path: str, spool_dir: str, limit: int, reactor):
        self.path = path
        self.spool_dir = spool_dir
        self.limit = limit
        self._reactor = reactor

    def _thread(self, fn, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def open(self):
        pass

    async def close(self):
        pass

    async def folders(self) -> list[SourceFolder]:
        return await self._thread(type(self).list_folders, self.path)
