"""Storing the messages of an import job (API.md 1.13).

``import_message`` goes through the delivery path every message takes (parse, split, lease and
put the blobs, one metadata transaction) with three differences the contract asks for:

- a message whose bytes the mailbox already holds (same SHA-256, not deleted) is skipped;
- the quota is not enforced, but ``used_bytes`` grows (API.md 5.6);
- the target folder is created (with its parents) when the mailbox does not have it.

The transaction that places a message also advances the job's ``imported_count`` and resume
marker, and checks the job's lease (its ``JobFence``) first: a worker that lost its job stores
nothing more, and a job retried after its node died resumes exactly after the last message
that was committed. Between the resume marker and the duplicate check, a retried import never
places a message twice.
"""

from __future__ import annotations

from haitatsu.interfaces import NoSuchFolder
from haitatsu.storage.blobs import hash_file
from haitatsu.storage.records import Delivery, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _folder, _json, _log, folder_name, new_id
from haitatsu.storage.store.jobs import JobFence, JobLeaseLost


class ImportTargetGone(Exception):
    """The mailbox an import writes to does not exist (any more), or was deleted."""


class ImportingMixin(StoreBase):
    def import_message(
        self,
        fence: JobFence,
        spool_path: str,
        mailbox_id: str,
        folder: str,
        flags=(),
        internal_date=None,
        progress=None,
        special_use: str = "",
        trace_id: str = "",
    ):
        """Store the message in ``spool_path`` in ``folder`` of the mailbox for the import job
        ``fence`` holds, with ``flags`` and ``internal_date`` (ns; now if None), and record
        ``progress`` as the job's resume marker. ``special_use`` (``\\Sent`` ...) picks the
        mailbox's folder with that attribute before ``folder`` is looked up by name.

        Fire with True when the message was stored, False when the mailbox already held it.
        Fails with ``JobLeaseLost`` (nothing stored) when the job is no longer this worker's,
        ``ImportTargetGone`` when the mailbox is missing or deleted.
        """
        from twisted.internet import defer

        return defer.Deferred.fromCoroutine(
            self._import_message(
                fence,
                spool_path,
                mailbox_id,
                folder_name(folder),
                tuple(flags),
                internal_date,
                progress or {},
                special_use,
                trace_id or fence.job_id,
            )
        )

    async def _import_message(
        self,
        fence,
        spool_path,
        mailbox_id,
        folder,
        flags,
        internal_date,
        progress,
        special_use,
        trace_id,
    ):
        sha256, _ = await self._thread(hash_file, spool_path)
        if await self._run("import_has_message", self._holds, mailbox_id, sha256, readonly=True):
            await self.advance_import(fence, progress)
            return False

        async def commit(prepared, parsed, generations):
            async def txn_fn(txn):
                await self._check_fence(txn, fence)
                await self._import_target(txn, mailbox_id)
                if await self._holds(txn, mailbox_id, prepared.sha256):
                    await self._advance(txn, fence, progress, 0, 0)
                    return None
                target = await self._import_folder(txn, mailbox_id, folder, special_use)
                now = now_ns()
                message_id = new_id()
                await self._reference_blobs(txn, generations, now)
                await self._insert_message(txn, message_id, prepared, parsed, trace_id, None, now)
                # Imports are not quota-checked (API.md 5.6); the bytes still count.
                await txn.execute(
                    "UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ?",
                    (prepared.size, mailbox_id),
                )
                delivery = Delivery(mailbox_id=mailbox_id, folder=target, flags=flags)
                mm = await self._place_message(
                    txn, message_id, delivery, prepared.size, internal_date or now, now
                )
                await self._advance(txn, fence, progress, 1, 0)
                return mm

            return await self._run("import_message", txn_fn)

        placed, _ = await self._store_message(spool_path, trace_id, commit)
        return placed is not None

    def import_folder(self, fence: JobFence, mailbox_id: str, folder: str, special_use=""):
        """Make sure the folder an import fills exists (an empty source folder is imported as
        an empty folder); fire with its name. ``JobLeaseLost`` and ``ImportTargetGone`` as for
        ``import_message``."""
        name = folder_name(folder)

        async def txn_fn(txn):
            await self._check_fence(txn, fence)
            await self._import_target(txn, mailbox_id)
            return await self._import_folder(txn, mailbox_id, name, special_use)

        return self._run("import_folder", txn_fn)

    @staticmethod
    async def _import_target(txn, mailbox_id):
        mailbox = await txn.execute_one(
            "SELECT id FROM mailboxes WHERE id = ? AND deleted_at IS NULL", (mailbox_id,)
        )
        if mailbox is None:
            raise ImportTargetGone(mailbox_id)

    @staticmethod
    async def _holds(txn, mailbox_id, sha256) -> bool:
        row = await txn.execute_one(
            "SELECT 1 AS found FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
            "WHERE m.sha256 = ? AND mm.mailbox_id = ? AND mm.deleted_at IS NULL LIMIT 1",
            (sha256, mailbox_id),
        )
        return row is not None

    async def _import_folder(self, txn, mailbox_id, name, special_use) -> str:
        """The name of the folder an imported message goes to: the mailbox's folder with
        ``special_use`` if it has one, else ``name``, created with its parents if missing."""
        if special_use:
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = ? "
                "ORDER BY created_at, id LIMIT 1",
                (mailbox_id, special_use),
            )
            if row is not None:
                return _folder(row).name
        existing = await self._get_folder(txn, mailbox_id, name)
        if existing is not None:
            return existing.name
        if name.upper() == "INBOX":
            raise NoSuchFolder(f"mailbox {mailbox_id} has no INBOX")
        folders = await self._mailbox_folders(txn, mailbox_id)
        notes: list = []
        await self._create_parents(txn, mailbox_id, name, folders, notes)
        await self._insert_folder(txn, mailbox_id, name, "", True, notes)
        for mailbox, change in notes:
            await self._announce(txn, mailbox, change)
        _log.info(
            "import created folder {folder} in {mailbox_id}", folder=name, mailbox_id=mailbox_id
        )
        return name

    @staticmethod
    async def _advance(txn, fence, progress, imported, skipped):
        await txn.execute(
            "UPDATE import_jobs SET imported_count = imported_count + ?, "
            "skipped_count = skipped_count + ?, progress = ?, updated_at = ? WHERE id = ? "
            "AND status = 'processing' AND locked_by = ? AND attempts = ?",
            (imported, skipped, _json(progress), now_ns(), fence.job_id, fence.node, fence.attempt),
        )
        if txn.rowcount != 1:
            raise JobLeaseLost(fence.job_id)

    def advance_import(self, fence: JobFence, progress, skipped: int = 0):
        """Record ``progress`` (and ``skipped`` messages left out) without storing a message:
        a duplicate, a message over the size limit, a folder finished. Fails with
        ``JobLeaseLost`` when the job is no longer ``fence``'s."""

        async def txn_fn(txn):
            await self._advance(txn, fence, progress, 0, skipped)

        return self._run("advance_import", txn_fn)
