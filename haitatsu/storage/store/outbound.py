"""The outbound queue's rows: jobs, their recipients and their delivery attempts.

Submission (SMTP 587/465 and ``POST /mailboxes/:id/outbound``) calls ``_enqueue`` inside the
transaction that files the Sent copy, so a 250 or 201 means the job is durable. Queue workers
claim due jobs, record each attempt and each recipient's outcome here.
"""

from __future__ import annotations

from haitatsu.storage.records import now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import new_id


class OutboundMixin(StoreBase):
    @staticmethod
    async def _enqueue(
        txn, message_id, mailbox_id, mail_from, recipients, trace_id="", route="relay"
    ) -> str:
        """Queue ``message_id`` for ``recipients`` (de-duplicated ignoring case) in the caller's
        transaction, due now; return the job id."""
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
