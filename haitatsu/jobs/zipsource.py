"""Importing a ZIP from the blob store (API.md 1.13: ``object_key``, every ``*.eml`` to INBOX).

The object is opened through the blob store (``IBlobStore.open_object``: a local file, or an S3
download spooled to disk) and read with ``zipfile`` in a thread, one entry at a time. Entries
are copied as they are (an export of ours holds messages byte for byte), and an entry whose size
passes the limit is skipped however its header declares it. An entry's time becomes the
message's internal date (ZIP times have no zone: taken as UTC, as our exports write them). The
resume marker is the entry's position among the ``.eml`` entries.
"""

from __future__ import annotations

import calendar
import zipfile

from twisted.internet.threads import deferToThreadPool

from haitatsu.jobs import spool
from haitatsu.jobs.common import SourceError, SourceFolder, SourceMessage


def _entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [
        info
        for info in archive.infolist()
        if not info.is_dir() and info.filename.lower().endswith(".eml")
    ]


def _open_archive(f):
    try:
        archive = zipfile.ZipFile(f)
        return archive, _entries(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise SourceError(f"the object is not a readable ZIP: {e}") from None


def _extract(archive, info, spool_dir, limit) -> str:
    if info.file_size > limit:
        raise spool.TooLarge(info.file_size)
    try:
        with archive.open(info) as entry:
            return spool.copy_to_spool(entry, spool_dir, limit, crlf=False)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        raise SourceError(f"cannot read {info.filename} from the ZIP: {e}") from None


def entry_date(info: zipfile.ZipInfo) -> int | None:
    try:
        return calendar.timegm((*info.date_time, 0, 0, 0)) * 1_000_000_000
    except (ValueError, OverflowError):
        return None


class ZipSource:
    def __init__(self, blobs, object_key: str, spool_dir: str, limit: int, reactor):
        self.blobs = blobs
        self.object_key = object_key
        self.spool_dir = spool_dir
        self.limit = limit
        self._reactor = reactor
        self._file = None
        self._archive = None
        self._entries = []

    def _thread(self, fn, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def open(self):
        try:
            self._file = await self.blobs.open_object(self.object_key)
        except KeyError:
            raise SourceError(f"no object {self.object_key} in the blob store") from None
        self._archive, self._entries = await self._thread(_open_archive, self._file)

    async def close(self):
        if self._archive is not None:
            await self._thread(self._archive.close)
        if self._file is not None:
            await self._thread(self._file.close)

    async def folders(self) -> list[SourceFolder]:
        return [SourceFolder("INBOX", ("INBOX",))]

    async def messages(self, folder: SourceFolder, after):
        for index, info in enumerate(self._entries):
            if after is not None and index <= after:
                continue
            try:
                path = await self._thread(_extract, self._archive, info, self.spool_dir, self.limit)
            except spool.TooLarge:
                path = None
            yield SourceMessage(index, path, (), entry_date(info))
