"""Bad input on every route that takes a body or an id (issue 6 point 5): the documented 4xx,
never a 500, never a change half made."""

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import deliver_bytes, make_store

NOBODY = "01JNOTTHERE0000000000000000"


class BadInputTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")
        [self.placed] = await deliver_bytes(self.store, b"Subject: x\r\n\r\nx\r\n", self.alice.id)
        self.label = await self.store.create_label(self.alice.id, "L")
        self.folder = await self.store.create_folder(self.alice.id, "F")
        self.route = await self.store.create_route("r@example.com", "alias", [self.alice.id])
        self.rule = await self.store.create_rule("global", "n", [{"type": "mark_read"}])

    def body_routes(self):
        m, a = self.placed.id, self.alice.id
        return [
            ("POST", "/api/v1/routes"),
            ("PATCH", f"/api/v1/routes/{self.route.id}"),
            ("POST", "/api/v1/routing/rules"),
            ("PATCH", f"/api/v1/routing/rules/{self.rule.id}"),
            ("POST", f"/api/v1/mailboxes/{a}/labels"),
            ("PATCH", f"/api/v1/labels/{self.label.id}"),
            ("POST", f"/api/v1/mailboxes/{a}/folders"),
            ("PATCH", f"/api/v1/folders/{self.folder.id}"),
            ("PATCH", f"/api/v1/messages/{m}"),
            ("POST", f"/api/v1/messages/{m}/move"),
            ("POST", f"/api/v1/messages/{m}/labels"),
            ("POST", "/api/v1/mailboxes"),
            ("PATCH", f"/api/v1/mailboxes/{a}"),
            ("POST", f"/api/v1/mailboxes/{a}/passwords"),
        ]

    async def snapshot(self):
        """What a refused request must leave as it was."""
        return (
            await self.store.list_routes(),
            await self.store.list_rules(),
            await self.store.list_labels(self.alice.id),
            await self.store.list_folders(self.alice.id),
            await self.store.get_message_entry(self.placed.id),
            len(await self.store.list_audit_events(limit=1000)),
        )

    async def test_malformed_json_and_wrong_shapes(self):
        before = await self.snapshot()
        for method, path in self.body_routes():
            for raw in (b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b'{"a": NaN}'):
                answer = await self.client.request(method, path, body=raw)
                self.assertEqual(answer.status, 400, (method, path, raw, answer.body))
                self.assertEqual(answer.json["error"]["code"], "invalid_request", (method, path))
        self.assertEqual(await self.snapshot(), before)

    async def test_wrong_types_are_400_naming_the_field(self):
        before = await self.snapshot()
        m, a = self.placed.id, self.alice.id
        cases = [
            ("POST", "/api/v1/routes", {"source_address": ["x"], "type": "alias"}),
            ("POST", "/api/v1/routes", {"source_address": "x@y", "type": "alias", "status": 1}),
            ("PATCH", f"/api/v1/routes/{self.route.id}", {"destinations": [{}]}),
            ("POST", "/api/v1/routing/rules", {"scope": 2, "name": "n", "actions": [{}]}),
            ("PATCH", f"/api/v1/routing/rules/{self.rule.id}", {"enabled": "false"}),
            ("PATCH", f"/api/v1/routing/rules/{self.rule.id}", {"priority": "1"}),
            ("POST", f"/api/v1/mailboxes/{a}/labels", {"name": {"x": 1}}),
            ("PATCH", f"/api/v1/labels/{self.label.id}", {"name": 7}),
            ("POST", f"/api/v1/mailboxes/{a}/folders", {"name": True}),
            ("PATCH", f"/api/v1/folders/{self.folder.id}", {"system": "no"}),
            ("PATCH", f"/api/v1/messages/{m}", {"flagged": 1}),
            ("PATCH", f"/api/v1/messages/{m}", {"keywords": [1]}),
            ("POST", f"/api/v1/messages/{m}/move", {"folder_id": ["x"]}),
            ("POST", f"/api/v1/messages/{m}/labels", {"label_id": 5}),
        ]
        for method, path, body in cases:
            answer = await self.client.request(method, path, json_body=body)
            self.assertEqual(answer.status, 400, (method, path, body, answer.body))
            self.assertNotEqual(answer.json["error"]["code"], "invalid_request", body)
            self.assertTrue(answer.json["error"]["message"])
        self.assertEqual(await self.snapshot(), before)

    async def test_unknown_fields_are_ignored(self):
        answer = await self.client.post(
            "/api/v1/routes",
            {"source_address": "new@example.com", "type": "alias", "colour": "red", "id": "X"},
        )
        self.assertEqual(answer.status, 201, answer.body)
        self.assertNotEqual(answer.json["data"]["id"], "X")
        self.assertNotIn("colour", answer.json["data"])
        answer = await self.client.patch(f"/api/v1/messages/{self.placed.id}", {"seen": True})
        self.assertEqual(answer.status, 200)
        self.assertNotIn("read", answer.json["data"])

    async def test_invalid_cursors(self):
        for path in (
            "/api/v1/routes",
            "/api/v1/routing/rules",
            f"/api/v1/mailboxes/{self.alice.id}/labels",
            f"/api/v1/mailboxes/{self.alice.id}/messages",
            "/api/v1/audit",
        ):
            for cursor in ("%%%", "YWJj", "fA", "MjAyNS0wNS0wMVQxMDoyMDozMFp8"):
                answer = await self.client.get(f"{path}?cursor={cursor}")
                self.assertEqual(
                    (answer.status, answer.json["error"]["code"]),
                    (400, "invalid_cursor"),
                    (path, cursor),
                )

    async def test_ids_of_another_mailbox(self):
        bob_folder = await self.store.get_folder(self.bob.id, "INBOX")
        bob_label = await self.store.create_label(self.bob.id, "B")
        before = await self.snapshot()
        answer = await self.client.post(
            f"/api/v1/messages/{self.placed.id}/move", {"folder_id": bob_folder.id}
        )
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (400, "folder_mailbox_mismatch")
        )
        answer = await self.client.post(
            f"/api/v1/messages/{self.placed.id}/labels", {"label_id": bob_label.id}
        )
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (400, "label_mailbox_mismatch")
        )
        # A list filter with another mailbox's folder or label finds nothing.
        base = f"/api/v1/mailboxes/{self.alice.id}/messages"
        for params in (f"?folder_id={bob_folder.id}", f"?label_id={bob_label.id}"):
            answer = await self.client.get(base + params)
            self.assertEqual((answer.status, answer.json["data"]), (200, []))
        self.assertEqual(await self.snapshot(), before)

    async def test_unknown_ids_are_404(self):
        for method, path, body, code in (
            ("GET", f"/api/v1/messages/{NOBODY}", None, "message_not_found"),
            ("PATCH", f"/api/v1/messages/{NOBODY}", {}, "message_not_found"),
            (
                "POST",
                f"/api/v1/messages/{NOBODY}/move",
                {"folder_id": self.folder.id},
                "message_not_found",
            ),
            ("DELETE", f"/api/v1/messages/{NOBODY}", None, "message_not_found"),
            ("DELETE", f"/api/v1/messages/{NOBODY}?force=true", None, "message_not_found"),
            ("GET", f"/api/v1/routes/{NOBODY}", None, "route_not_found"),
            ("DELETE", f"/api/v1/labels/{NOBODY}", None, "label_not_found"),
            ("DELETE", f"/api/v1/folders/{NOBODY}", None, "folder_not_found"),
        ):
            answer = await self.client.request(method, path, json_body=body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (404, code), path)

    async def test_path_traversal_names(self):
        for name in ("..", "../x", "x/..", "./x", "x/./y", "x/../../y"):
            for path in (
                f"/api/v1/mailboxes/{self.alice.id}/folders",
                f"/api/v1/mailboxes/{self.alice.id}/labels",
            ):
                answer = await self.client.post(path, {"name": name})
                self.assertEqual(answer.status, 400, (path, name))
            answer = await self.client.patch(f"/api/v1/folders/{self.folder.id}", {"name": name})
            self.assertEqual(answer.status, 400, name)
            answer = await self.client.patch(f"/api/v1/labels/{self.label.id}", {"name": name})
            self.assertEqual(answer.status, 400, name)
        # Dots inside a level are an ordinary name.
        answer = await self.client.post(
            f"/api/v1/mailboxes/{self.alice.id}/folders", {"name": "v1..2"}
        )
        self.assertEqual(answer.status, 201)
