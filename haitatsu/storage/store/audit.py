"""Reading the audit log (API.md 1.9); every change writes its row with ``_audit``."""

from __future__ import annotations

import json

from haitatsu.storage.records import AuditEvent
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _page_where


def _audit_event(row) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        event_type=row["event_type"],
        actor_type=row["actor_type"],
        actor_id=row["actor_id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        mailbox_id=row["mailbox_id"],
        trace_id=row["trace_id"],
        details=json.loads(row["details"] or "{}"),
        created_at=row["created_at"],
    )


class AuditMixin(StoreBase):
    def list_audit_events(
        self,
        mailbox_id=None,
        event_type=None,
        trace_id=None,
        after=None,
        until=None,
        limit=50,
        before=None,
    ):
        """A page of audit events, newest first; ``after`` and ``until`` are inclusive bounds
        on ``created_at`` (ns), ``before`` the page cursor ``(created_at, id)``."""

        async def txn_fn(txn):
            where, params = _page_where("", before)
            for column, value in (
                ("mailbox_id", mailbox_id),
                ("event_type", event_type),
                ("trace_id", trace_id),
            ):
                if value:
                    where.append(f"{column} = ?")
                    params.append(value)
            if after is not None:
                where.append("created_at >= ?")
                params.append(after)
            if until is not None:
                where.append("created_at <= ?")
                params.append(until)
            sql = "SELECT * FROM audit_events"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = await txn.execute(
                sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            )
            return [_audit_event(r) for r in rows]

        return self._run("list_audit_events", txn_fn, readonly=True)
