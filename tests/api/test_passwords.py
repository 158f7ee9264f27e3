"""App passwords over HTTP (API.md 1.3), with the legacy aliases."""

import re

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import make_store

EXPLICIT = {"id", "mailbox_id", "name", "scopes", "created_at", "updated_at"}


class AppPasswordTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.base = f"/api/v1/mailboxes/{self.mailbox.id}/passwords"

    async def create(self, name="phone", scopes=("imap",), path=None):
        answer = await self.client.post(path or self.base, {"name": name, "scopes": list(scopes)})
        self.assertEqual(answer.status, 201, answer.body)
        return answer.json["data"]

    async def assertError(self, coro, status, code):
        answer = await coro
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.json["error"]["code"], code)

    async def test_create_returns_a_32_character_password_once(self):
        created = await self.create(scopes=["imap", "smtp"])
        self.assertRegex(created["password"], r"^[A-Za-z0-9_-]{32}$")
        self.assertEqual(set(created), EXPLICIT | {"password"})
        self.assertEqual(created["mailbox_id"], self.mailbox.id)
        self.assertEqual(created["scopes"], ["imap", "smtp"])
        # The password works for the scopes it was given, and only those.
        ok = await self.store.authenticate("alice@example.com", created["password"], "imap")
        self.assertEqual(ok.id, self.mailbox.id)
        self.assertIsNone(
            await self.store.authenticate("alice@example.com", created["password"], "pop3")
        )

    async def test_lists_never_show_the_password_or_its_hash(self):
        created = await self.create()
        answer = await self.client.get(self.base)
        self.assertEqual(answer.status, 200)
        [listed] = answer.json["data"]
        self.assertEqual(listed["id"], created["id"])
        self.assertEqual(set(listed), EXPLICIT)
        self.assertNotIn(created["password"].encode(), answer.body)
        self.assertNotIn(b"argon2", answer.body)
        self.assertNotIn(b"hash", answer.body)

    async def test_explicit_fields_appear_even_when_empty(self):
        answer = await self.client.post(self.base, {"name": "x", "scopes": ["pop3"]})
        self.assertEqual(answer.status, 201)
        self.assertTrue(EXPLICIT <= set(answer.json["data"]))

    async def test_validation(self):
        for body in (
            {},
            {"name": "x"},
            {"scopes": ["imap"]},
            {"name": "", "scopes": ["imap"]},
            {"name": "x", "scopes": []},
            {"name": 1, "scopes": ["imap"]},
            {"name": "x", "scopes": "imap"},
            {"name": "x", "scopes": [1]},
        ):
            await self.assertError(self.client.post(self.base, body), 400, "invalid_app_password")
        await self.assertError(
            self.client.post(self.base, {"name": "x", "scopes": ["imap", "jmap"]}),
            400,
            "invalid_app_password_scope",
        )
        await self.assertError(self.client.post(self.base, body=b"nope"), 400, "invalid_request")
        self.assertEqual(await self.store.list_app_passwords(self.mailbox.id), [])

    async def test_create_for_a_missing_mailbox_is_a_conflict(self):
        await self.assertError(
            self.client.post(
                "/api/v1/mailboxes/01JNOTTHERE0000000000000000/passwords",
                {"name": "x", "scopes": ["imap"]},
            ),
            409,
            "constraint_violation",
        )

    async def test_revoke_sets_revoked_at_and_stops_logins(self):
        created = await self.create()
        answer = await self.client.delete(f"{self.base}/{created['id']}")
        self.assertEqual(answer.status, 200)
        data = answer.json["data"]
        self.assertIn("revoked_at", data)
        self.assertIn("deleted_at", data)
        self.assertNotIn("password", data)
        self.assertIsNone(
            await self.store.authenticate("alice@example.com", created["password"], "imap")
        )
        # Revoked entries stay in the list.
        answer = await self.client.get(self.base)
        self.assertIn("revoked_at", answer.json["data"][0])

    async def test_revoke_missing_is_404(self):
        await self.assertError(
            self.client.delete(f"{self.base}/01JNOTTHERE0000000000000000"),
            404,
            "app_password_revoke_failed",
        )

    async def test_list_pages(self):
        ids = [(await self.create(name=f"p{i}"))["id"] for i in range(3)]
        answer = await self.client.get(self.base + "?limit=2")
        first = answer.json
        self.assertEqual(len(first["data"]), 2)
        self.assertNotEqual(first["pagination"]["next"], "")
        answer = await self.client.get(self.base + "?limit=2&cursor=" + first["pagination"]["next"])
        second = answer.json
        self.assertEqual(second["pagination"]["next"], "")
        seen = [p["id"] for p in first["data"] + second["data"]]
        self.assertEqual(seen, list(reversed(ids)))
        await self.assertError(self.client.get(self.base + "?cursor=%25"), 400, "invalid_cursor")

    async def test_legacy_aliases(self):
        legacy = f"/api/v1/mailboxes/{self.mailbox.id}/app_passwords"
        created = await self.create(path=legacy)
        self.assertTrue(re.fullmatch(r"[A-Za-z0-9_-]{32}", created["password"]))
        answer = await self.client.get(legacy)
        self.assertEqual([p["id"] for p in answer.json["data"]], [created["id"]])
        answer = await self.client.delete(f"/api/v1/app_passwords/{created['id']}")
        self.assertEqual(answer.status, 200)
        self.assertIn("revoked_at", answer.json["data"])

    async def test_legacy_client_chosen_password_is_refused(self):
        legacy = f"/api/v1/mailboxes/{self.mailbox.id}/app_passwords"
        await self.assertError(
            self.client.post(legacy, {"name": "x", "scopes": ["imap"], "password": "mine"}),
            400,
            "invalid_app_password",
        )
        self.assertEqual(await self.store.list_app_passwords(self.mailbox.id), [])
