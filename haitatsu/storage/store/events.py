"""The event log: what happened to mail, for ``GET /events``, webhooks and Server-Sent Events.

An event is written by ``_record_event`` inside the transaction of the mail operation it reports,
so it exists exactly when the operation committed. The same row is the webhook outbox (API.md 3):
workers claim due rows with a lease (``claim_event``), POST them, and record the outcome
(``finish_event``). Each event is announced on the change bus twice: to the mailboxes it concerns
(Server-Sent Events send it) and on ``EVENTS_CHANNEL`` (idle webhook workers wake up).

Event ids are ULIDs made monotonic within a process, so the log orders by id in the order a node
wrote it; ``events_after`` resumes a stream from a ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import threading

import attrs
import ulid

from haitatsu.storage.records import now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _json, _page_where

#: The change-bus "mailbox" on which every new event is announced, for webhook workers.
EVENTS_CHANNEL = "_events"

#: How long a worker holds a claimed row before another may take it (API.md 3: 5 minutes).
LEASE_SECONDS = 300

#: A ``no_endpoint`` row younger than this is delivered when an endpoint for its type appears
#: (our decision; the original never retries them). Older ones stay ``no_endpoint``.
NO_ENDPOINT_REPLAY_SECONDS = 24 * 3600

EVENT_STATUSES = ("queued", "processing", "retry", "delivered", "failed", "no_endpoint")


@attrs.frozen
class Event:
    """One row of the event log (API.md 1.10)."""

    id: str
    event_type: str
    trace_id: str
    message_id: str
    mailbox_id: str
    payload: dict
    status: str
    attempts: int
    locked_by: str
    locked_until: int | None
    next_attempt_at: int | None
    last_error: dict
    created_at: int
    updated_at: int


@attrs.frozen
class Received:
    """One accepted RCPT's routing result, for its ``message.received`` event (API.md 3):
    the address as given, without the ``+tag``, the tag, and the mailboxes it routes to."""

    original_rcpt: str
    base_rcpt: str
    plus_tag: str
    mailbox_ids: tuple[str, ...]


def _event(row) -> Event:
    return Event(
        id=row["id"],
        event_type=row["event_type"],
        trace_id=row["trace_id"],
        message_id=row["message_id"],
        mailbox_id=row["mailbox_id"],
        payload=json.loads(row["payload"] or "{}"),
        status=row["status"],
        attempts=row["attempts"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        next_attempt_at=row["next_attempt_at"],
        last_error=json.loads(row["last_error"] or "{}"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_id_lock = threading.Lock()
_last_id: list[int] = [0]


def new_event_id() -> str:
    """A ULID greater than every other this process made: ids order as events were written
    (SQLite transactions run in database threads, hence the lock)."""
    with _id_lock:
        value = int(ulid.ULID())
        if value <= _last_id[0]:
            value = _last_id[0] + 1
        _last_id[0] = value
        return str(ulid.ULID.from_int(value))


class EventsMixin(StoreBase):
    async def _record_event(
        self,
        txn,
        event_type: str,
        payload: dict,
        trace_id: str = "",
        message_id: str = "",
        mailbox_id: str = "",
        mailbox_ids=(),
    ) -> str:
        """Write an event in the caller's transaction and announce it once that commits.

        ``mailbox_id`` is the row's (set when the event concerns exactly one mailbox);
        ``mailbox_ids`` every mailbox whose stream shows it (defaults to ``mailbox_id``).
        """
        now = now_ns()
        event_id = new_event_id()
        await txn.execute(
            "INSERT INTO events (id, event_type, trace_id, message_id, mailbox_id, payload, "
            "status, attempts, next_attempt_at, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
            (event_id, event_type, trace_id, message_id, mailbox_id, _json(payload), now, now, now),
        )
        targets = list(dict.fromkeys(mailbox_ids or ([mailbox_id] if mailbox_id else [])))
        for target in targets:
            await txn.execute(
                "INSERT INTO event_mailboxes (event_id, mailbox_id) VALUES (?, ?)",
                (event_id, target),
            )
        change = {"type": "event", "event_id": event_id, "event_type": event_type}
        for target in targets:
            await self._announce(txn, target, change)
        await self._announce(txn, EVENTS_CHANNEL, change)
        return event_id

    async def _record_received(self, txn, received, placed, message_id, trace_id):
        """The ``message.received`` events of one delivery: one per routing result that
        reached at least one mailbox (a mailbox skipped for its quota is not a destination)."""
        placed_ids = {mm.mailbox_id for mm in placed}
        for result in received:
            destinations = [m for m in dict.fromkeys(result.mailbox_ids) if m in placed_ids]
            if not destinations:
                continue
            payload = {
                "event": "message.received",
                "trace_id": trace_id,
                "message_id": message_id,
                "routing_rule_id": "",
                "original_rcpt": result.original_rcpt,
                "base_rcpt": result.base_rcpt,
                "plus_tag": result.plus_tag,
                "default_destinations": destinations,
            }
            await self._record_event(
                txn,
                "message.received",
                payload,
                trace_id=trace_id,
                message_id=message_id,
                mailbox_id=destinations[0] if len(destinations) == 1 else "",
                mailbox_ids=destinations,
            )

    def record_event(
        self, event_type, payload, trace_id="", message_id="", mailbox_id="", mailbox_ids=()
    ):
        """Write an event in a transaction of its own; fire with its id. For events that
        report something that is not a store transaction (an export job's outcome)."""

        async def txn_fn(txn):
            return await self._record_event(
                txn, event_type, payload, trace_id, message_id, mailbox_id, mailbox_ids
            )

        return self._run("record_event", txn_fn)

    def get_event(self, event_id):
        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM events WHERE id = ?", (event_id,))
            return _event(row) if row else None

        return self._run("get_event", txn_fn, readonly=True)

    def list_events(
        self,
        mailbox_id=None,
        message_id=None,
        event_type=None,
        trace_id=None,
        after=None,
        before_time=None,
        limit=50,
        before=None,
    ):
        """A page of the log, newest first (``created_at DESC, id DESC``); ``after`` and
        ``before_time`` bound ``created_at`` inclusively; ``before`` is the cursor."""

        async def txn_fn(txn):
            where, params = _page_where("", before)
            for column, value in (
                ("mailbox_id", mailbox_id),
                ("message_id", message_id),
                ("event_type", event_type),
                ("trace_id", trace_id),
            ):
                if value:
                    where.append(f"{column} = ?")
                    params.append(value)
            if after is not None:
                where.append("created_at >= ?")
                params.append(after)
            if before_time is not None:
                where.append("created_at <= ?")
                params.append(before_time)
            sql = "SELECT * FROM events"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [_event(r) for r in await txn.execute(sql, (*params, limit))]

        return self._run("list_events", txn_fn, readonly=True)

    def events_after(self, mailbox_id, after_id, limit=500):
        """The events concerning ``mailbox_id`` with an id greater than ``after_id``, oldest
        first: what a stream resuming from ``Last-Event-ID`` missed."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT e.* FROM events e JOIN event_mailboxes em ON em.event_id = e.id "
                "WHERE em.mailbox_id = ? AND em.event_id > ? ORDER BY e.id LIMIT ?",
                (mailbox_id, after_id, limit),
            )
            return [_event(r) for r in rows]

        return self._run("events_after", txn_fn, readonly=True)

    def claim_event(self, node, endpoint_types, lease_seconds=LEASE_SECONDS, now=None):
        """Claim the next due event for webhook delivery, or None.

        Due: ``queued`` or ``retry`` whose ``next_attempt_at`` has passed, ``processing`` whose
        lease expired, and ``no_endpoint`` younger than ``NO_ENDPOINT_REPLAY_SECONDS`` whose
        type now has an endpoint. A due row whose type has no endpoint in ``endpoint_types``
        becomes ``no_endpoint`` here. The claimed row is ``processing``, leased to ``node``.
        """
        types = sorted(set(endpoint_types))

        async def txn_fn(txn):
            at = now_ns() if now is None else now
            where = [
                "(status IN ('queued', 'retry') AND next_attempt_at <= ?)",
                "(status = 'processing' AND locked_until < ?)",
            ]
            params: list = [at, at]
            if types:
                clause, values = txn.in_clause("event_type", types)
                where.append(f"(status = 'no_endpoint' AND created_at >= ? AND {clause})")
                params += [at - NO_ENDPOINT_REPLAY_SECONDS * 1_000_000_000, *values]
            for _ in range(100):
                row = await txn.execute_one(
                    "SELECT * FROM events WHERE "
                    + " OR ".join(where)
                    + " ORDER BY created_at, id LIMIT 1"
                    + txn.skip_locked,
                    tuple(params),
                )
                if row is None:
                    return None
                if row["event_type"] not in types:
                    await txn.execute(
                        "UPDATE events SET status = 'no_endpoint', locked_by = '', "
                        "locked_until = NULL, updated_at = ? WHERE id = ?",
                        (at, row["id"]),
                    )
                    continue
                until = at + lease_seconds * 1_000_000_000
                await txn.execute(
                    "UPDATE events SET status = 'processing', locked_by = ?, locked_until = ?, "
                    "updated_at = ? WHERE id = ?",
                    (node, until, at, row["id"]),
                )
                return _event(
                    {
                        **row,
                        "status": "processing",
                        "locked_by": node,
                        "locked_until": until,
                        "updated_at": at,
                    }
                )
            return None

        # Group committed: with every delivery writing an event that wakes the workers, a
        # transaction of its own per claim took the write lock (and an fsync) between the
        # deliveries' shared ones.
        return self._run_grouped("claim_event", txn_fn)

    def finish_event(self, event_id, node, status, attempts, last_error=None, next_attempt_at=None):
        """Record a delivery attempt's outcome on a row ``node`` holds; fire with whether the
        lease was still ours (if not, another worker took the row over and this is dropped)."""
        if status not in EVENT_STATUSES:
            raise ValueError(f"bad event status {status!r}")

        async def txn_fn(txn):
            await txn.execute(
                "UPDATE events SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                "locked_by = '', locked_until = NULL, updated_at = ? "
                "WHERE id = ? AND locked_by = ? AND status = 'processing'",
                (
                    status,
                    attempts,
                    _json(last_error or {}),
                    next_attempt_at,
                    now_ns(),
                    event_id,
                    node,
                ),
            )
            return txn.rowcount == 1

        return self._run("finish_event", txn_fn)

    def queue_depth(self):
        """Work waiting in the queues: events to deliver, outbound jobs, and export and import
        jobs (``queue_depth``)."""

        async def txn_fn(txn):
            events = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM events WHERE status IN ('queued', 'retry', 'processing')"
            )
            jobs = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM outbound_jobs "
                "WHERE status IN ('queued', 'retry', 'processing')"
            )
            transfers = 0
            for table in ("export_jobs", "import_jobs"):
                row = await txn.execute_one(
                    f"SELECT COUNT(*) AS n FROM {table} WHERE status IN ('queued', 'processing')"
                )
                transfers += row["n"]
            return events["n"] + jobs["n"] + transfers

        return self._run("queue_depth", txn_fn, readonly=True)
