"""Labels over HTTP (API.md 1.6)."""

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.support import deliver_bytes, make_store

NOBODY = "01JNOTTHERE0000000000000000"


class LabelTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.base = f"/api/v1/mailboxes/{self.mailbox.id}/labels"

    async def test_crud(self):
        answer = await self.client.post(self.base, {"name": "Work"})
        self.assertEqual(answer.status, 201, answer.body)
        label = answer.json["data"]
        self.assertEqual(
            (label["mailbox_id"], label["name"], label["uid_next"]), (self.mailbox.id, "Work", 1)
        )
        folders = await self.store.list_folders(self.mailbox.id)
        self.assertGreater(label["uid_validity"], max(f.uid_validity for f in folders))
        listed = await self.client.get(self.base)
        self.assertEqual(listed.json, {"data": [label], "pagination": {"next": "", "limit": 50}})
        answer = await self.client.post(self.base, {"name": "Work"})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (409, "constraint_violation")
        )
        answer = await self.client.patch(f"/api/v1/labels/{label['id']}", {"name": "Job"})
        self.assertEqual((answer.status, answer.json["data"]["name"]), (200, "Job"))
        placed = (await deliver_bytes(self.store, b"Subject: x\r\n\r\nx\r\n", self.mailbox.id))[0]
        await self.client.post(f"/api/v1/messages/{placed.id}/labels", {"label_id": label["id"]})
        answer = await self.client.delete(f"/api/v1/labels/{label['id']}")
        self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        self.assertEqual((await self.client.get(self.base)).json["data"], [])
        self.assertEqual(await self.store.labels_of([placed.id]), {})
        types = [
            e.event_type for e in await self.store.list_audit_events(mailbox_id=self.mailbox.id)
        ]
        self.assertEqual(types[:3], ["label.deleted", "label.updated", "label.created"])

    async def test_errors(self):
        for body, code in (
            ({}, "label_name_required"),
            ({"name": ""}, "label_name_required"),
            ({"name": 3}, "invalid_label_name"),
            ({"name": "../etc"}, "invalid_label_name"),
            ({"name": "a/./b"}, "invalid_label_name"),
            ({"name": "a//b"}, "invalid_label_name"),
            ({"name": "tab\there"}, "invalid_label_name"),
        ):
            answer = await self.client.post(self.base, body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (400, code), body)
        answer = await self.client.post(f"/api/v1/mailboxes/{NOBODY}/labels", {"name": "x"})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "mailbox_not_found"))
        answer = await self.client.patch(f"/api/v1/labels/{NOBODY}", {"name": "x"})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "label_not_found"))
        label = (await self.client.post(self.base, {"name": "ok"})).json["data"]
        answer = await self.client.patch(f"/api/v1/labels/{label['id']}", {})
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (400, "label_name_required")
        )
        answer = await self.client.delete(f"/api/v1/labels/{NOBODY}")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "label_not_found"))
        self.assertEqual(len((await self.client.get(self.base)).json["data"]), 1)
