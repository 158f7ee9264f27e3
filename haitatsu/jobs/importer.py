"""Running one import job: every folder of its source, every message, in order, resumably.

Folders come in the source's order; each is named for haitatsu by ``folders.local_folder``.
Every message goes through ``IMailStore.import_message`` with the job's resume marker
``{"done": [finished folder keys], "folder": key, "after": message key}``, which the store
commits with the message, so a job claimed again after its node died skips the folders it
finished and the messages it stored. Spool files are removed whatever happens.
"""

from __future__ import annotations

from contextlib import aclosing

from haitatsu.jobs import spool
from haitatsu.jobs.common import SourceError
from haitatsu.jobs.folders import local_folder
from haitatsu.jobs.imap import IMAPSource
from haitatsu.jobs.maildir import MaildirSource
from haitatsu.jobs.mbox import MboxSource
from haitatsu.jobs.sources import check_source, resolve_path, zip_object_key
from haitatsu.jobs.zipsource import ZipSource


def open_source(job, import_root: str, store, spool_dir: str, limit: int, reactor):
    """The source object of an import job, checked again against the live configuration
    (``SourceError`` when it no longer passes, e.g. ``imports.root`` changed)."""
    from haitatsu.jobs.sources import SourceInvalid

    try:
        source = check_source(job.source_type, job.source, import_root)
        if job.source_type == "maildir":
            return MaildirSource(
                resolve_path(source["path"], import_root), spool_dir, limit, reactor
            )
        if job.source_type == "mbox":
            return MboxSource(resolve_path(source["path"], import_root), spool_dir, limit, reactor)
        if job.source_type == "zip":
            return ZipSource(store.blobs, zip_object_key(source), spool_dir, limit, reactor)
        return IMAPSource(source, spool_dir, limit, reactor)
    except SourceInvalid as e:
        raise SourceError(e.message) from None


class Importer:
    """Imports ``source`` into the job's mailbox; ``check()`` runs before each message and may
    raise to stop (the node is stopping, the lease was lost)."""

    def __init__(self, store, job, fence, source, check=None):
        self.store = store
        self.job = job
        self.fence = fence
        self.source = source
        self.check = check or (lambda: None)
        self.imported = 0
        self.skipped = 0

    async def run(self):
        progress = dict(self.job.progress or {})
        done = list(progress.get("done", []))
        try:
            await self.source.open()
            for folder in await self.source.folders():
                if folder.key in done:
                    continue
                after = progress.get("after") if progress.get("folder") == folder.key else None
                await self._folder(folder, after, done)
                done.append(folder.key)
                self.check()
                await self.store.advance_import(self.fence, {"done": done})
        finally:
            await self.source.close()

    async def _folder(self, folder, after, done):
        target = local_folder(folder.levels, folder.attributes)
        self.check()
        await self.store.import_folder(
            self.fence, self.job.mailbox_id, target.name, target.special_use
        )
        async with aclosing(self.source.messages(folder, after)) as messages:
            async for item in messages:
                try:
                    self.check()
                    marker = {"done": done, "folder": folder.key, "after": item.key}
                    if item.path is None:
                        self.skipped += 1
                        await self.store.advance_import(self.fence, marker, skipped=1)
                        continue
                    stored = await self.store.import_message(
                        self.fence,
                        item.path,
                        self.job.mailbox_id,
                        target.name,
                        flags=item.flags,
                        internal_date=item.internal_date,
                        progress=marker,
                        special_use=target.special_use,
                        trace_id=self.job.id,
                    )
                    if stored:
                        self.imported += 1
                finally:
                    spool.remove(item.path)


__all__ = ["Importer", "SourceError", "open_source"]
