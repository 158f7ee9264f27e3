"""The event log (``GET /api/v1/events``, API.md 1.10) and a mailbox's live stream as
Server-Sent Events (``GET /api/v1/mailboxes/:id/stream``, our addition).

The stream is fed by the change bus, so it hears what every node commits (PostgreSQL's
LISTEN/NOTIFY), and resumes from the event log after a ``Last-Event-ID``.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from twisted.internet.defer import DeferredQueue
from twisted.internet.task import LoopingCall

from haitatsu.api import schemas
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    omit_zero,
    page_of,
    page_response,
    query,
    time_bound,
    timestamp,
)
from haitatsu.webhooks import go_json

routes = RouteTable()


def event_json(event) -> dict:
    return omit_zero(
        {
            "id": event.id,
            "event_type": event.event_type,
            "trace_id": event.trace_id,
            "message_id": event.message_id,
            "mailbox_id": event.mailbox_id,
            "payload": event.payload,
            "status": event.status,
            "attempts": event.attempts,
            "locked_by": event.locked_by,
            "locked_until": timestamp(event.locked_until),
            "next_attempt_at": timestamp(event.next_attempt_at),
            "last_error": event.last_error,
            "created_at": timestamp(event.created_at),
            "updated_at": timestamp(event.updated_at),
        }
    )


@routes.route(
    "GET",
    "/api/v1/events",
    failure="event_list_failed",
    spec=schemas.list_operation(
        "The event log, which is also the webhook outbox (not a stream)",
        "Event",
        filters=("mailbox_id", "message_id", "event_type", "trace_id"),
        times=("after", "before"),
    ),
)
async def list_events(api, request):
    page = page_of(request)
    after = time_bound(request, "after")
    before_time = time_bound(request, "before")
    events = await api.store.list_events(
        mailbox_id=query(request, "mailbox_id") or None,
        message_id=query(request, "message_id") or None,
        event_type=query(request, "event_type") or None,
        trace_id=query(request, "trace_id") or None,
        after=after,
        before_time=before_time,
        limit=page.limit + 1,
        before=page.before,
    )
    return page_response(request, events, page, event_json)


# -- Server-Sent Events ---------------------------------------------------------------------

#: Change types of the bus and the SSE event names they become.
CHANGE_EVENTS = {
    "exists": "message.exists",
    "expunge": "message.expunged",
    "flags": "message.flags",
    "folder_created": "folder.created",
    "folder_deleted": "folder.deleted",
    "folder_renamed": "folder.renamed",
    "resync": "resync",
}

_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")

#: Event ids a stream remembers having sent, so the replay and the live feed never repeat one.
_SENT_MEMORY = 1000


def frame(name: str, data: dict, event_id: str | None = None) -> bytes:
    """One SSE message: optional ``id``, ``event`` name, one ``data`` line of compact JSON."""
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {name}")
    lines.append("data: " + go_json(data).decode("utf-8"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class _Stream:
    """The state of one open stream: what was sent, which moves are under way."""

    def __init__(self, api, request, mailbox_id):
        self.api = api
        self.request = request
        self.mailbox_id = mailbox_id
        self.sent: OrderedDict[str, None] = OrderedDict()
        self.expunged: OrderedDict[str, str] = OrderedDict()

    @property
    def open(self) -> bool:
        return not (self.request.finished or getattr(self.request, "_disconnected", False))

    def write(self, data: bytes) -> None:
        if self.open:
            self.request.write(data)

    def send_event(self, event) -> None:
        if event is None or event.id in self.sent:
            return
        self.sent[event.id] = None
        while len(self.sent) > _SENT_MEMORY:
            self.sent.popitem(last=False)
        self.write(frame(event.event_type, event.payload, event.id))

    async def send_change(self, change: dict) -> None:
        kind = change.get("type")
        if kind == "event":
            if change.get("event_id"):
                self.send_event(await self.api.store.get_event(change["event_id"]))
            return
        name = CHANGE_EVENTS.get(kind, "change")
        data = {"mailbox_id": self.mailbox_id, **{k: v for k, v in change.items() if k != "type"}}
        if name == "change":
            data["type"] = kind
        self.write(frame(name, data))
        # A move is an expunge from one folder and an "exists" of the same row in another.
        if kind == "expunge" and change.get("id"):
            self.expunged[change["id"]] = change.get("folder_id", "")
            while len(self.expunged) > _SENT_MEMORY:
                self.expunged.popitem(last=False)
        elif kind == "exists" and change.get("id") in self.expunged:
            source = self.expunged.pop(change["id"])
            self.write(
                frame(
                    "message.moved",
                    {
                        "mailbox_id": self.mailbox_id,
                        "id": change["id"],
                        "from_folder_id": source,
                        "folder_id": change.get("folder_id", ""),
                        "uid": change.get("uid", 0),
                    },
                )
            )


@routes.route(
    "GET",
    "/api/v1/mailboxes/<mailbox_id>/stream",
    failure="mailbox_stream_failed",
    spec=schemas.stream_operation(),
)
async def stream(api, request, mailbox_id):
    last_event_id = (request.getHeader(b"last-event-id") or b"").decode("ascii", "replace").strip()
    if last_event_id and not _ULID.fullmatch(last_event_id):
        raise APIError(400, "invalid_last_event_id", "Last-Event-ID must be an event id (a ULID)")
    mailbox = await api.store.get_mailbox(mailbox_id)
    if mailbox is None:
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    state = _Stream(api, request, mailbox_id)
    changes = DeferredQueue()
    # Subscribe before the replay, so nothing committed in between is missed; the replay and
    # the live feed are de-duplicated by event id.
    unsubscribe = api.store.changes.subscribe(mailbox_id, changes.put)
    heartbeat = LoopingCall(state.write, b": heartbeat\n\n")
    heartbeat.clock = api.reactor
    try:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        state.write(b": connected\n\n")
        if last_event_id:
            while True:
                missed = await api.store.events_after(mailbox_id, last_event_id)
                for event in missed:
                    state.send_event(event)
                if len(missed) < 500:
                    break
                last_event_id = missed[-1].id
            # Flags, expunges and folder changes are not logged: look again at the mailbox.
            state.write(frame("resync", {"mailbox_id": mailbox_id}))
        heartbeat.start(api.sse_heartbeat_seconds, now=False)
        while state.open:
            await state.send_change(await changes.get())
    finally:
        unsubscribe()
        if heartbeat.running:
            heartbeat.stop()
    return b""
