"""Writing a mailbox's export: a ZIP of ``messages/<message_id>.eml`` (API.md 1.13).

The ZIP is written to a spool file by ``zipfile`` in a thread, one message at a time straight
from the store's file for it (``IMailStore.open_message``), so neither the mailbox nor one
message is ever held in memory; then the worker puts the file in the blob store. Each entry
holds the message byte for byte as it was received, deflated, dated with the message's
internal date (UTC). A message placed twice in the mailbox is one entry; deleted placements
are left out.
"""

from __future__ import annotations

import datetime
import shutil
import zipfile

#: How long a finished export is kept (API.md 1.13: 15 days).
EXPORT_LIFETIME_SECONDS = 15 * 24 * 3600

CHUNK = 256 * 1024

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def object_key(job_id: str) -> str:
    return f"exports/{job_id}"


def zip_time(ns: int | None) -> tuple:
    """A ZIP entry time (UTC) for nanoseconds since the epoch; ZIP cannot go before 1980."""
    if ns is None:
        return _ZIP_EPOCH
    when = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    return max(stamp, _ZIP_EPOCH)


def open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)


def add_entry(archive: zipfile.ZipFile, name: str, source, size: int, date: tuple):
    info = zipfile.ZipInfo(name, date_time=date)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size  # lets zipfile choose ZIP64 for entries past 2 GiB up front
    with archive.open(info, "w") as out:
        shutil.copyfileobj(source, out, CHUNK)


async def write_export(store, mailbox_id: str, path: str, run_in_thread, check=None) -> int:
    """Write the mailbox's export to ``path``; return how many messages it holds.
    ``run_in_thread(fn, *args)`` runs blocking work; ``check()`` is called before each message
    and may raise to stop."""
    archive = await run_in_thread(open_zip, path)
    count = 0
    try:
        after = ""
        while True:
            batch = await store.export_messages(mailbox_id, after)
            if not batch:
                break
            for info, internal_date in batch:
                if check is not None:
                    check()
                f = await store.open_message(info)
                try:
                    await run_in_thread(
                        add_entry,
                        archive,
                        f"messages/{info.id}.eml",
                        f,
                        info.size_bytes,
                        zip_time(internal_date),
                    )
                finally:
                    f.close()
                count += 1
            after = batch[-1][0].id
    finally:
        await run_in_thread(archive.close)
    return count


async def remove_expired_exports(store, now_ns: int, should_continue=None) -> dict:
    """Delete every export whose ``expires_at`` has passed: its object, then its row (API.md
    5.7). An object already gone is no error; a row stays when its object could not be
    deleted, for the next run. Returns ``{"removed": n}``."""
    removed = 0
    while should_continue is None or should_continue():
        expired = await store.expired_exports(now=now_ns)
        if not expired:
            break
        for job in expired:
            if job.object_key:
                await store.blobs.delete_object(job.object_key)
            if await store.delete_export_job(job.id):
                removed += 1
        if len(expired) < 100:
            break
    return {"removed": removed}
