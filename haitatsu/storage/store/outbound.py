"""The outbound queue's rows: jobs, their recipients and their delivery attempts.

Submission (SMTP 587/465 and ``POST /mailboxes/:id/outbound``) calls ``_enqueue`` inside the
transaction that files the Sent copy, so a 250 or 201 means the job is durable. Queue workers
(``haitatsu.queue``) claim due jobs with a lease, record each attempt and each recipient's
outcome here, and finish the job. The lease's fencing token is the job's ``attempts``: every
claim increments it, so a worker that lost its lease (its node stalled past ``locked_until`` and
another node took the job) changes nothing when it finally reports. docs/queue.md has the
states and the argument.
"""

from __future__ import annotations

import json

from haitatsu.storage.records import (
    OutboundAttempt,
    OutboundJob,
    OutboundRecipient,
    now_ns,
)
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MSG_COLUMNS,
    _json,
    _message_info,
    _page_where,
    new_id,
)

#: The change-bus key the queue listens on: ``_enqueue`` announces every new job there, so an
#: idle worker on any node wakes at once instead of at its next poll.
OUTBOUND_CHANNEL = "__outbound__"

_JOB_COLUMNS = (
    "j.id, j.message_id, j.mailbox_id, j.trace_id, j.mail_from, j.route, j.status, j.attempts, "
    "j.next_attempt_at, j.locked_by, j.locked_until, j.last_error, j.created_at, j.updated_at, "
    "j.dsn_message_id"
)


