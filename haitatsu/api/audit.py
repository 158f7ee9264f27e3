"""The audit log: ``GET /api/v1/audit`` and the legacy ``/audit_events`` (API.md 1.9)."""

from __future__ import annotations

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    omit_zero,
    page_of,
    page_response,
    parse_rfc3339,
    query,
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


def time_bound(request, name: str) -> int | None:
    """An inclusive bound from an RFC 3339 query parameter; 400 ``invalid_<name>``."""
    text = query(request, name)
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise APIError(
            400, f"invalid_{name}", f"{name} must be an RFC 3339 time, e.g. 2025-05-01T10:20:30Z"
        ) from None


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
