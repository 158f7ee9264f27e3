"""GET /metrics: Prometheus text with the original's names, behind the token, incremented where
things happen."""

import smtplib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.metrics import METRICS, Metrics
from haitatsu.smtp import InboundSMTPFactory
from tests.api.client import APIClient
from tests.smtp.helpers import make_config, temp_dir
from tests.support import make_store

NAMES = (
    "api_requests_total",
    "queue_depth",
    "worker_jobs_total",
    "smtp_connections_total",
    "messages_received_total",
    "messages_sent_total",
    "messages_delivered_total",
    "messages_bounced_total",
    "mailbox_over_quota_total",
    "webhook_failures_total",
    "imap_sessions",
)


class MetricsTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.client.api.metrics = self.metrics = Metrics(process_collectors=False)

    async def test_exposed_with_the_original_names_behind_the_token(self):
        answer = await self.client.get("/metrics", auth=False)
        self.assertEqual(answer.status, 401)
        answer = await self.client.get("/metrics")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.header("Content-Type").startswith("text/plain"))
        text = answer.body.decode()
        for name in NAMES:
            self.assertIn(f"# TYPE {name} ", text)
        self.assertNotIn("_created", text)

    async def test_api_requests_and_queue_depth(self):
        await self.store.record_event("x.test", {"event": "x.test"})
        await self.client.get("/api/v1/events")
        await self.client.get("/api/v1/events?after=nope")
        answer = await self.client.get("/metrics")
        text = answer.body.decode()
        self.assertIn('api_requests_total{method="GET",status="200"} 1.0', text)
        self.assertIn('api_requests_total{method="GET",status="400"} 1.0', text)
        self.assertIn("queue_depth 1.0", text)

    async def test_smtp_counters(self):
        bob = await self.store.create_mailbox("bob@example.com")
        factory = InboundSMTPFactory(
            lambda: make_config(), self.store, reactor, temp_dir(self) + "/spool"
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        connections = METRICS.value("smtp_connections_total")
        received = METRICS.value("messages_received_total")

        def send():
            with smtplib.SMTP("127.0.0.1", port.getHost().port, timeout=10) as c:
                c.sendmail("a@example.org", [bob.primary_address], b"Subject: x\r\n\r\nhi\r\n")

        await deferToThread(send)
        self.assertEqual(METRICS.value("smtp_connections_total"), connections + 1)
        self.assertEqual(METRICS.value("messages_received_total"), received + 1)
