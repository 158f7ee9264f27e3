"""Mailboxes over HTTP (API.md 1.2) on a real store."""

from twisted.trial import unittest

from haitatsu.api.conventions import decode_cursor
from tests.api.client import APIClient, error
from tests.support import deliver_bytes, make_store

MESSAGE = b"From: a@example.org\r\nSubject: usage\r\n\r\nHello.\r\n"
ULID_CHARS = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class MailboxTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    async def create(self, address="alice@example.com", **fields):
        answer = await self.client.post("/api/v1/mailboxes", {"primary_address": address, **fields})
        self.assertEqual(answer.status, 201, answer.body)
        return answer.json["data"]

    async def assertError(self, answer_or_coro, status, code, message=None):
        answer = await answer_or_coro
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.json["error"]["code"], code)
        self.assertEqual(answer.json["error"]["details"], {})
        if message is not None:
            self.assertEqual(answer.json["error"]["message"], message)
        return answer

    async def test_create_returns_201_with_the_mailbox_and_omits_zero_values(self):
        mailbox = await self.create("Alice@Example.com")
        self.assertEqual(len(mailbox["id"]), 26)
        self.assertTrue(set(mailbox["id"]) <= ULID_CHARS)
        self.assertEqual(mailbox["primary_address"], "Alice@Example.com")
        self.assertEqual(mailbox["status"], "active")
        self.assertRegex(mailbox["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
        for absent in (
            "quota_bytes",
            "used_bytes",
            "outbound_limits",
            "spam_thresholds",
            "deleted_at",
        ):
            self.assertNotIn(absent, mailbox)
        stored = await self.store.get_mailbox(mailbox["id"])
        self.assertEqual(stored.primary_address, "Alice@Example.com")

    async def test_create_also_creates_the_six_system_folders(self):
        mailbox = await self.create()
        folders = await self.store.list_folders(mailbox["id"])
        self.assertEqual(
            sorted(f.name for f in folders),
            sorted(["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]),
        )

    async def test_create_with_every_field(self):
        mailbox = await self.create(
            status="suspended",
            quota_bytes=1000,
            outbound_limits={"per_hour": 5, "per_day": 0},
            spam_thresholds={"junk_threshold": 2, "spam_threshold": 0.5},
        )
        self.assertEqual(mailbox["status"], "suspended")
        self.assertEqual(mailbox["quota_bytes"], 1000)
        self.assertEqual(mailbox["outbound_limits"], {"per_hour": 5, "per_day": 0})
        self.assertEqual(mailbox["spam_thresholds"], {"junk_threshold": 2, "spam_threshold": 0.5})

    async def test_validation_codes_in_the_documented_order(self):
        post = lambda body: self.client.post("/api/v1/mailboxes", body)  # noqa: E731
        # JSON first.
        await self.assertError(
            self.client.post("/api/v1/mailboxes", body=b"{nope"),
            400,
            "invalid_request",
            "Invalid JSON body",
        )
        # spam_thresholds before primary_address.
        await self.assertError(post({"spam_thresholds": {"x": 1}}), 400, "invalid_spam_thresholds")
        # primary_address before the reserved local part and outbound_limits.
        await self.assertError(post({"outbound_limits": {"x": 1}}), 400, "primary_address_required")
        await self.assertError(
            post({"primary_address": "", "outbound_limits": {"x": 1}}),
            400,
            "primary_address_required",
        )
        await self.assertError(
            post({"primary_address": "BOUNCES@example.com", "outbound_limits": {"x": 1}}),
            400,
            "reserved_local_part",
        )
        await self.assertError(
            post({"primary_address": "a@example.com", "outbound_limits": {"x": 1}}),
            400,
            "invalid_outbound_limits",
        )
        self.assertEqual(await self.store.list_mailboxes(), [])

    async def test_outbound_limits_validation(self):
        for limits in (
            {"per_week": 1},
            {"per_hour": -1},
            {"per_day": 1.5},
            {"per_day": True},
            {"per_day": "3"},
            [1],
            "x",
        ):
            await self.assertError(
                self.client.post(
                    "/api/v1/mailboxes", {"primary_address": "a@x.org", "outbound_limits": limits}
                ),
                400,
                "invalid_outbound_limits",
            )

    async def test_spam_thresholds_validation(self):
        bad = [
            {"junk_threshold": -0.1},
            {"spam_threshold": 0},
            {"spam_threshold": 1.01},
            {"phishing_threshold": None},
            {"phishing_threshold": "0.5"},
            {"other": 0.5},
            [0.5],
        ]
        for thresholds in bad:
            await self.assertError(
                self.client.post(
                    "/api/v1/mailboxes",
                    {"primary_address": "a@x.org", "spam_thresholds": thresholds},
                ),
                400,
                "invalid_spam_thresholds",
            )
        # A number too large for a float is not finite: refused, not stored as infinity.
        await self.assertError(
            self.client.post(
                "/api/v1/mailboxes",
                body=b'{"primary_address": "a@x.org", '
                b'"spam_thresholds": {"junk_threshold": 1e400}}',
            ),
            400,
            "invalid_spam_thresholds",
        )
        mailbox = await self.create(
            "edges@x.org",
            spam_thresholds={"junk_threshold": 0, "spam_threshold": 1, "phishing_threshold": 1e-9},
        )
        self.assertEqual(
            mailbox["spam_thresholds"],
            {"junk_threshold": 0, "spam_threshold": 1, "phishing_threshold": 1e-9},
        )

    async def test_wrong_types_are_400_not_500(self):
        for body in (
            {"primary_address": 5},
            {"primary_address": "a@x.org", "status": 1},
            {"primary_address": "a@x.org", "quota_bytes": "10"},
            {"primary_address": "a@x.org", "quota_bytes": 1.5},
            {"primary_address": "a@x.org", "quota_bytes": -1},
        ):
            await self.assertError(
                self.client.post("/api/v1/mailboxes", body), 400, "invalid_mailbox"
            )

    async def test_duplicate_address_is_409_ignoring_case(self):
        await self.create("dup@example.com")
        answer = await self.client.post("/api/v1/mailboxes", {"primary_address": "DUP@example.com"})
        self.assertEqual(answer.status, 409)
        self.assertEqual(
            answer.json, error("constraint_violation", "Resource conflicts with existing data")
        )

    async def test_get_and_not_found(self):
        mailbox = await self.create()
        answer = await self.client.get(f"/api/v1/mailboxes/{mailbox['id']}")
        self.assertEqual((answer.status, answer.json), (200, {"data": mailbox}))
        await self.assertError(
            self.client.get("/api/v1/mailboxes/01JNOTTHERE0000000000000000"),
            404,
            "mailbox_not_found",
        )

    async def test_patch_changes_given_fields_and_ignores_empty_ones(self):
        mailbox = await self.create(spam_thresholds={"spam_threshold": 0.5})
        path = f"/api/v1/mailboxes/{mailbox['id']}"
        answer = await self.client.patch(
            path, {"status": "", "quota_bytes": 2048, "outbound_limits": {"per_day": 10}}
        )
        self.assertEqual(answer.status, 200, answer.body)
        data = answer.json["data"]
        self.assertEqual(data["status"], "active")
        self.assertEqual(data["quota_bytes"], 2048)
        self.assertEqual(data["outbound_limits"], {"per_day": 10})
        self.assertEqual(data["spam_thresholds"], {"spam_threshold": 0.5})
        stored = await self.store.get_mailbox(mailbox["id"])
        self.assertEqual(stored.quota_bytes, 2048)

    async def test_patch_spam_thresholds_null_or_empty_clears_them(self):
        for clear in (None, {}):
            mailbox = await self.create(
                f"clear{len(str(clear))}@x.org", spam_thresholds={"spam_threshold": 0.5}
            )
            answer = await self.client.patch(
                f"/api/v1/mailboxes/{mailbox['id']}", {"spam_thresholds": clear}
            )
            self.assertNotIn("spam_thresholds", answer.json["data"])
            self.assertIsNone((await self.store.get_mailbox(mailbox["id"])).spam_thresholds)

    async def test_patch_errors(self):
        mailbox = await self.create()
        path = f"/api/v1/mailboxes/{mailbox['id']}"
        await self.assertError(
            self.client.patch("/api/v1/mailboxes/01JNOTTHERE0000000000000000", {"status": "x"}),
            404,
            "mailbox_update_failed",
        )
        await self.assertError(
            self.client.patch(path, {"spam_thresholds": {"spam_threshold": 2}}),
            400,
            "invalid_spam_thresholds",
        )
        await self.assertError(
            self.client.patch(path, {"outbound_limits": {"per_minute": 1}}),
            400,
            "invalid_outbound_limits",
        )
        await self.assertError(self.client.patch(path, body=b"[]"), 400, "invalid_request")
        await self.assertError(
            self.client.patch(path, {"primary_address": "new@x.org"}), 400, "invalid_mailbox"
        )

    async def test_delete_is_soft_and_revokes_app_passwords_and_restore_undoes_it(self):
        mailbox = await self.create()
        password, _ = await self.store.create_app_password(mailbox["id"], "phone", ["imap"])
        answer = await self.client.delete(f"/api/v1/mailboxes/{mailbox['id']}")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json["data"]["status"], "deleted")
        self.assertIn("deleted_at", answer.json["data"])
        [revoked] = await self.store.list_app_passwords(mailbox["id"])
        self.assertIsNotNone(revoked.revoked_at)

        answer = await self.client.post(f"/api/v1/mailboxes/{mailbox['id']}/restore")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json["data"]["status"], "active")
        self.assertNotIn("deleted_at", answer.json["data"])
        [still_revoked] = await self.store.list_app_passwords(mailbox["id"])
        self.assertIsNotNone(still_revoked.revoked_at)

    async def test_hard_delete_purges_an_active_mailbox_and_its_messages(self):
        mailbox = await self.create()
        (placed,) = await deliver_bytes(self.store, MESSAGE, mailbox["id"])
        answer = await self.client.delete(f"/api/v1/mailboxes/{mailbox['id']}/hard")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        await self.assertError(
            self.client.get(f"/api/v1/mailboxes/{mailbox['id']}"), 404, "mailbox_not_found"
        )
        self.assertIsNone(await self.store.get_message_view(placed.id))
        self.assertFalse(await self.store.purge_message(placed.message_id))  # already gone
        [event] = await self.store.list_audit_events(event_type="mailbox.hard_deleted")
        self.assertEqual(event.entity_id, mailbox["id"])
        await self.assertError(
            self.client.delete(f"/api/v1/mailboxes/{mailbox['id']}/hard"),
            404,
            "mailbox_not_found",
        )

    async def test_delete_and_restore_of_a_missing_mailbox(self):
        missing = "01JNOTTHERE0000000000000000"
        await self.assertError(
            self.client.delete(f"/api/v1/mailboxes/{missing}"), 404, "mailbox_delete_failed"
        )
        await self.assertError(
            self.client.post(f"/api/v1/mailboxes/{missing}/restore"),
            404,
            "mailbox_restore_failed",
        )

    async def test_list_pages_through_everything_with_next_cursors(self):
        created = [await self.create(f"user{i}@example.com") for i in range(5)]
        expected = [m["id"] for m in reversed(created)]
        seen, cursor, pages = [], "", 0
        while True:
            path = "/api/v1/mailboxes?limit=2" + (f"&cursor={cursor}" if cursor else "")
            answer = await self.client.get(path)
            self.assertEqual(answer.status, 200)
            body = answer.json
            self.assertEqual(body["pagination"]["limit"], 2)
            seen += [m["id"] for m in body["data"]]
            pages += 1
            cursor = body["pagination"]["next"]
            if not cursor:
                break
            # next encodes the last row returned.
            self.assertEqual(decode_cursor(cursor)[1], body["data"][-1]["id"])
        self.assertEqual((seen, pages), (expected, 3))

    async def test_list_exactly_a_full_page_has_no_next(self):
        for i in range(2):
            await self.create(f"u{i}@x.org")
        answer = await self.client.get("/api/v1/mailboxes?limit=2")
        self.assertEqual(len(answer.json["data"]), 2)
        self.assertEqual(answer.json["pagination"], {"next": "", "limit": 2})

    async def test_list_defaults_and_empty_list(self):
        answer = await self.client.get("/api/v1/mailboxes?limit=0")
        self.assertEqual(answer.json, {"data": [], "pagination": {"next": "", "limit": 50}})
        answer = await self.client.get("/api/v1/mailboxes?limit=1000")
        self.assertEqual(answer.json["pagination"]["limit"], 100)

    async def test_list_filters_by_status(self):
        keep = await self.create("keep@x.org")
        gone = await self.create("gone@x.org")
        await self.client.delete(f"/api/v1/mailboxes/{gone['id']}")
        answer = await self.client.get("/api/v1/mailboxes?status=active")
        self.assertEqual([m["id"] for m in answer.json["data"]], [keep["id"]])
        answer = await self.client.get("/api/v1/mailboxes?status=deleted")
        self.assertEqual([m["id"] for m in answer.json["data"]], [gone["id"]])

    async def test_invalid_cursor_is_400(self):
        await self.assertError(
            self.client.get("/api/v1/mailboxes?cursor=not*base64"), 400, "invalid_cursor"
        )

    async def test_trailing_slash_is_the_same_route(self):
        answer = await self.client.get("/api/v1/mailboxes/")
        self.assertEqual(answer.status, 200)

    async def test_wrong_method_on_a_known_path(self):
        answer = await self.client.request("PUT", "/api/v1/mailboxes")
        self.assertEqual((answer.status, answer.body), (405, b"Method Not Allowed"))


class RecomputeUsageTests(unittest.TestCase):
    """``POST /mailboxes/:id/recompute-usage`` (API.md 1.2, 5.6)."""

    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("bob@example.com")

    async def test_rebuilds_used_bytes_from_the_live_messages(self):
        placed = [await deliver_bytes(self.store, MESSAGE * n, self.mailbox.id) for n in (1, 2)]
        live = sum(p.size_bytes for [p] in placed)
        await self.store.update_mailbox(self.mailbox.id, used_bytes=999)
        answer = await self.client.post(f"/api/v1/mailboxes/{self.mailbox.id}/recompute-usage")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json, {"data": {"mailbox_id": self.mailbox.id, "used_bytes": live}})
        answer = await self.client.get(f"/api/v1/mailboxes/{self.mailbox.id}")
        self.assertEqual(answer.json["data"]["used_bytes"], live)

    async def test_zero_is_written(self):
        """The answer is a plain map in the original, not an omitempty entity."""
        await self.store.update_mailbox(self.mailbox.id, used_bytes=5)
        answer = await self.client.post(f"/api/v1/mailboxes/{self.mailbox.id}/recompute-usage")
        self.assertEqual(answer.json, {"data": {"mailbox_id": self.mailbox.id, "used_bytes": 0}})

    async def test_unknown_mailbox_is_404(self):
        answer = await self.client.post(
            "/api/v1/mailboxes/01NOSUCHMAILBOX00000000000/recompute-usage"
        )
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json, error("mailbox_not_found", "Mailbox not found"))

    async def test_needs_the_token(self):
        answer = await self.client.post(
            f"/api/v1/mailboxes/{self.mailbox.id}/recompute-usage", auth=False
        )
        self.assertEqual(answer.status, 401)

    async def test_storage_unavailable_is_503(self):
        await self.store.close()
        answer = await self.client.post(f"/api/v1/mailboxes/{self.mailbox.id}/recompute-usage")
        self.assertEqual(answer.status, 503, answer.body)
        self.assertEqual(answer.json["error"]["code"], "storage_unavailable")


class StorageFailureTests(unittest.TestCase):
    async def test_storage_unavailable_is_503(self):
        store = await make_store(self)
        await store.close()
        client = APIClient(store)
        answer = await client.post("/api/v1/mailboxes", {"primary_address": "a@x.org"})
        self.assertEqual(answer.status, 503, answer.body)
        self.assertEqual(answer.json["error"]["code"], "storage_unavailable")
        answer = await client.get("/api/v1/mailboxes")
        self.assertEqual(answer.status, 503, answer.body)
