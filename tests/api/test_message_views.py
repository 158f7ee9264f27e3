"""The stored ``message`` object (schema 036, ``haitatsu/storage/views.py``) against the view built
from the message's columns, through the HTTP interface, on both engines.

Delivery stores each message's ``message`` object as JSON (``messages.view_json``); the list and
get splice it into their answers. What they answer must be what the API built from the row's
columns before (``message_json`` of the ``MessageInfo`` the store reads, with the placement and
its labels as they are now): on a varied set of messages, after flag changes, moves, label
changes, soft delete and restore, for rows stored before schema 036 (no stored object), and for
a row changed after delivery (the stored object is dropped by the database).
"""

from __future__ import annotations

import json
import os
import tempfile

from twisted.trial import unittest

from haitatsu.api.conventions import dumps
from haitatsu.api.labels import label_json
from haitatsu.api.messages import mailbox_message_json, message_json
from haitatsu.storage.records import Delivery
from tests.api.client import APIClient
from tests.support import PG_SKIP, make_pg_store, make_store


def _message(headers: list[str], body: bytes) -> bytes:
    return "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + body


def _multipart(headers: list[str], boundary: str, parts: list[bytes], kind="mixed") -> bytes:
    out = [f"--{boundary}\r\n".encode() + part for part in parts]
    body = b"\r\n".join(out) + f"\r\n--{boundary}--\r\n".encode()
    return _message(
        [*headers, "MIME-Version: 1.0", f'Content-Type: multipart/{kind}; boundary="{boundary}"'],
        body,
    )


LONG_TEXT = ("Ligne numéro {} du rapport trimestriel, avec des accents.\r\n" * 400).encode("utf-8")

#: Messages that exercise every field of the view: (bytes, spam_score, auth_results).
CORPUS = [
    (
        _message(
            [
                "From: Bob <Bob@Example.org>",
                "To: alice@example.com",
                "Subject: Hello there",
                "Message-ID: <m1@example.org>",
                "Date: Thu, 01 May 2025 10:20:30 +0000",
            ],
            b"Body line one.\r\nBody line two, with \xc3\xa9 in UTF-8.\r\n",
        ),
        0.0,
        None,
    ),
    (
        _multipart(
            [
                "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>",
                "To: Alice <alice@example.com>, carol@example.net",
                "Cc: Dave <DAVE@example.com>",
                "Bcc: hidden@example.com",
                "Subject: =?utf-8?b?5Lya6K2w44Gu6K2w5LqL6Yyy?=",
                "Date: Fri, 02 May 2025 08:00:00 +0900",
                "Message-ID: <alt@example.de>",
            ],
            "alt-1",
            [
                b'Content-Type: text/plain; charset="utf-8"\r\n\r\n'
                b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n",
                b'Content-Type: text/html; charset="utf-8"\r\n\r\n'
                b"<p>Gr\xc3\xbc\xc3\x9fe <b>aus</b> K\xc3\xb6ln</p>\r\n",
            ],
            kind="alternative",
        ),
        2.5,
        {"spf": {"result": "pass", "domain": "example.de"}, "dkim": [], "score": 1.0},
    ),
    (
        _multipart(
            [
                "From: shop@example.co",
                "To: alice@example.com",
                "Subject: Your invoice",
                "Date: Sat, 03 May 2025 12:00:00 -0700",
            ],
            "mix-1",
            [
                b"Content-Type: text/plain\r\n\r\nSee the attachment.\r\n",
                b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
                b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n",
                b"Content-Type: image/png\r\nContent-Disposition: inline\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
            ],
        ),
        3.0,
        {"dmarc": {"result": "fail", "policy": "none"}},
    ),
    # No Date, no Message-ID, no Subject; a NUL in the text (stored as U+FFFD).
    (_message(["From: x@example.com", "To: alice@example.com"], b"nul \x00 here\r\n"), 1e-7, {}),
    # Raw 8-bit bytes in a header, which is not UTF-8.
    (
        b"From: raw@example.com\r\nTo: alice@example.com\r\nSubject: Caf\xe9 8bit\r\n"
        b"X-Weird: \xff\xfe\r\n\r\nbody\r\n",
        -1.5,
        None,
    ),
    # Extracts cut at 8 KiB.
    (
        _multipart(
            ["From: long@example.com", "To: alice@example.com", "Subject: Long"],
            "long-1",
            [
                b'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + LONG_TEXT,
                b'Content-Type: text/html; charset="utf-8"\r\n\r\n<div>' + LONG_TEXT + b"</div>",
            ],
            kind="alternative",
        ),
        0.0,
        None,
    ),
    # Headers only, and a header repeated.
    (
        b"From: a@example.com\r\nReceived: from one\r\nReceived: from two\r\n"
        b"Subject: =?iso-8859-1?q?caf=E9?=\r\n\r\n",
        0.0,
        None,
    ),
]


