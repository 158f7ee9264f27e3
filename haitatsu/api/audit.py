"""The audit log: ``GET /api/v1/audit`` and the legacy ``/audit_events`` (API.md 1.9)."""

from __future__ import annotations

from haitatsu.api.conventions import (
    RouteTable,
    omit_zero,
    page_of,
    page_response,
    query,
    time_bound,
    timestamp,
)

routes = RouteTable()


def audit_event_json(event) -> dict:
    return omit_zero(
        {
            "id": event.id,
            "event_type": event.event_type,
            "actor_type": event.actor_type,
            "actor_id": event.actor_id,
            "entity_type": event.entity_type,
            "entity_id": event.entity_id,
            "mailbox_id": event.mailbox_id,
            "trace_id": event.trace_id,
            "details": event.details,
            "created_at": timestamp(event.created_at),
        }
    )


async def _list(api, request):
    page = page_of(request)
    rows = await api.store.list_audit_events(
        mailbox_id=query(request, "mailbox_id") or None,
        event_type=query(request, "event_type") or None,
        trace_id=query(request, "trace_id") or None,
        after=time_bound(request, "after"),
        until=time_bound(request, "before"),
        limit=page.limit + 1,
        before=page.before,
    )
    return page_response(request, rows, page, audit_event_json)


routes.route("GET", "/api/v1/audit", failure="audit_event_list_failed")(_list)
routes.route("GET", "/api/v1/audit_events", failure="audit_event_list_failed")(_list)
