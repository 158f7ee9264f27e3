"""Export and import jobs (API.md 1.13): their rows, and the leases job workers hold on them.

``create_*_job`` queues a job and announces it on ``JOBS_CHANNEL``, so an idle worker on any node
wakes at once. A worker claims a due job (``claim_job``: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so workers on several nodes each get a different one) with a lease it renews while
it works. Every claim increments ``attempts``, which is the lease's fencing token: a worker that
lost its lease (its node stalled past ``locked_until`` and another took the job over) changes
nothing when it reports, because each write checks ``(status, locked_by, attempts)``.
Finishing a job writes its webhook event (API.md 3) in the same transaction.

How an import stores each message, and its progress, is in ``importing.py``.
"""

from __future__ import annotations

import json

import attrs

from haitatsu.storage.records import now_ns, rfc3339
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _MSG_COLUMNS, _json, _message_info, _page_where, new_id

#: The change-bus key job workers listen on: a new job is announced there.
JOBS_CHANNEL = "__jobs__"

JOB_KINDS = ("export", "import")
JOB_STATUSES = ("queued", "processing", "completed", "failed")

#: ``source`` keys never shown by the API and removed from the row once the job finishes.
SECRET_SOURCE_KEYS = ("password", "secret", "token", "access_key", "secret_key")

_TABLES = {"export": "export_jobs", "import": "import_jobs"}


@attrs.frozen
class ExportJob:
    id: str
    mailbox_id: str
    status: str
    object_key: str
    size_bytes: int
    attempts: int
    next_attempt_at: int | None
    locked_by: str
    locked_until: int | None
    last_error: dict
    expires_at: int | None
    created_at: int
    updated_at: int

    kind = "export"


@attrs.frozen
class ImportJob:
    id: str
    mailbox_id: str
    source_type: str
    source: dict
    status: str
    imported_count: int
    skipped_count: int
    #: Where a retried import resumes (the importer's own format).
    progress: dict
    attempts: int
    next_attempt_at: int | None
    locked_by: str
    locked_until: int | None
    last_error: dict
    created_at: int
    updated_at: int

    kind = "import"


@attrs.frozen
class JobFence:
    """Claim number ``attempt`` of job ``job_id`` by ``node``: every write a worker makes about
    its job carries it, and is refused once the lease passed to another claim."""

    kind: str
    job_id: str
    node: str
    attempt: int


class JobLeaseLost(Exception):
    """The job was taken over (its lease expired and another worker claimed it), or is no
    longer ``processing``: this worker must stop and leave it alone."""


_JSON_FIELDS = ("last_error", "source", "progress")


def _job(kind, row):
    cls = ExportJob if kind == "export" else ImportJob
    values = {}
    for field in attrs.fields(cls):
        value = row[field.name]
        if field.name in _JSON_FIELDS:
            value = json.loads(value or "{}")
        values[field.name] = value
    return cls(**values)


def _table(kind: str) -> str:
    try:
        return _TABLES[kind]
    except KeyError:
        raise ValueError(f"no job kind {kind!r}") from None


def without_secrets(source: dict) -> dict:
    return {k: v for k, v in source.items() if k not in SECRET_SOURCE_KEYS}


