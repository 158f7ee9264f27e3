"""Sender rules over HTTP (API.md 1.12)."""

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import make_store


class SenderRuleTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    async def create(self, **fields):
        return await self.client.post("/api/v1/rules/sender", fields)

    async def test_create_list_delete(self):
        answer = await self.create(
            scope="global", kind="block", match_type="email", value="Spam@Example.ORG"
        )
        self.assertEqual(answer.status, 201, answer.body)
        rule = answer.json["data"]
        self.assertEqual(rule["value"], "spam@example.org")
        self.assertEqual(rule["action"], "junk")
        self.assertEqual(rule["scope_ref"], "")
        self.assertEqual(
            set(rule),
            {
                "id",
                "scope",
                "scope_ref",
                "kind",
                "match_type",
                "value",
                "action",
                "created_at",
                "updated_at",
            },
        )
        await self.create(
            scope="mailbox", scope_ref="MB", kind="allow", match_type="cidr", value="10.0.0.0/8"
        )
        answer = await self.client.get("/api/v1/rules/sender")
        self.assertEqual(len(answer.json["data"]), 2)
        answer = await self.client.get("/api/v1/rules/sender?kind=allow")
        self.assertEqual([r["match_type"] for r in answer.json["data"]], ["cidr"])
        answer = await self.client.get("/api/v1/rules/sender?scope=global")
        self.assertEqual([r["id"] for r in answer.json["data"]], [rule["id"]])
        answer = await self.client.delete(f"/api/v1/rules/sender/{rule['id']}")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        answer = await self.client.delete(f"/api/v1/rules/sender/{rule['id']}")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (404, "sender_rule_delete_failed")
        )

    async def test_validation(self):
        cases = [
            ({}, "scope is required"),
            (
                {"scope": "planet", "kind": "allow", "match_type": "ip", "value": "1.2.3.4"},
                "scope must be",
            ),
            (
                {"scope": "global", "kind": "maybe", "match_type": "ip", "value": "1.2.3.4"},
                "kind must be",
            ),
            (
                {"scope": "global", "kind": "allow", "match_type": "ip", "value": ""},
                "value is required",
            ),
            (
                {"scope": "global", "kind": "allow", "match_type": "ip", "value": "nope"},
                "IP address",
            ),
            (
                {"scope": "global", "kind": "allow", "match_type": "cidr", "value": "1.2.3.4/99"},
                "CIDR",
            ),
            (
                {
                    "scope": "global",
                    "kind": "allow",
                    "match_type": "ip",
                    "value": "1.2.3.4",
                    "action": "x",
                },
                "action",
            ),
            (
                {"scope": "mailbox", "kind": "allow", "match_type": "ip", "value": "1.2.3.4"},
                "scope_ref",
            ),
            (
                {"scope": 3, "kind": "allow", "match_type": "ip", "value": "1.2.3.4"},
                "scope must be a string",
            ),
        ]
        for body, reason in cases:
            answer = await self.create(**body)
            self.assertEqual(answer.status, 400, body)
            self.assertEqual(answer.json["error"]["code"], "invalid_sender_rule")
            self.assertIn(reason, answer.json["error"]["message"])
        answer = await self.client.post("/api/v1/rules/sender", body=b"{nope")
        self.assertEqual(answer.json["error"]["code"], "invalid_request")
        self.assertEqual((await self.client.get("/api/v1/rules/sender")).json["data"], [])
