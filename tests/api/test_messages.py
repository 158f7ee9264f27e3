"""Messages over HTTP (API.md 1.7): list, get and raw, on messages delivered by the store."""

import hashlib

from twisted.trial import unittest

from haitatsu.api.conventions import decode_cursor
from tests.api.client import APIClient
from tests.support import deliver_bytes, make_store

MESSAGE = (
    b"From: Bob <Bob@Example.org>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Hello there\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"Date: Thu, 01 May 2025 10:20:30 +0000\r\n"
    b"\r\n"
    b"Body line one.\r\n"
    b"Body line two, with \xc3\xa9 in UTF-8.\r\n"
)


class MessageTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")

    async def deliver(self, data=MESSAGE, folder="INBOX", flags=()):
        [placed] = await deliver_bytes(self.store, data, self.mailbox.id, folder, flags)
        return placed

    async def test_get_returns_the_message_view(self):
        placed = await self.deliver()
        answer = await self.client.get(f"/api/v1/messages/{placed.id}")
        self.assertEqual(answer.status, 200, answer.body)
        view = answer.json["data"]
        self.assertEqual(set(view), {"mailbox_message", "message", "labels"})
        self.assertIsNone(view["labels"])
        row, message = view["mailbox_message"], view["message"]
        self.assertEqual(row["id"], placed.id)
        self.assertEqual(row["mailbox_id"], self.mailbox.id)
        self.assertEqual(row["uid"], 1)
        self.assertEqual(row["message_id"], message["id"])
        # An unread, unflagged message has no read or flagged key (omitempty).
        for absent in (
            "read",
            "flagged",
            "answered",
            "draft",
            "imap_deleted",
            "keywords",
            "deleted_at",
        ):
            self.assertNotIn(absent, row)
        self.assertEqual(message["size_bytes"], len(MESSAGE))
        self.assertEqual(message["sha256"], hashlib.sha256(MESSAGE).hexdigest())
        self.assertEqual(message["subject"], "Hello there")
        self.assertEqual(message["from_addresses"], ["bob@example.org"])
        self.assertNotIn("envelope", message)
        self.assertNotIn("bodystructure", message)

    async def test_flags_appear_when_set(self):
        placed = await self.deliver(flags=["\\Seen", "\\Flagged", "$Label1"])
        answer = await self.client.get(f"/api/v1/messages/{placed.id}")
        row = answer.json["data"]["mailbox_message"]
        self.assertIs(row["read"], True)
        self.assertIs(row["flagged"], True)
        self.assertEqual(row["keywords"], ["$Label1"])

    async def test_get_missing_is_404(self):
        answer = await self.client.get("/api/v1/messages/01JNOTTHERE0000000000000000")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json["error"]["code"], "message_not_found")

    async def test_raw_returns_the_identical_bytes_with_headers(self):
        placed = await self.deliver()
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/raw")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, MESSAGE)
        self.assertEqual(answer.header("Content-Type"), "message/rfc822")
        self.assertEqual(
            answer.header("Content-Disposition"),
            f'attachment; filename="{placed.message_id}.eml"',
        )
        self.assertEqual(answer.length, len(MESSAGE))

    async def test_raw_streams_a_large_message_byte_for_byte(self):
        # Several FileSender chunks (64 KiB each), and bytes of every value.
        body = bytes(range(256)) * 4096 + b"\r\n"
        data = b"Subject: big\r\n\r\n" + body
        placed = await self.deliver(data)
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/raw")
        self.assertEqual(len(answer.body), len(data))
        self.assertEqual(answer.body, data)

    async def test_raw_of_missing_message_is_404(self):
        answer = await self.client.get("/api/v1/messages/01JNOTTHERE0000000000000000/raw")
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.json["error"]["code"], "message_not_found")

    async def test_list_is_newest_first_and_pages(self):
        placed = [await self.deliver(MESSAGE.replace(b"m1@", f"m{i}@".encode())) for i in range(3)]
        base = f"/api/v1/mailboxes/{self.mailbox.id}/messages"
        first = (await self.client.get(base + "?limit=2")).json
        ids = [v["mailbox_message"]["id"] for v in first["data"]]
        self.assertEqual(ids, [placed[2].id, placed[1].id])
        self.assertEqual(decode_cursor(first["pagination"]["next"])[1], placed[1].id)
        second = (
            await self.client.get(base + "?limit=2&cursor=" + first["pagination"]["next"])
        ).json
        self.assertEqual([v["mailbox_message"]["id"] for v in second["data"]], [placed[0].id])
        self.assertEqual(second["pagination"]["next"], "")
        self.assertIsNone(second["data"][0]["labels"])

    async def test_list_filters(self):
        seen = await self.deliver(flags=["\\Seen"])
        unseen = await self.deliver()
        flagged = await self.deliver(folder="Archive", flags=["\\Flagged"])
        base = f"/api/v1/mailboxes/{self.mailbox.id}/messages"

        async def ids(params):
            answer = await self.client.get(base + params)
            self.assertEqual(answer.status, 200, answer.body)
            return {v["mailbox_message"]["id"] for v in answer.json["data"]}

        self.assertEqual(await ids("?read=true"), {seen.id})
        # Any other non-empty value means false.
        self.assertEqual(await ids("?read=no"), {unseen.id, flagged.id})
        self.assertEqual(await ids("?flagged=true"), {flagged.id})
        self.assertEqual(await ids(f"?folder_id={flagged.folder_id}"), {flagged.id})
        self.assertEqual(await ids("?read="), {seen.id, unseen.id, flagged.id})
        self.assertEqual(await ids("?label_id=01JNOLABEL0000000000000000"), set())

    async def test_invalid_cursor(self):
        answer = await self.client.get(
            f"/api/v1/mailboxes/{self.mailbox.id}/messages?cursor=%3D%3D"
        )
        self.assertEqual((answer.status, answer.json["error"]["code"]), (400, "invalid_cursor"))

    async def test_missing_blob_is_500_with_the_handler_code_and_a_log_line(self):
        placed = await self.deliver()
        view = await self.store.get_message_view(placed.id)
        await self.store.blobs.delete(view[1].blob_key)
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/raw")
        self.assertEqual(answer.status, 500)
        self.assertEqual(
            answer.json,
            {
                "error": {
                    "code": "raw_message_download_failed",
                    "message": "Internal server error",
                    "details": {},
                }
            },
        )
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
