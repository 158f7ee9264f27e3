"""Webhook delivery: workers that POST the event log's rows to the configured endpoints (API.md 3).

Each worker loop claims one due row at a time with a lease (``IMailStore.claim_event``: ``FOR
UPDATE SKIP LOCKED`` on PostgreSQL, so loops on every node share the outbox without waiting for
each other), POSTs its payload signed with ``webhooks.secret``, and records the outcome. A 2xx
within ``webhooks.default_timeout_seconds`` delivers the row; anything else is retried after 1, 2,
4, ... minutes (at most 60) until ``max_attempts``. Idle loops sleep from 250 ms growing to 30 s
and are woken at once when any node writes an event (the change bus's ``EVENTS_CHANNEL``).

The configuration is read on every claim, so endpoints, secret, timeout and attempts are hot.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json

from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from haitatsu.metrics import METRICS
from haitatsu.polling import PollingService
from haitatsu.storage.store.events import EVENTS_CHANNEL

#: Idle back-off between empty polls (API.md 3).
IDLE_MIN_SECONDS = 0.25
IDLE_MAX_SECONDS = 30.0

#: How much of a failing answer's body goes into ``last_error``.
ERROR_BODY_BYTES = 2048

_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(value) -> bytes:
    """The payload as Go's ``json.Marshal`` writes a map: keys sorted, no whitespace, no
    trailing newline, UTF-8 kept, and ``<``, ``>``, ``&``, U+2028, U+2029 escaped as ``\\uXXXX``
    (Go's HTML-safe default). Receivers verify the signature over exactly these bytes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 over ``timestamp + "." + body``, keyed by the secret."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_timestamp(seconds: float) -> str:
    """UTC RFC 3339 with whole seconds: ``2025-05-01T10:20:30Z``."""
    when = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_delay_seconds(attempts_before: int) -> int:
    """``min(1 min * 2^attempts_before, 1 h)``: 1, 2, 4, 8, 16, 32, 60, 60, ... minutes."""
    return min(60 * 2 ** min(attempts_before, 10), 3600)


def request_headers(event, secret: str, timestamp: str, body: bytes) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Haitatsu-Event": event.event_type,
        "X-Haitatsu-Timestamp": timestamp,
        "X-Haitatsu-Signature": signature(secret, timestamp, body),
        "X-Haitatsu-Trace-ID": event.trace_id,
        "X-Haitatsu-Delivery": event.id,
    }


class _FirstBytes:
    """Collects the start of a response body and drops the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def __call__(self, data: bytes):
        if self.size < self.limit:
            self.chunks.append(data[: self.limit - self.size])
            self.size += len(self.chunks[-1])

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


class WebhookWorker(PollingService):
    """``loops`` delivery loops on this node (``workers.concurrency``; 0 means one).

    ``http`` is a treq ``HTTPClient`` (or anything with its ``post`` and a response treq's
    ``collect`` reads), passed in so tests hand in their own. ``clock`` gives the time for
    timestamps, schedules and leases, and runs the idle sleeps and timeouts.
    """

    channel = EVENTS_CHANNEL
    label = "webhook worker"
    min_poll = IDLE_MIN_SECONDS
    max_poll = IDLE_MAX_SECONDS
    _log = Logger()

    def __init__(self, store, get_config, http, clock, node: str, loops: int = 1, metrics=None):
        self.store = store
        self.get_config = get_config
        self.http = http
        self.clock = clock
        self.node = node
        self.loops = max(1, loops)
        self.metrics = metrics or METRICS

    # -- loops ------------------------------------------------------------------------------

    def lanes(self):
        return [None] * self.loops

    # -- one delivery ----------------------------------------------------------------------

    async def run_once(self, lane=None) -> bool:
        """Claim and deliver one due event; False when there was none."""
        config = self.get_config().webhooks
        now = self.clock.seconds()
        event = await self.store.claim_event(
            self.node, set(config.endpoints), now=int(now * 1_000_000_000)
        )
        if event is None:
            return False
        url = config.endpoints.get(event.event_type)
        if url is None:  # the config changed between reading it and the claim
            await self.store.finish_event(event.id, self.node, "no_endpoint", event.attempts)
            return True
        error = await self._post(event, url, config)
        attempts = event.attempts + 1
        if error is None:
            status, next_at = "delivered", None
            last_error = {}
        else:
            self.metrics.webhook_failures.inc()
            last_error = {"error": error}
            if attempts >= config.attempts:
                status, next_at = "failed", None
            else:
                status = "retry"
                delay = retry_delay_seconds(event.attempts)
                next_at = int((self.clock.seconds() + delay) * 1_000_000_000)
        kept = await self.store.finish_event(
            event.id, self.node, status, attempts, last_error, next_at
        )
        self.metrics.worker_jobs.labels(type="webhook", status=status).inc()
        self._log.info(
            "webhook {event_id} ({event_type}) attempt {attempts}: {status}{error}",
            event_id=event.id,
            event_type=event.event_type,
            attempts=attempts,
            status=status if kept else status + " (lease lost)",
            error=f": {error}" if error else "",
            trace_id=event.trace_id,
            mailbox_id=event.mailbox_id,
        )
        return True

    async def _post(self, event, url: str, config) -> str | None:
        """POST the event; None on a 2xx in time, else the ``last_error`` text."""
        import treq

        body = go_json(event.payload)
        timestamp = webhook_timestamp(self.clock.seconds())
        headers = request_headers(event, config.secret, timestamp, body)
        timeout = config.timeout

        async def attempt():
            response = await self.http.post(url, data=body, headers=headers)
            collector = _FirstBytes(ERROR_BODY_BYTES)
            await treq.collect(response, collector)
            return response.code, collector.text()

        d = defer.Deferred.fromCoroutine(attempt())
        timed_out = []
        timer = self.clock.callLater(timeout, lambda: (timed_out.append(True), d.cancel()))
        try:
            code, text = await d
        except Exception as e:
            if timed_out:
                return f'Post "{url}": timeout after {timeout:g}s awaiting the response'
            if isinstance(e, CancelledError) or self._stopping:
                raise CancelledError() from e  # stopping: the lease expires, a node retries
            return f'Post "{url}": {_reason(e)}'
        finally:
            if timer.active():
                timer.cancel()
        if 200 <= code < 300:
            return None
        return f"webhook returned {code}: {text}"


def _reason(error: Exception) -> str:
    """A transport error's text; twisted's wrap the interesting one."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
    return str(error) or type(error).__name__
