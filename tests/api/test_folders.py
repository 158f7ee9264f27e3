"""Folders over HTTP (API.md 1.6): the list, for now."""

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import make_store

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
