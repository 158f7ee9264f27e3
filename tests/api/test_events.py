"""GET /api/v1/events (API.md 1.10) on events a real delivery wrote."""

from twisted.trial import unittest

from haitatsu.storage.records import Delivery
from haitatsu.storage.store.events import Received
from tests.api.client import APIClient
from tests.storage.test_events import deliver
from tests.support import make_store


class EventListTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.bob = await self.store.create_mailbox("bob@example.com")

    async def test_lists_the_received_event(self):
        [placed] = await deliver(
            self.store,
            [Delivery(self.bob.id)],
            [Received("bob+x@example.com", "bob@example.com", "x", (self.bob.id,))],
        )
        answer = await self.client.get("/api/v1/events")
        self.assertEqual(answer.status, 200, answer.body)
        [event] = answer.json["data"]
        self.assertEqual(answer.json["pagination"], {"next": "", "limit": 50})
        self.assertEqual(event["event_type"], "message.received")
        self.assertEqual(event["status"], "queued")
        self.assertEqual(event["mailbox_id"], self.bob.id)
        self.assertEqual(event["message_id"], placed.message_id)
        self.assertEqual(event["payload"]["plus_tag"], "x")
        self.assertEqual(event["payload"]["default_destinations"], [self.bob.id])
        # Zero values are omitted, as everywhere.
        for absent in ("attempts", "locked_by", "locked_until", "last_error"):
            self.assertNotIn(absent, event)

    async def test_filters_and_pages(self):
        for n in range(3):
            await self.store.record_event("x.test", {"event": "x.test", "n": n}, trace_id=f"T{n}")
        await self.store.record_event("y.test", {"event": "y.test"}, mailbox_id=self.bob.id)
        answer = await self.client.get("/api/v1/events?event_type=x.test&limit=2")
        self.assertEqual(len(answer.json["data"]), 2)
        cursor = answer.json["pagination"]["next"]
        self.assertTrue(cursor)
        rest = await self.client.get(f"/api/v1/events?event_type=x.test&limit=2&cursor={cursor}")
        self.assertEqual(len(rest.json["data"]), 1)
        self.assertEqual(rest.json["pagination"]["next"], "")
        answer = await self.client.get("/api/v1/events?trace_id=T1")
        self.assertEqual([e["payload"]["n"] for e in answer.json["data"]], [1])
        answer = await self.client.get(f"/api/v1/events?mailbox_id={self.bob.id}")
        self.assertEqual([e["event_type"] for e in answer.json["data"]], ["y.test"])
        answer = await self.client.get("/api/v1/events?after=2999-01-01T00:00:00Z")
        self.assertEqual(answer.json["data"], [])
        answer = await self.client.get("/api/v1/events?before=2999-01-01T00:00:00Z")
        self.assertEqual(len(answer.json["data"]), 4)

    async def test_bad_times_and_cursors(self):
        answer = await self.client.get("/api/v1/events?after=yesterday")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_after"))
        answer = await self.client.get("/api/v1/events?before=2025-13-01T00:00:00Z")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_before"))
        answer = await self.client.get("/api/v1/events?cursor=!!")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_cursor"))

    async def test_needs_the_token(self):
        answer = await self.client.get("/api/v1/events", auth=False)
        self.assertEqual(answer.status, 401)
