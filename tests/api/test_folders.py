"""Folders over HTTP (API.md 1.6): list, create, rename, delete."""

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import deliver_bytes, make_store

SYSTEM = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}


class FolderListTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)

    async def test_a_new_mailbox_lists_the_six_system_folders(self):
        answer = await self.client.post("/api/v1/mailboxes", {"primary_address": "a@x.org"})
        mailbox_id = answer.json["data"]["id"]
        answer = await self.client.get(f"/api/v1/mailboxes/{mailbox_id}/folders")
        self.assertEqual(answer.status, 200)
        folders = answer.json["data"]
        self.assertEqual({f["name"] for f in folders}, SYSTEM)
        self.assertEqual(answer.json["pagination"], {"next": "", "limit": 50})
        for folder in folders:
            self.assertEqual(folder["mailbox_id"], mailbox_id)
            self.assertIs(folder["system"], True)
            self.assertEqual(folder["uid_next"], 1)
            self.assertGreater(folder["uid_validity"], 0)
            self.assertEqual(len(folder["id"]), 26)

    async def test_folders_page_with_cursors(self):
        mailbox = await self.store.create_mailbox("b@x.org")
        path = f"/api/v1/mailboxes/{mailbox.id}/folders?limit=4"
        first = (await self.client.get(path)).json
        self.assertEqual(len(first["data"]), 4)
        second = (await self.client.get(path + "&cursor=" + first["pagination"]["next"])).json
        self.assertEqual(len(second["data"]), 2)
        self.assertEqual(second["pagination"]["next"], "")
        self.assertEqual({f["name"] for f in first["data"] + second["data"]}, SYSTEM)

    async def test_unknown_mailbox_has_no_folders(self):
        answer = await self.client.get("/api/v1/mailboxes/01JNOTTHERE0000000000000000/folders")
        self.assertEqual(answer.json["data"], [])


class FolderChangeTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("a@x.org")
        self.base = f"/api/v1/mailboxes/{self.mailbox.id}/folders"

    async def test_create_patch_delete(self):
        answer = await self.client.post(self.base, {"name": "Projects/2025"})
        self.assertEqual(answer.status, 201, answer.body)
        folder = answer.json["data"]
        self.assertEqual((folder["name"], folder["uid_next"]), ("Projects/2025", 1))
        self.assertNotIn("system", folder)
        names = {f.name for f in await self.store.list_folders(self.mailbox.id)}
        self.assertIn("Projects", names)  # the parent, as IMAP makes it
        answer = await self.client.post(self.base, {"name": "Projects/2025"})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "constraint_violation")
        )
        answer = await self.client.post(self.base, {"name": "Pinned", "system": True})
        self.assertIs(answer.json["data"]["system"], True)
        pinned = answer.json["data"]
        answer = await self.client.delete(f"/api/v1/folders/{pinned['id']}")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (409, "system_folder"))
        answer = await self.client.patch(
            f"/api/v1/folders/{pinned['id']}", {"system": False, "name": "Unpinned"}
        )
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json["data"]["name"], "Unpinned")
        self.assertNotIn("system", answer.json["data"])
        # Messages in a deleted folder are soft-deleted and their quota released.
        [placed] = await deliver_bytes(
            self.store, b"Subject: x\r\n\r\nx\r\n", self.mailbox.id, "Unpinned"
        )
        self.assertGreater((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)
        answer = await self.client.delete(f"/api/v1/folders/{pinned['id']}")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)
        self.assertIsNone(await self.store.get_message_view(placed.id))
        # The API lets system folders be renamed (the original does), but not INBOX.
        sent = await self.store.get_folder(self.mailbox.id, "Sent")
        answer = await self.client.patch(f"/api/v1/folders/{sent.id}", {"name": "Sent Items"})
        self.assertEqual((answer.status, answer.json["data"]["name"]), (200, "Sent Items"))
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        answer = await self.client.patch(f"/api/v1/folders/{inbox.id}", {"name": "Old"})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (409, "system_folder"))
        projects = await self.store.get_folder(self.mailbox.id, "Projects")
        answer = await self.client.delete(f"/api/v1/folders/{projects.id}")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "folder_has_children")
        )
        events = [
            e.event_type for e in await self.store.list_audit_events(mailbox_id=self.mailbox.id)
        ]
        self.assertIn("folder.deleted", events)
        self.assertIn("folder.updated", events)

    async def test_errors(self):
        for body, code in (
            ({}, "folder_name_required"),
            ({"name": None}, "folder_name_required"),
            ({"name": ["x"]}, "invalid_folder_name"),
            ({"name": "../../etc/passwd"}, "invalid_folder_name"),
            ({"name": "a/.."}, "invalid_folder_name"),
            ({"name": "/abs"}, "invalid_folder_name"),
            ({"name": "x", "system": "yes"}, "invalid_folder"),
        ):
            answer = await self.client.post(self.base, body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (400, code), body)
        answer = await self.client.post(
            "/api/v1/mailboxes/01JNOTTHERE0000000000000000/folders", {"name": "x"}
        )
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "mailbox_not_found"))
        for method in ("PATCH", "DELETE"):
            answer = await self.client.request(
                method, "/api/v1/folders/01JNOTTHERE0000000000000000", json_body={"name": "y"}
            )
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (404, "folder_not_found")
            )
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        answer = await self.client.patch(f"/api/v1/folders/{archive.id}", {"name": "../x"})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (400, "invalid_folder_name")
        )
        answer = await self.client.patch(f"/api/v1/folders/{archive.id}", {"name": "Sent"})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "constraint_violation")
        )
        self.assertEqual(len(await self.store.list_folders(self.mailbox.id)), 6)
