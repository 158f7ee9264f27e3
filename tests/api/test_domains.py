"""Domains and their quotas over HTTP (our addition; docs/api.md "Domains") on a real store."""

from twisted.trial import unittest

from haitatsu.api.conventions import decode_cursor
from tests.api.client import APIClient, error
from tests.support import deliver_bytes, make_store

MESSAGE = b"From: a@example.org\r\nSubject: domains\r\n\r\nHello.\r\n"


class DomainTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    def put_quota(self, domain, body):
        return self.client.request("PUT", f"/api/v1/domains/{domain}/quota", json_body=body)

    async def test_put_creates_then_updates(self):
        answer = await self.put_quota("Example.COM", {"quota_bytes": 5000})
        self.assertEqual(answer.status, 201, answer.body)
        created = answer.json["data"]
        self.assertEqual(created["name"], "example.com")
        self.assertEqual(created["quota_bytes"], 5000)
        self.assertRegex(created["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
        # Zero values are omitted, as for every entity (docs/api.md "Omitted fields").
        self.assertNotIn("used_bytes", created)
        self.assertNotIn("mailbox_count", created)
        answer = await self.put_quota("example.com", {"quota_bytes": 7000})
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json["data"]["quota_bytes"], 7000)
        self.assertEqual(answer.json["data"]["created_at"], created["created_at"])
        answer = await self.put_quota("example.com", {"quota_bytes": 0})
        self.assertEqual(answer.status, 200)
        self.assertNotIn("quota_bytes", answer.json["data"])
        self.assertEqual((await self.store.get_domain("example.com")).quota_bytes, 0)

    async def test_get_shows_usage_over_the_domains_mailboxes(self):
        alice = await self.store.create_mailbox("alice@example.com")
        bob = await self.store.create_mailbox("Bob@EXAMPLE.com")
        other = await self.store.create_mailbox("carol@other.example")
        for mailbox in (alice, bob, other):
            await deliver_bytes(self.store, MESSAGE, mailbox.id)
        await self.put_quota("example.com", {"quota_bytes": 10 * len(MESSAGE)})
        answer = await self.client.get("/api/v1/domains/EXAMPLE.com")
        self.assertEqual(answer.status, 200, answer.body)
        found = answer.json["data"]
        self.assertEqual(
            {k: found[k] for k in ("name", "quota_bytes", "used_bytes", "mailbox_count")},
            {
                "name": "example.com",
                "quota_bytes": 10 * len(MESSAGE),
                "used_bytes": 2 * len(MESSAGE),
                "mailbox_count": 2,
            },
        )

    async def test_get_unknown_domain_is_404(self):
        await self.store.create_mailbox("alice@example.com")
        answer = await self.client.get("/api/v1/domains/example.com")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json, error("domain_not_found", "Domain not found"))

    async def test_list_is_paginated_newest_first(self):
        for i in range(3):
            await self.put_quota(f"d{i}.example", {"quota_bytes": 100 + i})
        answer = await self.client.get("/api/v1/domains?limit=2")
        self.assertEqual(answer.status, 200)
        self.assertEqual([d["name"] for d in answer.json["data"]], ["d2.example", "d1.example"])
        self.assertEqual(answer.json["pagination"]["limit"], 2)
        cursor = answer.json["pagination"]["next"]
        self.assertEqual(decode_cursor(cursor)[1], "d1.example")
        answer = await self.client.get(f"/api/v1/domains?limit=2&cursor={cursor}")
        self.assertEqual([d["name"] for d in answer.json["data"]], ["d0.example"])
        self.assertEqual(answer.json["pagination"], {"next": "", "limit": 2})

    async def test_empty_list(self):
        answer = await self.client.get("/api/v1/domains")
        self.assertEqual(answer.json, {"data": [], "pagination": {"next": "", "limit": 50}})

    async def test_invalid_requests(self):
        async def check(answer, status, code):
            answer = await answer
            self.assertEqual(answer.status, status, answer.body)
            self.assertEqual(answer.json["error"]["code"], code)
            self.assertEqual(answer.json["error"]["details"], {})

        await check(self.put_quota("example.com", {}), 400, "quota_bytes_required")
        await check(self.put_quota("example.com", {"quota_bytes": -1}), 400, "invalid_domain")
        await check(self.put_quota("example.com", {"quota_bytes": "5"}), 400, "invalid_domain")
        await check(self.put_quota("example.com", {"quota_bytes": 1.5}), 400, "invalid_domain")
        await check(self.put_quota("example.com", [1]), 400, "invalid_request")
        await check(self.put_quota("bad..name", {"quota_bytes": 1}), 400, "invalid_domain")
        await check(self.put_quota("a%40b.com", {"quota_bytes": 1}), 400, "invalid_domain")
        await check(self.client.get("/api/v1/domains/-x"), 400, "invalid_domain")
        await check(self.client.get("/api/v1/domains?cursor=%3D"), 400, "invalid_cursor")
        self.assertEqual(await self.store.list_domains(), [])

    async def test_needs_the_token(self):
        for method, path in (
            ("GET", "/api/v1/domains"),
            ("GET", "/api/v1/domains/example.com"),
            ("PUT", "/api/v1/domains/example.com/quota"),
        ):
            answer = await self.client.request(method, path, auth=False)
            self.assertEqual(answer.status, 401, (method, path))

    async def test_quota_is_enforced_after_put(self):
        """The quota set over HTTP is the one delivery enforces."""
        mailbox = await self.store.create_mailbox("alice@example.com")
        await self.put_quota("example.com", {"quota_bytes": len(MESSAGE)})
        await deliver_bytes(self.store, MESSAGE, mailbox.id)
        recipient = await self.store.resolve_recipient("alice@example.com")
        self.assertEqual(recipient.over_quota, "domain")

    async def test_storage_unavailable_is_503(self):
        await self.store.close()
        answer = await self.put_quota("example.com", {"quota_bytes": 1})
        self.assertEqual(answer.status, 503, answer.body)
        self.assertEqual(answer.json["error"]["code"], "storage_unavailable")
