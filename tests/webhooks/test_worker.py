"""Webhook workers against a real receiver on 127.0.0.1 (API.md 3)."""

from __future__ import annotations

import hashlib
import hmac
import time

import attrs
from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from haitatsu.config.model import Config, WebhooksConfig
from haitatsu.metrics import Metrics
from haitatsu.storage.changes import LocalChangeBus
from haitatsu.webhooks import (
    WebhookWorker,
    go_json,
    retry_delay_seconds,
    signature,
    webhook_timestamp,
)
from tests.support import PG_SKIP, make_pg_store, make_store

SECRET = "webhook-secret"


class Receiver(Resource):
    """A webhook endpoint: records every request; answers ``statuses`` in turn, then 200."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []
        self.statuses = []
        self.hang = False
        self.arrived = defer.Deferred()

    def render_POST(self, request):
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        arrived, self.arrived = self.arrived, defer.Deferred()
        arrived.callback(None)
        if self.hang:
            return NOT_DONE_YET
        status = self.statuses.pop(0) if self.statuses else 200
        request.setResponseCode(status)
        return b"x" * 5000 if status >= 300 else b"thanks"

    def verify(self, headers, body) -> bool:
        """What a receiver does: HMAC over the timestamp header, a dot, and the raw body."""
        expected = hmac.new(
            SECRET.encode(),
            headers["X-Haitatsu-Timestamp"].encode() + b"." + body,
            hashlib.sha256,
        ).hexdigest()
        return hmac.compare_digest(headers["X-Haitatsu-Signature"], "sha256=" + expected)


async def start_receiver(testcase) -> tuple[Receiver, str]:
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return receiver, f"http://127.0.0.1:{port.getHost().port}/hook"


def http_client(testcase) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=False)
    testcase.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool))


class LiveConfig:
    def __init__(self, **webhooks):
        self.config = Config(webhooks=WebhooksConfig(**webhooks))

    def __call__(self):
        return self.config

    def set(self, **webhooks):
        self.config = attrs.evolve(
            self.config, webhooks=attrs.evolve(self.config.webhooks, **webhooks)
        )


class PureTests(unittest.SynchronousTestCase):
    def test_body_is_go_json(self):
        self.assertEqual(
            go_json({"b": 1, "a": ["x<y>&z", "é"], "c": {"z": None, "y": True}}),
            '{"a":["x\\u003cy\\u003e\\u0026z","é"],"b":1,"c":{"y":true,"z":null}}'.encode(),
        )

    def test_signature_is_hmac_over_timestamp_dot_body(self):
        body = b'{"event":"x"}'
        expected = hmac.new(b"k", b"2025-05-01T10:20:30Z." + body, hashlib.sha256).hexdigest()
        self.assertEqual(signature("k", "2025-05-01T10:20:30Z", body), "sha256=" + expected)

    def test_timestamp_is_utc_seconds(self):
        self.assertEqual(webhook_timestamp(1746094830.75), "2025-05-01T10:20:30Z")

    def test_retry_schedule(self):
        self.assertEqual(
            [retry_delay_seconds(n) // 60 for n in range(10)], [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
        )


class WorkerTests:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.receiver, self.url = await start_receiver(self)
        self.config = LiveConfig(endpoints={"message.received": self.url}, secret=SECRET)
        self.clock = task.Clock()
        # A second ahead of the wall clock, which stamps the rows: they are due at once.
        self.clock.advance(time.time() + 1)
        self.metrics = Metrics(process_collectors=False)
        self.worker = WebhookWorker(
            self.store,
            self.config,
            http_client(self),
            self.clock,
            node="node-a",
            metrics=self.metrics,
        )

    async def record(self, payload=None):
        payload = payload or {"event": "message.received", "message_id": "M1", "note": "<&>"}
        return await self.store.record_event(
            "message.received", payload, trace_id="TRACE1", message_id="M1", mailbox_id="MB1"
        )

    async def test_delivers_signed_exact_body_and_headers(self):
        event_id = await self.record()
        self.assertTrue(await self.worker.run_once())
        [(headers, body)] = self.receiver.requests
        expected = {"event": "message.received", "message_id": "M1", "note": "<&>"}
        self.assertEqual(body, go_json(expected))
        self.assertTrue(self.receiver.verify(headers, body))
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["X-Haitatsu-Event"], "message.received")
        self.assertEqual(headers["X-Haitatsu-Trace-Id"], "TRACE1")
        self.assertEqual(headers["X-Haitatsu-Delivery"], event_id)
        self.assertEqual(headers["X-Haitatsu-Timestamp"], webhook_timestamp(self.clock.seconds()))
        event = await self.store.get_event(event_id)
        self.assertEqual((event.status, event.attempts, event.last_error), ("delivered", 1, {}))
        self.assertFalse(await self.worker.run_once())
        self.assertEqual(
            self.metrics.value("worker_jobs_total", {"type": "webhook", "status": "delivered"}), 1
        )

    async def test_fails_twice_then_delivers_on_the_schedule(self):
        self.receiver.statuses = [500, 503]
        event_id = await self.record()
        self.assertTrue(await self.worker.run_once())
        event = await self.store.get_event(event_id)
        self.assertEqual((event.status, event.attempts), ("retry", 1))
        self.assertEqual(event.last_error, {"error": "webhook returned 500: " + "x" * 2048})
        self.assertEqual(event.next_attempt_at, int((self.clock.seconds() + 60) * 1e9))
        # Not due before a minute has passed.
        self.clock.advance(59)
        self.assertFalse(await self.worker.run_once())
        self.clock.advance(1)
        self.assertTrue(await self.worker.run_once())
        event = await self.store.get_event(event_id)
        self.assertEqual((event.status, event.attempts), ("retry", 2))
        self.assertTrue(event.last_error["error"].startswith("webhook returned 503: "))
        # The second delay is two minutes.
        self.clock.advance(119)
        self.assertFalse(await self.worker.run_once())
        self.clock.advance(1)
        self.assertTrue(await self.worker.run_once())
        event = await self.store.get_event(event_id)
        self.assertEqual((event.status, event.attempts, event.last_error), ("delivered", 3, {}))
        self.assertEqual(len(self.receiver.requests), 3)
        self.assertTrue(all(self.receiver.verify(h, b) for h, b in self.receiver.requests))
        # Every attempt carries the same delivery id: the receiver's idempotency key.
        self.assertEqual({h["X-Haitatsu-Delivery"] for h, _ in self.receiver.requests}, {event_id})
        self.assertEqual(self.metrics.value("webhook_failures_total"), 2)

    async def test_max_attempts_fails_the_row(self):
        self.config.set(max_attempts=2)
        self.receiver.statuses = [500, 500, 500]
        event_id = await self.record()
        await self.worker.run_once()
        self.clock.advance(60)
        await self.worker.run_once()
        event = await self.store.get_event(event_id)
        self.assertEqual((event.status, event.attempts), ("failed", 2))
        self.clock.advance(3600)
        self.assertFalse(await self.worker.run_once())

    async def test_transport_error_is_recorded(self):
        self.config.set(endpoints={"message.received": "http://127.0.0.1:1/hook"})
        event_id = await self.record()
        await self.worker.run_once()
        event = await self.store.get_event(event_id)
        self.assertEqual(event.status, "retry")
        error = event.last_error["error"]
        self.assertTrue(error.startswith('Post "http://127.0.0.1:1/hook": '), error)

    async def test_no_endpoint_then_endpoint_added(self):
        self.config.set(endpoints={})
        event_id = await self.record()
        self.assertFalse(await self.worker.run_once())
        self.assertEqual((await self.store.get_event(event_id)).status, "no_endpoint")
        self.config.set(endpoints={"message.received": self.url})
        self.assertTrue(await self.worker.run_once())
        self.assertEqual((await self.store.get_event(event_id)).status, "delivered")


class SQLiteWorkerTests(WorkerTests, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresWorkerTests(WorkerTests, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)


class RunningWorkerTests(unittest.TestCase):
    """The service on the real reactor: woken by the change bus, bounded by the timeout."""

    async def setUp(self):
        self.store = await make_store(self)
        self.receiver, self.url = await start_receiver(self)
        self.config = LiveConfig(endpoints={"message.received": self.url}, secret=SECRET)

    def start(self, **kw):
        http, metrics = http_client(self), Metrics(process_collectors=False)
        worker = WebhookWorker(self.store, self.config, http, reactor, "n", metrics=metrics, **kw)
        worker.startService()
        self.addCleanup(worker.stopService)
        return worker

    async def test_a_new_event_wakes_an_idle_worker(self):
        self.assertIsInstance(self.store.changes, LocalChangeBus)
        self.start()
        # Let it go idle: after a second of empty polls it sleeps a whole second.
        await task.deferLater(reactor, 1.0, lambda: None)
        started = time.monotonic()
        arrived = self.receiver.arrived
        arrived.addTimeout(5, reactor)
        await self.store.record_event("message.received", {"event": "message.received"})
        await arrived
        self.assertLess(time.monotonic() - started, 0.5)

    async def test_timeout_is_a_failure(self):
        self.receiver.hang = True
        self.config.set(default_timeout_seconds=1)
        self.start()
        event_id = await self.store.record_event("message.received", {"event": "message.received"})
        for _ in range(300):
            event = await self.store.get_event(event_id)
            if event.status == "retry":
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(event.status, "retry")
        self.assertIn("timeout after 1s", event.last_error["error"])