def _job(row, recipients=(), attempts=(), message=None) -> OutboundJob:
    return OutboundJob(
        id=row["id"],
        message_id=row["message_id"] or "",  # NULL once the message was purged
        mailbox_id=row["mailbox_id"],
        trace_id=row["trace_id"],
        mail_from=row["mail_from"],
        route=row["route"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        last_error=json.loads(row["last_error"] or "{}"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        dsn_message_id=row["dsn_message_id"],
        recipients=tuple(recipients),
        attempt_log=tuple(attempts),
        message=message,
    )


def _recipient(row) -> OutboundRecipient:
    return OutboundRecipient(
        id=row["id"],
        job_id=row["job_id"],
        rcpt=row["rcpt"],
        status=row["status"],
        code=row["code"],
        enhanced_status_code=row["enhanced_status_code"],
        response=row["response"],
        updated_at=row["updated_at"],
    )


def _attempt(row) -> OutboundAttempt:
    return OutboundAttempt(
        id=row["id"],
        job_id=row["job_id"],
        attempt=row["attempt"],
        node=row["node"],
        result=json.loads(row["result"] or "{}"),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class OutboundMixin(StoreBase):
    async def _enqueue(
        self, txn, message_id, mailbox_id, mail_from, recipients, trace_id="", route="relay"
    ) -> str:
        """Queue ``message_id`` for ``recipients`` (de-duplicated ignoring case) in the caller's
        transaction, due now; return the job id. Queue workers on every node hear of it once
        the transaction commits."""
        now = now_ns()
        job_id = new_id()
        await txn.execute(
            "INSERT INTO outbound_jobs (id, message_id, mailbox_id, trace_id, mail_from, route, "
            "status, attempts, next_attempt_at, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
            (job_id, message_id, mailbox_id, trace_id, mail_from, route, now, now, now),
        )
        seen = set()
        for rcpt in recipients:
            if rcpt.lower() in seen:
                continue
            seen.add(rcpt.lower())
            await txn.execute(
                "INSERT INTO outbound_recipients (id, job_id, rcpt, status, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?)",
                (new_id(), job_id, rcpt, now),
            )
        await self._announce(txn, OUTBOUND_CHANNEL, {"type": "outbound_queued", "id": job_id})
        return job_id

    def count_outbound_since(self, mailbox_id, since_ns):
        """How many jobs the mailbox queued since ``since_ns``: the per-hour and per-day
        outbound limits (API.md 1.8 step 4) count these."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM outbound_jobs WHERE mailbox_id = ? AND created_at >= ?",
                (mailbox_id, since_ns),
            )
            return row["n"]

        return self._run("count_outbound_since", txn_fn, readonly=True)

    # -- workers --------------------------------------------------------------------------

    def claim_outbound(self, node, lease_ns, now=None, limit=1):
        """Claim up to ``limit`` due jobs for ``node``; fire with them (recipients and message
        included), each ``processing``, leased until ``now + lease_ns``, with ``attempts``
        incremented and a new attempt row open.

        Due means ``queued`` or ``retry`` with ``next_attempt_at <= now``, or ``processing``
        with an expired lease (its node died or stalled: the attempt it left open is closed as
        abandoned). On PostgreSQL the rows are taken ``FOR UPDATE SKIP LOCKED``, so nodes
        claiming at once each get different jobs; SQLite has one writer and needs nothing.
        """

        async def txn_fn(txn):
            at = now_ns() if now is None else now
            rows = await txn.execute(
                "SELECT id, status, locked_by FROM outbound_jobs WHERE "
                "((status = 'queued' OR status = 'retry') AND next_attempt_at <= ?) "
                "OR (status = 'processing' AND locked_until <= ?) "
                "ORDER BY next_attempt_at, id LIMIT ?" + txn.skip_locked,
                (at, at, limit),
            )
            claimed = []
            for row in rows:
                if row["status"] == "processing":
                    abandoned = {
                        "classification": "temporary",
                        "code": 0,
                        "enhanced_status_code": "",
                        "response": f"lease of {row['locked_by']} expired mid-delivery",
                    }
                    await txn.execute(
                        "UPDATE outbound_attempts SET finished_at = ?, result = ? "
                        "WHERE job_id = ? AND finished_at IS NULL",
                        (at, _json(abandoned), row["id"]),
                    )
                await txn.execute(
                    "UPDATE outbound_jobs SET status = 'processing', locked_by = ?, "
                    "locked_until = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                    (node, at + lease_ns, at, row["id"]),
                )
                job = await txn.execute_one(
                    f"SELECT {_JOB_COLUMNS} FROM outbound_jobs j WHERE j.id = ?", (row["id"],)
                )
                await txn.execute(
                    "INSERT INTO outbound_attempts (id, job_id, attempt, node, result, "
                    "started_at) VALUES (?, ?, ?, ?, '{}', ?)",
                    (new_id(), row["id"], job["attempts"], node, at),
                )
                claimed.append(await self._load_job(txn, job, with_message=True))
            return claimed

        return self._run("claim_outbound", txn_fn)

    async def _load_job(self, txn, job_row, with_message=False) -> OutboundJob:
        recipients = await txn.execute(
            "SELECT * FROM outbound_recipients WHERE job_id = ? ORDER BY id", (job_row["id"],)
        )
        attempts = await txn.execute(
            "SELECT * FROM outbound_attempts WHERE job_id = ? ORDER BY attempt, id",
            (job_row["id"],),
        )
        message = None
        if with_message:
            row = await txn.execute_one(
                f"SELECT {_MSG_COLUMNS} FROM messages m WHERE m.id = ?", (job_row["message_id"],)
            )
            message = _message_info(row) if row else None
        return _job(
            job_row,
            [_recipient(r) for r in recipients],
            [_attempt(a) for a in attempts],
            message,
        )

    def renew_outbound_lease(self, job_id, node, attempt, until):
        """Extend the lease of a job ``node`` holds (claim number ``attempt``) to ``until``;
        fire with False if the lease is no longer ours (the job was taken over)."""

        async def txn_fn(txn):
            await txn.execute(
                "UPDATE outbound_jobs SET locked_until = ? WHERE id = ? AND locked_by = ? "
                "AND attempts = ? AND status = 'processing'",
                (until, job_id, node, attempt),
            )
            return txn.rowcount == 1

        return self._run("renew_outbound_lease", txn_fn)

    def finish_outbound(
        self,
        job_id,
        node,
        attempt,
        *,
        status,
        result,
        recipients,
        last_error=None,
        next_attempt_at=None,
        dsn_message_id="",
        now=None,
    ):
        """Record the outcome of claim number ``attempt`` of a job ``node`` holds: the attempt's
        ``result``, each recipient's ``(status, code, enhanced_status_code, response)`` in
        ``recipients`` (a dict by address), and the job's new ``status`` (``sent``, ``failed``
        or ``retry`` due at ``next_attempt_at``), releasing the lease.

        Fire with False, changing only the attempt row, if the lease was lost meanwhile: the
        node that took the job over owns its state now.
        """

        async def txn_fn(txn):
            at = now_ns() if now is None else now
            await txn.execute(
                "UPDATE outbound_attempts SET result = ?, finished_at = ? "
                "WHERE job_id = ? AND attempt = ? AND node = ?",
                (_json(result), at, job_id, attempt, node),
            )
            job = await txn.execute_one(
                "SELECT status, locked_by, attempts FROM outbound_jobs WHERE id = ?"
                + txn.for_update,
                (job_id,),
            )
            if job is None or (job["status"], job["locked_by"], job["attempts"]) != (
                "processing",
                node,
                attempt,
            ):
                return False
            for rcpt, (rcpt_status, code, enhanced, response) in recipients.items():
                await txn.execute(
                    "UPDATE outbound_recipients SET status = ?, code = ?, "
                    "enhanced_status_code = ?, response = ?, updated_at = ? "
                    "WHERE job_id = ? AND rcpt = ?",
                    (rcpt_status, code, enhanced, response, at, job_id, rcpt),
                )
            await txn.execute(
                "UPDATE outbound_jobs SET status = ?, next_attempt_at = ?, locked_by = '', "
                "locked_until = NULL, last_error = ?, updated_at = ?, "
                "dsn_message_id = CASE WHEN ? = '' THEN dsn_message_id ELSE ? END WHERE id = ?",
                (
                    status,
                    at if next_attempt_at is None else next_attempt_at,
                    _json(last_error or {}),
                    at,
                    dsn_message_id,
                    dsn_message_id,
                    job_id,
                ),
            )
            return True

        return self._run("finish_outbound", txn_fn)

    # -- reading ----------------------------------------------------------------------------

    def get_outbound_job(self, job_id):
        """Fire with the ``OutboundJob`` (recipients and attempts included) or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                f"SELECT {_JOB_COLUMNS} FROM outbound_jobs j WHERE j.id = ?", (job_id,)
            )
            return await self._load_job(txn, row) if row else None

        return self._run("get_outbound_job", txn_fn, readonly=True)

    def list_outbound_jobs(self, mailbox_id, limit=50, before=None):
        """Fire with up to ``limit`` jobs of the mailbox, ``created_at DESC, id DESC`` after
        the ``(created_at, id)`` pair ``before``, recipients and attempts included."""

        async def txn_fn(txn):
            where, params = _page_where("j.", before)
            rows = await txn.execute(
                f"SELECT {_JOB_COLUMNS} FROM outbound_jobs j WHERE "
                + " AND ".join([*where, "j.mailbox_id = ?"])
                + " ORDER BY j.created_at DESC, j.id DESC LIMIT ?",
                (*params, mailbox_id, limit),
            )
            return [await self._load_job(txn, row) for row in rows]

        return self._run("list_outbound_jobs", txn_fn, readonly=True)
