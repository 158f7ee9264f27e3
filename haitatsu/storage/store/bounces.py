"""VERP bounces received at the MX (API.md 5.2 step 1): which domains are ours, and the
``bounce_events`` rows a delivery status notification becomes. Parsing the report is the
queue's business (``haitatsu.queue.bounces``); only the rows are kept here, and what the report
says about the job's recipients (``bounced``)."""

from __future__ import annotations

import re

import attrs

from haitatsu.storage.records import BounceEvent, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _json, _text, new_id

_FIELDS = (
    "recipient",
    "action",
    "status",
    "diagnostic",
    "remote_mta",
    "reporting_mta",
)


_REPLY_CODE = re.compile(r"\s*([245]\d\d)\b")


def _code(diagnostic: str, status: str) -> int:
    """The SMTP reply code of a report: the one its Diagnostic-Code starts with, else 500 or
    400 from its Status class (RFC 3463)."""
    m = _REPLY_CODE.match(diagnostic)
    if m:
        return int(m.group(1))
    return {"5": 500, "4": 400}.get(status[:1], 0)


async def _mark_bounced(txn, job_id, report, now) -> int:
    """A report with ``Action: failed`` about a recipient of the job the relay had taken
    (``sent``): that recipient becomes ``bounced`` with the report's status and diagnostic,
    and a job that was ``sent`` becomes ``failed`` (its status sums up its recipients).
    Return how many recipients changed."""
    if (report.get("action") or "").lower() != "failed":
        return 0
    addresses = {
        str(report.get(key) or "").strip().lower() for key in ("recipient", "original_recipient")
    } - {""}
    if not addresses:
        return 0
    status = _text(str(report.get("status") or ""))[:32]
    diagnostic = _text(str(report.get("diagnostic") or ""))[:2000]
    code = _code(diagnostic, status)
    response = diagnostic or f"bounced ({status or 'no status'})"
    clause, params = txn.in_clause("LOWER(rcpt)", sorted(addresses))
    await txn.execute(
        "UPDATE outbound_recipients SET status = 'bounced', code = ?, enhanced_status_code = ?, "
        f"response = ?, updated_at = ? WHERE job_id = ? AND status = 'sent' AND {clause}",
        (code, status, response, now, job_id, *params),
    )
    changed = txn.rowcount
    if changed > 0:
        reporter = str(report.get("reporting_mta") or "")
        last_error = {
            "code": code,
            "enhanced_status_code": status,
            "classification": "permanent",
            "response": f"bounced by {reporter}: {response}" if reporter else response,
        }
        await txn.execute(
            "UPDATE outbound_jobs SET status = 'failed', last_error = ?, updated_at = ? "
            "WHERE id = ? AND status = 'sent'",
            (_json(last_error), now, job_id),
        )
    return max(changed, 0)


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
        ``diagnostic``, ``remote_mta``, ``reporting_mta``, and ``original_recipient`` to match
        by; one empty dict when nothing parsed), linked to the newest outbound job of that
        message when there is one. A ``failed`` report about a recipient the relay had taken
        marks it ``bounced`` in that job, in the same transaction. Fire with the
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
                if job_id:
                    await _mark_bounced(txn, job_id, report, now)
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