class ViewMixin:
    async def make_store(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make_store()
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        self.placed = []
        for index, (data, spam_score, auth_results) in enumerate(CORPUS):
            folder = "Archive" if index % 3 == 2 else "INBOX"
            flags = ("\\Seen", "$Work") if index % 2 else ()
            self.placed.append(await self._deliver(data, folder, flags, spam_score, auth_results))
        self.base = f"/api/v1/mailboxes/{self.mailbox.id}/messages"

    async def _deliver(self, data, folder, flags, spam_score, auth_results):
        fd, path = tempfile.mkstemp(suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            [placed] = await self.store.deliver(
                path,
                [Delivery(mailbox_id=self.mailbox.id, folder=folder, flags=flags)],
                trace_id="TRACE-views",
                auth_results=auth_results,
                spam_score=spam_score,
            )
        finally:
            os.unlink(path)
        return placed

    # -- what the view must be --------------------------------------------------------------

    async def expected(self, mailbox_message_id):
        """The view built from the columns, as the API built every view before schema 036."""
        mm, info, labels = await self.store.get_message_entry(mailbox_message_id)
        view = {
            "mailbox_message": mailbox_message_json(mm),
            "message": message_json(info),
            "labels": [label_json(label) for label in labels] or None,
        }
        return json.loads(dumps(view))

    async def stored(self):
        async def read(txn):
            return {
                r["id"]: r["view_json"]
                for r in await txn.execute("SELECT id, view_json FROM messages")
            }

        return await self.store.db.run("test_read_views", read, readonly=True)

    async def sql(self, statement, params=()):
        async def run(txn):
            await txn.execute(statement, params)

        await self.store.db.run("test_sql", run)

    async def assertViewsMatch(self):
        """Every live message: get, the whole list, and the list a page of 2 at a time."""
        listed = await self.client.get(self.base + "?limit=100")
        self.assertEqual(listed.status, 200, listed.body)
        live = [view["mailbox_message"]["id"] for view in listed.json["data"]]
        expected = [await self.expected(mm_id) for mm_id in live]
        self.assertEqual(listed.json["data"], expected)
        for mm_id, want in zip(live, expected, strict=True):
            got = await self.client.get(f"/api/v1/messages/{mm_id}")
            self.assertEqual(got.status, 200, got.body)
            self.assertEqual(got.json["data"], want)
        paged, cursor = [], ""
        while True:
            page = await self.client.get(
                self.base + "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            )
            paged += page.json["data"]
            cursor = page.json["pagination"]["next"]
            if not cursor:
                break
        self.assertEqual(paged, expected)
        return live

    # -- tests ------------------------------------------------------------------------------

    async def test_delivery_stores_the_message_object(self):
        stored = await self.stored()
        self.assertEqual(len(stored), len(CORPUS))
        for placed in self.placed:
            text = stored[placed.message_id]
            self.assertIsNotNone(text)
            self.assertEqual(json.loads(text), (await self.expected(placed.id))["message"])

    async def test_views_match_the_columns(self):
        live = await self.assertViewsMatch()
        self.assertEqual(sorted(live), sorted(p.id for p in self.placed))
        # The fields the corpus is there for, as the columns give them.
        messages = {
            v["mailbox_message"]["id"]: v["message"]
            for v in (await self.client.get(self.base)).json["data"]
        }
        self.assertEqual(messages[self.placed[1].id]["spam_score"], 2.5)
        self.assertEqual(messages[self.placed[1].id]["bcc_addresses"], ["hidden@example.com"])
        self.assertEqual(messages[self.placed[2].id]["spam_score"], 3)
        attachment = messages[self.placed[2].id]["attachments"][0]
        self.assertEqual(attachment["content_type"], "application/pdf")
        self.assertIn("\ufffd", messages[self.placed[3].id]["text_body_extract"])
        self.assertNotIn("date", messages[self.placed[3].id])
        self.assertEqual(messages[self.placed[4].id]["spam_score"], -1.5)
        self.assertNotIn("spam_score", messages[self.placed[0].id])

    async def test_a_stored_integral_score_is_written_as_go_writes_it(self):
        answer = await self.client.get(f"/api/v1/messages/{self.placed[2].id}")
        self.assertIn(b'"spam_score":3,', answer.body)

    async def test_views_after_flags_moves_labels_delete_and_restore(self):
        first, second, third = self.placed[0], self.placed[1], self.placed[2]
        answer = await self.client.patch(
            f"/api/v1/messages/{first.id}", {"read": True, "flagged": True, "keywords": ["$A"]}
        )
        self.assertEqual(answer.status, 200, answer.body)
        answer = await self.client.patch(
            f"/api/v1/messages/{second.id}", {"read": False, "keywords": []}
        )
        self.assertEqual(answer.status, 200, answer.body)
        folders = (await self.client.get(f"/api/v1/mailboxes/{self.mailbox.id}/folders")).json[
            "data"
        ]
        junk = next(f["id"] for f in folders if f["name"] == "Junk")
        answer = await self.client.post(f"/api/v1/messages/{third.id}/move", {"folder_id": junk})
        self.assertEqual(answer.status, 200, answer.body)
        labels = []
        for name in ("work", "Ärger"):
            answer = await self.client.post(
                f"/api/v1/mailboxes/{self.mailbox.id}/labels", {"name": name}
            )
            self.assertEqual(answer.status, 201, answer.body)
            labels.append(answer.json["data"]["id"])
        for placed in (first, third):
            for label_id in labels:
                answer = await self.client.post(
                    f"/api/v1/messages/{placed.id}/labels", {"label_id": label_id}
                )
                self.assertEqual(answer.status, 201, answer.body)
        await self.assertViewsMatch()
        answer = await self.client.delete(f"/api/v1/messages/{third.id}/labels/{labels[0]}")
        self.assertEqual(answer.status, 200, answer.body)
        answer = await self.client.delete(f"/api/v1/messages/{second.id}")  # to Trash
        self.assertEqual(answer.status, 200, answer.body)
        answer = await self.client.delete(f"/api/v1/messages/{first.id}?force=true")
        self.assertEqual(answer.status, 200, answer.body)
        live = await self.assertViewsMatch()
        self.assertNotIn(first.id, live)
        self.assertEqual((await self.client.get(f"/api/v1/messages/{first.id}")).status, 404)
        answer = await self.client.post(f"/api/v1/messages/{first.id}/restore")
        self.assertEqual(answer.status, 200, answer.body)
        live = await self.assertViewsMatch()
        self.assertIn(first.id, live)
        restored = (await self.client.get(f"/api/v1/messages/{first.id}")).json["data"]
        self.assertEqual([label["name"] for label in restored["labels"]], ["work", "Ärger"])
        self.assertTrue(restored["mailbox_message"]["read"])

    async def test_filtered_and_searched_lists_use_the_stored_objects_too(self):
        for query in ("?read=true", "?flagged=", "?q=invoice", "?q=has:attachment", "?q=from:bob"):
            answer = await self.client.get(self.base + query)
            self.assertEqual(answer.status, 200, answer.body)
            views = answer.json["data"]
            self.assertTrue(views, query)
            for view in views:
                self.assertEqual(view, await self.expected(view["mailbox_message"]["id"]), query)

    async def test_messages_without_a_stored_object_are_built_from_their_columns(self):
        # Messages stored before schema 036 have no view_json: half of them here, so a page
        # mixes both kinds.
        for placed in self.placed[::2]:
            await self.sql(
                "UPDATE messages SET view_json = NULL WHERE id = ?", (placed.message_id,)
            )
        stored = await self.stored()
        self.assertEqual(sum(text is None for text in stored.values()), len(self.placed[::2]))
        await self.assertViewsMatch()

    async def test_a_changed_message_row_drops_its_stored_object(self):
        placed = self.placed[0]
        await self.sql(
            "UPDATE messages SET subject = ?, updated_at = updated_at + 1 WHERE id = ?",
            ("Changed later", placed.message_id),
        )
        self.assertIsNone((await self.stored())[placed.message_id])
        view = (await self.client.get(f"/api/v1/messages/{placed.id}")).json["data"]
        self.assertEqual(view["message"]["subject"], "Changed later")
        self.assertEqual(view, await self.expected(placed.id))
        # Writing a new object in the same UPDATE keeps it.
        await self.sql(
            "UPDATE messages SET view_json = ? WHERE id = ?", ('{"id":"x"}', placed.message_id)
        )
        self.assertEqual((await self.stored())[placed.message_id], '{"id":"x"}')


class SQLiteViewTests(ViewMixin, unittest.TestCase):
    async def make_store(self):
        return await make_store(self)


class PostgresViewTests(ViewMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make_store(self):
        return await make_pg_store(self)