class JobsMixin(StoreBase):
    # -- creating and reading -------------------------------------------------------------

    def create_export_job(self, mailbox_id):
        """Queue an export of the mailbox (which is not checked, as in the original)."""

        async def txn_fn(txn):
            now = now_ns()
            job_id = new_id()
            await txn.execute(
                "INSERT INTO export_jobs (id, mailbox_id, status, created_at, updated_at) "
                "VALUES (?, ?, 'queued', ?, ?)",
                (job_id, mailbox_id, now, now),
            )
            await self._announce(txn, JOBS_CHANNEL, {"type": "job_queued", "kind": "export"})
            return await self._get_job(txn, "export", job_id)

        return self._run("create_export_job", txn_fn)

    def create_import_job(self, mailbox_id, source_type, source):
        """Queue an import into the mailbox; ``source`` was validated by the caller."""

        async def txn_fn(txn):
            now = now_ns()
            job_id = new_id()
            await txn.execute(
                "INSERT INTO import_jobs (id, mailbox_id, source_type, source, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (job_id, mailbox_id, source_type, _json(source), now, now),
            )
            await self._announce(txn, JOBS_CHANNEL, {"type": "job_queued", "kind": "import"})
            return await self._get_job(txn, "import", job_id)

        return self._run("create_import_job", txn_fn)

    @staticmethod
    async def _get_job(txn, kind, job_id):
        row = await txn.execute_one(f"SELECT * FROM {_table(kind)} WHERE id = ?", (job_id,))
        return _job(kind, row) if row else None

    def get_job(self, kind, job_id):
        """Fire with the ``ExportJob`` or ``ImportJob``, or None."""
        return self._run("get_job", self._get_job, kind, job_id, readonly=True)

    def list_jobs(self, kind, mailbox_id=None, limit=50, before=None):
        """Up to ``limit`` jobs, ``created_at DESC, id DESC`` after the pair ``before``."""

        async def txn_fn(txn):
            where, params = _page_where("", before)
            if mailbox_id:
                where.append("mailbox_id = ?")
                params.append(mailbox_id)
            sql = f"SELECT * FROM {_table(kind)}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [_job(kind, r) for r in await txn.execute(sql, (*params, limit))]

        return self._run("list_jobs", txn_fn, readonly=True)

    # -- workers --------------------------------------------------------------------------

    def claim_job(self, kind, node, lease_ns, now=None):
        """Claim the oldest due job of ``kind`` for ``node``; fire with it and its
        ``JobFence``, or None. Due: ``queued`` (and past ``next_attempt_at`` if set), or
        ``processing`` whose lease expired (its node died or stalled)."""
        table = _table(kind)

        async def txn_fn(txn):
            at = now_ns() if now is None else now
            row = await txn.execute_one(
                f"SELECT id FROM {table} WHERE "
                "(status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) "
                "OR (status = 'processing' AND locked_until <= ?) "
                "ORDER BY created_at, id LIMIT 1" + txn.skip_locked,
                (at, at),
            )
            if row is None:
                return None
            await txn.execute(
                f"UPDATE {table} SET status = 'processing', locked_by = ?, locked_until = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (node, at + lease_ns, at, row["id"]),
            )
            job = await self._get_job(txn, kind, row["id"])
            return job, JobFence(kind, job.id, node, job.attempts)

        return self._run("claim_job", txn_fn)

    @staticmethod
    async def _check_fence(txn, fence: JobFence) -> dict:
        """Lock the job row and check the lease is still ``fence``'s; the row, else
        ``JobLeaseLost``."""
        row = await txn.execute_one(
            f"SELECT * FROM {_table(fence.kind)} WHERE id = ?" + txn.for_update, (fence.job_id,)
        )
        if row is None or (row["status"], row["locked_by"], row["attempts"]) != (
            "processing",
            fence.node,
            fence.attempt,
        ):
            raise JobLeaseLost(fence.job_id)
        return row

    def renew_job_lease(self, fence: JobFence, until):
        """Extend the lease to ``until``; fire with False if it is no longer ``fence``'s."""

        async def txn_fn(txn):
            await txn.execute(
                f"UPDATE {_table(fence.kind)} SET locked_until = ? WHERE id = ? "
                "AND status = 'processing' AND locked_by = ? AND attempts = ?",
                (until, fence.job_id, fence.node, fence.attempt),
            )
            return txn.rowcount == 1

        return self._run("renew_job_lease", txn_fn)

    def requeue_job(self, fence: JobFence, error=None, next_attempt_at=None, count_attempt=True):
        """Put the job back to ``queued`` (due at ``next_attempt_at``, at once if None), noting
        ``error`` in ``last_error``; ``count_attempt=False`` gives the claim back (a node that
        stops hands its job on without using up an attempt). Fire with whether the lease was
        still ``fence``'s."""

        async def txn_fn(txn):
            try:
                await self._check_fence(txn, fence)
            except JobLeaseLost:
                return False
            at = now_ns()
            await txn.execute(
                f"UPDATE {_table(fence.kind)} SET status = 'queued', locked_by = '', "
                "locked_until = NULL, next_attempt_at = ?, attempts = attempts - ?, "
                "last_error = CASE WHEN ? = '' THEN last_error ELSE ? END, updated_at = ? "
                "WHERE id = ?",
                (
                    next_attempt_at,
                    0 if count_attempt else 1,
                    "" if error is None else _json({"error": error}),
                    "" if error is None else _json({"error": error}),
                    at,
                    fence.job_id,
                ),
            )
            return True

        return self._run("requeue_job", txn_fn)

    def finish_export_job(
        self, fence: JobFence, object_key="", size_bytes=0, expires_at=None, error=None
    ):
        """Settle an export: ``completed`` with its object, or ``failed`` with ``error``
        (when given). Writes ``mailbox.export_completed`` or ``mailbox.export_failed`` in the
        same transaction. Fire with whether the lease was still ``fence``'s."""

        async def txn_fn(txn):
            try:
                row = await self._check_fence(txn, fence)
            except JobLeaseLost:
                return False
            at = now_ns()
            if error is None:
                await txn.execute(
                    "UPDATE export_jobs SET status = 'completed', object_key = ?, "
                    "size_bytes = ?, expires_at = ?, locked_by = '', locked_until = NULL, "
                    "last_error = '{}', updated_at = ? WHERE id = ?",
                    (object_key, size_bytes, expires_at, at, fence.job_id),
                )
                payload = {
                    "event": "mailbox.export_completed",
                    "export_id": fence.job_id,
                    "mailbox_id": row["mailbox_id"],
                    "object_key": object_key,
                    "expires_at": rfc3339(expires_at),
                }
            else:
                await txn.execute(
                    "UPDATE export_jobs SET status = 'failed', locked_by = '', "
                    "locked_until = NULL, last_error = ?, updated_at = ? WHERE id = ?",
                    (_json({"error": error}), at, fence.job_id),
                )
                payload = {
                    "event": "mailbox.export_failed",
                    "export_id": fence.job_id,
                    "mailbox_id": row["mailbox_id"],
                    "error": error,
                }
            await self._record_event(txn, payload["event"], payload, mailbox_id=row["mailbox_id"])
            return True

        return self._run("finish_export_job", txn_fn)

    def finish_import_job(self, fence: JobFence, error=None, note=None):
        """Settle an import: ``completed`` (``note`` in ``last_error`` if given: what it
        skipped) or ``failed`` with ``error``. The source's secrets are removed from the row;
        ``mailbox.import_completed`` or ``mailbox.import_failed`` is written in the same
        transaction. Fire with whether the lease was still ``fence``'s."""

        async def txn_fn(txn):
            try:
                row = await self._check_fence(txn, fence)
            except JobLeaseLost:
                return False
            at = now_ns()
            source = without_secrets(json.loads(row["source"] or "{}"))
            status = "completed" if error is None else "failed"
            text = error if error is not None else note
            await txn.execute(
                "UPDATE import_jobs SET status = ?, source = ?, locked_by = '', "
                "locked_until = NULL, last_error = ?, updated_at = ? WHERE id = ?",
                (status, _json(source), _json({"error": text} if text else {}), at, fence.job_id),
            )
            payload = {
                "event": f"mailbox.import_{status}",
                "import_id": fence.job_id,
                "mailbox_id": row["mailbox_id"],
            }
            if error is None:
                payload["imported_count"] = row["imported_count"]
            else:
                payload["error"] = error
            await self._record_event(txn, payload["event"], payload, mailbox_id=row["mailbox_id"])
            return True

        return self._run("finish_import_job", txn_fn)

    # -- exports --------------------------------------------------------------------------

    def export_messages(self, mailbox_id, after="", limit=200):
        """The next ``limit`` messages of the mailbox to export, by message id after ``after``:
        each stored message that has a non-deleted placement in the mailbox, once (a message
        placed twice is one file), as ``(MessageInfo, internal date)``, the internal date
        being its earliest placement's."""

        async def txn_fn(txn):
            rows = await txn.execute(
                f"SELECT {_MSG_COLUMNS}, (SELECT MIN(mm.internal_date) FROM mailbox_messages mm "
                "WHERE mm.message_id = m.id AND mm.mailbox_id = ? AND mm.deleted_at IS NULL) "
                "AS internal_date FROM messages m WHERE m.id > ? AND m.id IN "
                "(SELECT mm.message_id FROM mailbox_messages mm WHERE mm.mailbox_id = ? "
                "AND mm.deleted_at IS NULL) ORDER BY m.id LIMIT ?",
                (mailbox_id, after, mailbox_id, limit),
            )
            return [(_message_info(r), r["internal_date"]) for r in rows]

        return self._run("export_messages", txn_fn, readonly=True)

    def expired_exports(self, now=None, limit=100):
        """Exports whose ``expires_at`` has passed (API.md 5.7), oldest first."""

        async def txn_fn(txn):
            at = now_ns() if now is None else now
            rows = await txn.execute(
                "SELECT * FROM export_jobs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "ORDER BY expires_at, id LIMIT ?",
                (at, limit),
            )
            return [_job("export", r) for r in rows]

        return self._run("expired_exports", txn_fn, readonly=True)

    def delete_export_job(self, job_id):
        """Delete an export's row (its object is the caller's to delete first)."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM export_jobs WHERE id = ?", (job_id,))
            return txn.rowcount == 1

        return self._run("delete_export_job", txn_fn)
