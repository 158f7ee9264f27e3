"""Routing rules over HTTP (API.md 1.5), and a rule applied to mail arriving over SMTP."""

from twisted.trial import unittest

from tests.api.client import APIClient, error
from tests.smtp.helpers import Session
from tests.support import make_store

NOBODY = "01JNOTTHERE0000000000000000"


class RoutingRuleTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.alice = await self.store.create_mailbox("alice@example.com")

    async def test_create_list_patch_delete(self):
        body = {
            "scope": "mailbox",
            "scope_ref": self.alice.id,
            "name": "newsletters",
            "conditions": {"plus_tag": "news"},
            "actions": [{"type": "move", "folder": "News"}],
        }
        answer = await self.client.post("/api/v1/routing/rules", body)
        self.assertEqual(answer.status, 201, answer.body)
        rule = answer.json["data"]
        self.assertEqual(rule["enabled"], True)
        self.assertNotIn("priority", rule)  # 0 is omitted
        self.assertEqual(rule["conditions"], {"plus_tag": "news"})
        listed = (await self.client.get("/api/v1/routing/rules")).json
        self.assertEqual(listed["data"], [rule])
        # The legacy path is the same collection.
        self.assertEqual((await self.client.get("/api/v1/routing_rules")).json, listed)
        answer = await self.client.patch(
            f"/api/v1/routing_rules/{rule['id']}", {"enabled": False, "priority": 3, "name": ""}
        )
        self.assertEqual(answer.status, 200, answer.body)
        patched = answer.json["data"]
        self.assertNotIn("enabled", patched)
        self.assertEqual((patched["priority"], patched["name"]), (3, "newsletters"))
        # No GET by id.
        answer = await self.client.get(f"/api/v1/routing/rules/{rule['id']}")
        self.assertEqual(answer.status, 405)
        answer = await self.client.delete(f"/api/v1/routing/rules/{rule['id']}")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertEqual((await self.client.get("/api/v1/routing/rules")).json["data"], [])
        answer = await self.client.delete(f"/api/v1/routing/rules/{rule['id']}")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (404, "routing_rule_delete_failed")
        )
        answer = await self.client.patch(f"/api/v1/routing/rules/{NOBODY}", {"name": "x"})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (404, "routing_rule_update_failed")
        )
        types = [e.event_type for e in await self.store.list_audit_events()][:3]
        self.assertEqual(
            types, ["routing_rule.deleted", "routing_rule.updated", "routing_rule.created"]
        )

    async def test_validation(self):
        good = {"scope": "global", "name": "n", "actions": [{"type": "mark_read"}]}
        for change in (
            {"scope": None},
            {"name": ""},
            {"actions": []},
            {"scope": "planet"},
            {"priority": "high"},
            {"priority": 1.5},
            {"enabled": "yes"},
            {"conditions": []},
            {"conditions": {"from": 3}},
            {"actions": {"type": "move"}},
            {"actions": ["move"]},
        ):
            answer = await self.client.post("/api/v1/routing/rules", {**good, **change})
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (400, "invalid_routing_rule"), change
            )
        answer = await self.client.post("/api/v1/routing/rules", {"name": "n"})
        self.assertEqual(
            answer.json, error("invalid_routing_rule", "Scope, name and actions are required")
        )
        self.assertEqual((await self.client.get("/api/v1/routing/rules")).json["data"], [])

    async def test_rule_moves_smtp_mail_into_a_folder(self):
        folder = await self.client.post(
            f"/api/v1/mailboxes/{self.alice.id}/folders", {"name": "Lists/News"}
        )
        folder_id = folder.json["data"]["id"]
        await self.client.post(
            "/api/v1/routing/rules",
            {
                "scope": "address",
                "scope_ref": "alice+news@example.com",
                "name": "news",
                "conditions": {"subject_contains": "weekly"},
                "actions": [{"type": "move", "folder_id": folder_id}, {"type": "mark_read"}],
            },
        )
        session = Session(self, store=self.store)
        session.lines()
        session.command(b"EHLO client.example\r\n")
        for subject in (b"The WEEKLY digest", b"Something else"):
            lines = await session.converse(
                b"MAIL FROM:<x@example.org>\r\nRCPT TO:<alice+news@example.com>\r\nDATA\r\n",
                replies=3,
            )
            lines = await session.converse(b"Subject: " + subject + b"\r\n\r\nHi.\r\n.\r\n")
            self.assertTrue(lines[-1].startswith(b"250 2.0.0 OK"), lines)
        base = f"/api/v1/mailboxes/{self.alice.id}/messages"
        [moved] = (await self.client.get(f"{base}?folder_id={folder_id}")).json["data"]
        self.assertEqual(moved["message"]["subject"], "The WEEKLY digest")
        self.assertEqual(moved["mailbox_message"]["uid"], 1)
        self.assertIs(moved["mailbox_message"]["read"], True)
        [other] = (await self.client.get(f"{base}?q=folder:INBOX")).json["data"]
        self.assertEqual(other["message"]["subject"], "Something else")
