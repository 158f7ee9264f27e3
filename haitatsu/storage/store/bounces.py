"""VERP bounces received at the MX (API.md 5.2 step 1): which domains are ours, and the
``bounce_events`` rows a delivery status notification becomes. Parsing the report is the
queue's business (``haitatsu.queue.bounces``); only the rows are kept here."""

from __future__ import annotations

import attrs

from haitatsu.storage.records import BounceEvent, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _text, new_id

_FIELDS = (
    "recipient",
    "action",
    "status",
    "diagnostic",
    "remote_mta",
    "reporting_mta",
)


def _bounce(row) -> BounceEvent:
    return BounceEvent(**{field.name: row[field.name] for field in attrs.fields(BounceEvent)})


class BouncesMixin(StoreBase):
    def is_hosted_domain(self, domain):
        """Fire with True if ``domain`` is one of ours: a VERP bounce address is accepted only
        there. The contract says "a domain with a DKIM key"; until DKIM keys are stored, a
        domain is ours when a mailbox lives in it or it has a domain record."""
        name = domain.strip().lower().rstrip(".")

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT 1 AS x FROM mailboxes WHERE domain = ? AND deleted_at IS NULL "
                "UNION ALL SELECT 1 AS x FROM domains WHERE name = ? LIMIT 1",
                (name, name),
            )
            return row is not None

        return self._run("is_hosted_domain", txn_fn, readonly=True)

    def record_bounce(
        self,
        message_id,
        verp_address,
        reports,
        envelope_from="",
        remote_ip="",
        trace_id="",
        sha256="",
        size_bytes=0,
        excerpt="",
    ):
        """Record a bounce received on the VERP address of ``message_id``: one row per report
        in ``reports`` (dicts with the keys ``recipient``, ``action``, ``status``,
        ``diagnostic``, ``remote_mta``, ``reporting_mta``; one empty dict when nothing parsed),
        linked to the newest outbound job of that message when there is one. Fire with the
        ``BounceEvent`` rows."""

        async def txn_fn(txn):
            job = await txn.execute_one(
                "SELECT id, mailbox_id FROM outbound_jobs WHERE message_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (message_id,),
            )
            job_id, mailbox_id = (job["id"], job["mailbox_id"]) if job else ("", "")
            now = now_ns()
            ids = []
            for report in reports or [{}]:
                row_id = new_id()
                ids.append(row_id)
                values = [_text(str(report.get(field) or ""))[:2000] for field in _FIELDS]
                await txn.execute(
                    "INSERT INTO bounce_events (id, message_id, job_id, mailbox_id, verp_address, "
                    "envelope_from, recipient, action, status, diagnostic, remote_mta, "
                    "reporting_mta, remote_ip, trace_id, sha256, size_bytes, excerpt, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row_id,
                        message_id,
                        job_id,
                        mailbox_id,
                        verp_address,
                        envelope_from,
                        *values,
                        remote_ip,
                        trace_id,
                        sha256,
                        size_bytes,
                        _text(excerpt),
                        now,
                    ),
                )
            clause, params = txn.in_clause("id", ids)
            rows = await txn.execute(
                f"SELECT * FROM bounce_events WHERE {clause} ORDER BY id", tuple(params)
            )
            return [_bounce(r) for r in rows]

        return self._run("record_bounce", txn_fn)

    def list_bounce_events(self, message_id):
        """Fire with the bounces received for ``message_id``, oldest first."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT * FROM bounce_events WHERE message_id = ? ORDER BY created_at, id",
                (message_id,),
            )
            return [_bounce(r) for r in rows]

        return self._run("list_bounce_events", txn_fn, readonly=True)
