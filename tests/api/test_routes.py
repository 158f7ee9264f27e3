"""Routes over HTTP (API.md 1.4), and what they do to inbound mail (API.md 5.2)."""

from twisted.trial import unittest

from tests.api.client import APIClient, error
from tests.smtp.helpers import Session
from tests.support import make_store

NOBODY = "01JNOTTHERE0000000000000000"


class RouteTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")

    async def create(self, **body):
        return await self.client.post("/api/v1/routes", body)

    async def test_create_get_list(self):
        answer = await self.create(
            source_address="Team@example.com",
            type="alias",
            destinations=[self.alice.id, self.bob.id],
        )
        self.assertEqual(answer.status, 201, answer.body)
        route = answer.json["data"]
        self.assertEqual(len(route["id"]), 26)
        self.assertEqual(
            {k: route[k] for k in ("source_address", "type", "destinations", "status")},
            {
                "source_address": "Team@example.com",
                "type": "alias",
                "destinations": [self.alice.id, self.bob.id],
                "status": "active",
            },
        )
        self.assertNotIn("deleted_at", route)
        got = await self.client.get(f"/api/v1/routes/{route['id']}")
        self.assertEqual((got.status, got.json["data"]), (200, route))
        listed = await self.client.get("/api/v1/routes")
        self.assertEqual(listed.json, {"data": [route], "pagination": {"next": "", "limit": 50}})
        [event] = await self.store.list_audit_events(event_type="route.created")
        self.assertEqual(
            (event.entity_type, event.entity_id, event.mailbox_id), ("route", route["id"], "")
        )

    async def test_validation_codes(self):
        for body, status, code in (
            ({"type": "alias"}, 400, "invalid_route"),
            ({"source_address": "a@example.com"}, 400, "invalid_route"),
            (
                {"source_address": "bounces@example.com", "type": "alias"},
                400,
                "reserved_local_part",
            ),
            ({"source_address": "x@example.com", "type": "catch_all"}, 400, "invalid_route"),
            ({"source_address": 5, "type": "alias"}, 400, "invalid_route"),
            ({"source_address": "a@x", "type": "alias", "destinations": "x"}, 400, "invalid_route"),
            ({"source_address": "a@x", "type": "alias", "destinations": [1]}, 400, "invalid_route"),
        ):
            answer = await self.create(**body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (status, code), body)
        answer = await self.create(type="alias")
        self.assertEqual(
            answer.json, error("invalid_route", "Source address and type are required")
        )
        answer = await self.client.post("/api/v1/routes", body=b"{nope")
        self.assertEqual(answer.json, error("invalid_request", "Invalid JSON body"))
        await self.create(source_address="dup@example.com", type="alias")
        answer = await self.create(source_address="DUP@example.com", type="alias")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "constraint_violation")
        )
        # Nothing half made: one route, one audit row.
        self.assertEqual(len((await self.client.get("/api/v1/routes")).json["data"]), 1)

    async def test_patch_and_soft_delete(self):
        route = (await self.create(source_address="a@example.com", type="alias")).json["data"]
        path = f"/api/v1/routes/{route['id']}"
        answer = await self.client.patch(
            path, {"destinations": [self.bob.id], "source_address": "", "status": "paused"}
        )
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json["data"]["destinations"], [self.bob.id])
        self.assertEqual(answer.json["data"]["source_address"], "a@example.com")
        self.assertEqual(answer.json["data"]["status"], "paused")
        answer = await self.client.patch(path, {"type": "catch_all"})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_route"))
        answer = await self.client.delete(path)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json["data"]["status"], "deleted")
        self.assertIn("deleted_at", answer.json["data"])
        # Soft: still readable.
        self.assertEqual((await self.client.get(path)).status, 200)
        types = [e.event_type for e in await self.store.list_audit_events()]
        self.assertEqual(types[:3], ["route.deleted", "route.updated", "route.created"])
        for method, code in (
            ("GET", "route_not_found"),
            ("PATCH", "route_update_failed"),
            ("DELETE", "route_delete_failed"),
        ):
            answer = await self.client.request(method, f"/api/v1/routes/{NOBODY}", json_body={})
            self.assertEqual((answer.status, answer.json["error"]["code"]), (404, code))

    async def test_smtp_delivers_to_every_destination_once(self):
        route = (
            await self.create(
                source_address="team@example.com",
                type="alias",
                destinations=[self.alice.id, self.bob.id, self.alice.id],
            )
        ).json["data"]
        session = Session(self, store=self.store)
        session.lines()
        session.command(b"EHLO client.example\r\n")
        lines = await session.converse(
            b"MAIL FROM:<x@example.org>\r\nRCPT TO:<team+news@example.com>\r\n"
            b"RCPT TO:<alice@example.com>\r\nDATA\r\n",
            replies=4,
        )
        self.assertEqual(lines[-1][:3], b"354", lines)
        lines = await session.converse(b"Subject: hi\r\n\r\nHello.\r\n.\r\n")
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 OK"), lines)
        for mailbox in (self.alice, self.bob):
            answer = await self.client.get(f"/api/v1/mailboxes/{mailbox.id}/messages")
            [view] = answer.json["data"]
            row = view["mailbox_message"]
            self.assertEqual(row["resolved_route_id"], route["id"])
            self.assertEqual(row["plus_tag"], "news")
            self.assertEqual(row["original_rcpt"], "team+news@example.com")

    async def test_pattern_and_catch_all_over_smtp(self):
        await self.create(
            source_address="sales-*@example.com", type="pattern", destinations=[self.bob.id]
        )
        await self.create(
            source_address="*@example.com", type="catch_all", destinations=[self.alice.id]
        )
        session = Session(self, store=self.store)
        session.lines()
        session.command(b"EHLO client.example\r\n")
        lines = await session.converse(
            b"MAIL FROM:<x@example.org>\r\nRCPT TO:<Sales-EU@example.com>\r\n"
            b"RCPT TO:<whoever@example.com>\r\nRCPT TO:<x@example.net>\r\n",
            replies=4,
        )
        self.assertEqual(
            lines[1:],
            [b"250 2.1.5 recipient OK", b"250 2.1.5 recipient OK", b"550 5.1.1 unknown recipient"],
        )
