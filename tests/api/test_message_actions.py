"""Changing messages over HTTP (API.md 1.7): flags (seen by IMAP), move, delete, restore,
labels, and attachment downloads by part index."""

import base64

from twisted.trial import unittest

from tests.api.client import APIClient
from tests.imap.helpers import IMAPTestCase
from tests.support import deliver_bytes, make_store

NOBODY = "01JNOTTHERE0000000000000000"

MESSAGE = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n"

PDF = bytes(range(256)) * 300  # binary, 76,800 bytes: several read chunks once encoded
# The CRLF before a boundary belongs to the boundary (RFC 2046 5.1.1), not to the part.
TEXT = "Grüße, with a long line: " + "x" * 200 + "\r\nand a second line ="


def multipart() -> bytes:
    encoded = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    qp = (
        b"Gr=C3=BC=C3=9Fe, with a long line: "
        + b"x" * 50
        + b"=\r\n"
        + b"x" * 150
        + b"\r\nand a second line =3D\r\n"
    )
    return (
        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: Files\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a\\"b.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Disposition: attachment; filename=notes.txt\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + b"--b--\r\n"
    )


class MessageActionTests(unittest.TestCase):
    async def setUp(self):
        self.store = await make_store(self)
        self.client = APIClient(self.store)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")

    async def deliver(self, data=MESSAGE, mailbox=None):
        [placed] = await deliver_bytes(self.store, data, (mailbox or self.alice).id)
        return placed

    async def folder(self, name, mailbox=None):
        return await self.store.get_folder((mailbox or self.alice).id, name)

    async def test_patch_flags_and_keywords(self):
        placed = await self.deliver()
        path = f"/api/v1/messages/{placed.id}"
        answer = await self.client.patch(
            path, {"read": True, "flagged": True, "keywords": ["$Work"]}
        )
        self.assertEqual(answer.status, 200, answer.body)
        row = answer.json["data"]
        self.assertEqual((row["read"], row["flagged"], row["keywords"]), (True, True, ["$Work"]))
        self.assertNotIn("answered", row)
        answer = await self.client.patch(path, {"read": False, "keywords": []})
        self.assertNotIn("read", answer.json["data"])
        self.assertNotIn("keywords", answer.json["data"])
        self.assertIs(answer.json["data"]["flagged"], True)
        for body in (
            {"read": "yes"},
            {"keywords": "x"},
            {"keywords": ["a b"]},
            {"keywords": ["\\Seen"]},
        ):
            answer = await self.client.patch(path, body)
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (400, "invalid_message")
            )
        answer = await self.client.patch(f"/api/v1/messages/{NOBODY}", {"read": True})
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "message_not_found"))

    async def test_move_delete_restore(self):
        placed = await self.deliver()
        archive = await self.folder("Archive")
        answer = await self.client.post(
            f"/api/v1/messages/{placed.id}/move", {"folder_id": archive.id}
        )
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            (answer.json["data"]["folder_id"], answer.json["data"]["uid"]), (archive.id, 1)
        )
        # Errors: missing body field, unknown folder, another mailbox's folder.
        bobs = await self.folder("INBOX", self.bob)
        for body, status, code in (
            ({}, 400, "folder_id_required"),
            ({"folder_id": 7}, 400, "folder_id_required"),
            ({"folder_id": NOBODY}, 404, "folder_not_found"),
            ({"folder_id": bobs.id}, 400, "folder_mailbox_mismatch"),
        ):
            answer = await self.client.post(f"/api/v1/messages/{placed.id}/move", body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (status, code), body)
        # DELETE moves to Trash; the quota stays charged.
        used = (await self.store.get_mailbox(self.alice.id)).used_bytes
        answer = await self.client.delete(f"/api/v1/messages/{placed.id}")
        trash = await self.folder("Trash")
        self.assertEqual(answer.json["data"]["folder_id"], trash.id)
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, used)
        # force=true soft-deletes and gives the quota back.
        answer = await self.client.delete(f"/api/v1/messages/{placed.id}?force=true")
        self.assertEqual(answer.status, 200)
        self.assertIn("deleted_at", answer.json["data"])
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, 0)
        self.assertEqual((await self.client.get(f"/api/v1/messages/{placed.id}")).status, 404)
        self.assertEqual((await self.client.delete(f"/api/v1/messages/{placed.id}")).status, 404)
        # Restore undeletes into INBOX with a new UID and charges the quota again.
        answer = await self.client.post(f"/api/v1/messages/{placed.id}/restore")
        self.assertEqual(answer.status, 200, answer.body)
        inbox = await self.folder("INBOX")
        self.assertEqual(
            (answer.json["data"]["folder_id"], answer.json["data"]["uid"]), (inbox.id, 2)
        )
        self.assertNotIn("deleted_at", answer.json["data"])
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, used)
        answer = await self.client.post(f"/api/v1/messages/{NOBODY}/restore")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "message_not_found"))

    async def test_labels_on_messages(self):
        placed = await self.deliver()
        label = (
            await self.client.post(f"/api/v1/mailboxes/{self.alice.id}/labels", {"name": "Work"})
        ).json["data"]
        path = f"/api/v1/messages/{placed.id}/labels"
        first = await self.client.post(path, {"label_id": label["id"]})
        self.assertEqual(first.status, 201, first.body)
        link = first.json["data"]
        self.assertEqual(
            (link["mailbox_message_id"], link["label_id"], link["uid"]), (placed.id, label["id"], 1)
        )
        again = await self.client.post(path, {"label_id": label["id"]})
        self.assertEqual((again.status, again.json["data"]), (201, link))
        view = (await self.client.get(f"/api/v1/messages/{placed.id}")).json["data"]
        self.assertEqual([lab["name"] for lab in view["labels"]], ["Work"])
        self.assertEqual(view["labels"][0]["uid_next"], 2)
        listed = await self.client.get(
            f"/api/v1/mailboxes/{self.alice.id}/messages?label_id={label['id']}"
        )
        self.assertEqual([v["mailbox_message"]["id"] for v in listed.json["data"]], [placed.id])
        bob_label = await self.store.create_label(self.bob.id, "Bob's")
        for body, status, code in (
            ({}, 400, "label_id_required"),
            ({"label_id": NOBODY}, 404, "label_not_found"),
            ({"label_id": bob_label.id}, 400, "label_mailbox_mismatch"),
        ):
            answer = await self.client.post(path, body)
            self.assertEqual((answer.status, answer.json["error"]["code"]), (status, code), body)
        answer = await self.client.post(
            f"/api/v1/messages/{NOBODY}/labels", {"label_id": label["id"]}
        )
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "message_not_found"))
        for _ in range(2):  # idempotent
            answer = await self.client.delete(f"{path}/{label['id']}")
            self.assertEqual((answer.status, answer.json), (200, {"data": {}}))
        view = (await self.client.get(f"/api/v1/messages/{placed.id}")).json["data"]
        self.assertIsNone(view["labels"])

    async def test_attachment_download_decodes_while_streaming(self):
        placed = await self.deliver(multipart())
        view = (await self.client.get(f"/api/v1/messages/{placed.id}")).json["data"]
        attachments = view["message"]["attachments"]
        self.assertEqual([a["part_index"] for a in attachments], [2, 3])
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/2")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, PDF)
        self.assertEqual(answer.header("Content-Type"), "application/pdf")
        self.assertEqual(answer.header("Content-Disposition"), 'attachment; filename="a\'b.pdf"')
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/3")
        self.assertEqual(answer.body.decode("utf-8"), TEXT)
        self.assertEqual(answer.header("Content-Disposition"), 'attachment; filename="notes.txt"')
        # The first part has an index too: no filename, no Content-Disposition.
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/1")
        self.assertEqual(
            (answer.body, answer.header("Content-Disposition")), (b"See attached.", None)
        )
        for bad in ("0", "-1", "x", "1.5"):
            answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/{bad}")
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (400, "invalid_attachment")
            )
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/9")
        self.assertEqual(
            (answer.status, answer.json["error"]["code"]), (404, "attachment_not_found")
        )
        answer = await self.client.get(f"/api/v1/messages/{NOBODY}/attachments/1")
        self.assertEqual((answer.status, answer.json["error"]["code"]), (404, "message_not_found"))

    async def test_attachment_from_deduplicated_storage(self):
        self.store.attachment_dedup_threshold = 1024
        placed = await self.deliver(multipart())
        self.assertTrue((await self.store.get_message_view(placed.id))[1].layout)
        answer = await self.client.get(f"/api/v1/messages/{placed.id}/attachments/2")
        self.assertEqual(answer.body, PDF)


class FlagsOverIMAPTests(IMAPTestCase):
    async def test_patch_read_shows_seen_over_imap(self):
        placed = await self.deliver(MESSAGE)
        session = await self.selected()
        client = APIClient(self.store)
        answer = await client.patch(
            f"/api/v1/messages/{placed.id}", {"read": True, "keywords": ["$Done"]}
        )
        self.assertEqual(answer.status, 200, answer.body)
        # The selected session hears the change (the change bus) at its next command...
        pushed = await session.command(b"N1 NOOP")
        self.assertRegex(pushed, rb"\* 1 FETCH \(.*FLAGS \(.*\\Seen")
        # ... and a fresh FETCH shows it.
        answer = await session.command(b"F1 FETCH 1 (FLAGS)")
        self.assertIn(b"\\Seen", answer)
        self.assertIn(b"$Done", answer)
