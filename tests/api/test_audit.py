"""The audit log over HTTP (API.md 1.9), and the legacy ``/audit_events`` path."""

from urllib.parse import quote

from twisted.trial import unittest

from haitatsu.storage.records import rfc3339
from tests.api.client import APIClient
from tests.support import make_store


class AuditTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    async def test_events_and_filters(self):
        a = (await self.client.post("/api/v1/mailboxes", {"primary_address": "a@x.org"})).json[
            "data"
        ]
        await self.client.post("/api/v1/mailboxes", {"primary_address": "b@x.org"})
        await self.client.post("/api/v1/routes", {"source_address": "r@x.org", "type": "alias"})
        answer = await self.client.get("/api/v1/audit")
        self.assertEqual(answer.status, 200)
        events = answer.json["data"]
        self.assertEqual(
            [e["event_type"] for e in events],
            ["route.created", "mailbox.created", "mailbox.created"],
        )
        first = events[-1]
        self.assertEqual(
            {
                k: first[k]
                for k in ("actor_type", "actor_id", "entity_type", "entity_id", "mailbox_id")
            },
            {
                "actor_type": "service",
                "actor_id": "service",
                "entity_type": "mailbox",
                "entity_id": a["id"],
                "mailbox_id": a["id"],
            },
        )
        self.assertNotIn("details", first)  # always {}, so omitted
        self.assertNotIn("mailbox_id", events[0])  # routes have none
        legacy = await self.client.get("/api/v1/audit_events")
        self.assertEqual(legacy.json, answer.json)

        async def types(params):
            answer = await self.client.get("/api/v1/audit?" + params)
            self.assertEqual(answer.status, 200, answer.body)
            return [e["event_type"] for e in answer.json["data"]]

        self.assertEqual(await types(f"mailbox_id={a['id']}"), ["mailbox.created"])
        self.assertEqual(await types("event_type=route.created"), ["route.created"])
        self.assertEqual(await types("trace_id=nothing"), [])
        # Both bounds are inclusive.
        when = quote(first["created_at"])
        self.assertEqual(await types(f"after={when}&before={when}"), ["mailbox.created"])
        self.assertEqual(len(await types(f"after={when}")), 3)
        self.assertEqual(await types(f"before={quote(rfc3339(0))}"), [])
        # Pagination as everywhere.
        page = (await self.client.get("/api/v1/audit?limit=2")).json
        self.assertEqual(len(page["data"]), 2)
        rest = (
            await self.client.get("/api/v1/audit?limit=2&cursor=" + page["pagination"]["next"])
        ).json
        self.assertEqual([e["id"] for e in rest["data"]], [first["id"]])

    async def test_invalid_bounds(self):
        for name in ("after", "before"):
            for value in ("yesterday", "2025-05-01", "2025-05-01T10:00:00"):
                answer = await self.client.get(f"/api/v1/audit?{name}={value}")
                self.assertEqual(
                    (answer.status, answer.json["error"]["code"]), (400, f"invalid_{name}")
                )
        answer = await self.client.get("/api/v1/audit?cursor=***")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_cursor"))

    async def test_far_bounds_are_no_bound_not_an_error(self):
        """Years past 2262 do not fit int64 nanoseconds: they mean "no bound", never a 500."""
        await self.store.create_mailbox("far@example.com")
        answer = await self.client.get("/api/v1/audit?before=2999-01-01T00:00:00Z")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(len(answer.json["data"]), 1)
        answer = await self.client.get("/api/v1/audit?after=2999-01-01T00:00:00Z")
        self.assertEqual((answer.status, answer.json["data"]), (200, []))
