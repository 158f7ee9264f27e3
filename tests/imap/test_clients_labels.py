"""Labels as folders with real clients on loopback (imapclient, imaplib), side by side with the
REST API on the same store: a label made over REST is a folder in IMAP, and one made in IMAP is
a label over REST. On SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import imaplib

import imapclient
from twisted.internet import reactor, threads

from tests.api.client import APIClient
from tests.imap import helpers
from tests.imap.helpers import ADDRESS, MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.support import PG_SKIP, changes_settled, make_pg_store


class LabelClientTests:
    def listen(self) -> int:
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @d
    async def test_imapclient_with_labels_from_and_for_the_rest_api(self):
        api = APIClient(self.store)
        inbox_mm = await self.deliver(SIMPLE)
        await self.deliver(MULTIPART, folder="Archive")
        answer = await api.post(
            f"/api/v1/mailboxes/{self.mailbox.id}/labels", {"name": "Projekte/Entwürfe"}
        )
        rest_label = answer.json["data"]
        answer = await api.post(
            f"/api/v1/messages/{inbox_mm.id}/labels", {"label_id": rest_label["id"]}
        )
        self.assertEqual(answer.status, 201, answer.body)
        port = self.listen()
        password = self.password

        def client():
            out = {}
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as c:
                c.login(ADDRESS, password)
                out["folders"] = [(f[0], f[2]) for f in c.list_folders("", "Labels*")]
                info = c.select_folder("Labels/Projekte/Entwürfe")
                out["select"] = (info[b"EXISTS"], info[b"UIDVALIDITY"], info[b"UIDNEXT"])
                out["fetch"] = c.fetch([1], ["UID", "ENVELOPE"])
                c.create_folder("Labels/Reisen")
                c.select_folder("Archive")
                out["copy"] = c.copy([1], "Labels/Reisen")
                c.select_folder("INBOX")
                c.move([1], "Labels/Reisen")
                info = c.select_folder("Labels/Reisen")
                out["reisen"] = info[b"EXISTS"]
                out["search"] = c.search(["SUBJECT", "Lunch"])
                c.add_flags([1], [b"\\Deleted"])
                out["expunge"] = c.expunge()
                out["status"] = c.folder_status("Labels/Reisen", ["MESSAGES", "UIDNEXT"])
                c.rename_folder("Labels/Projekte/Entwürfe", "Labels/Arbeit/Entwürfe")
                try:
                    c.rename_folder("Labels/Reisen", "Reisen")
                except imapclient.exceptions.IMAPClientError as e:
                    out["refused"] = str(e)
            return out

        out = await threads.deferToThread(client)
        self.assertEqual(
            out["folders"],
            [
                ((b"\\Noselect", b"\\HasChildren"), "Labels"),
                ((b"\\Noselect", b"\\HasChildren"), "Labels/Projekte"),
                ((b"\\HasNoChildren",), "Labels/Projekte/Entwürfe"),
            ],
        )
        self.assertEqual(out["select"], (1, rest_label["uid_validity"], 2))
        self.assertEqual(out["fetch"][1][b"ENVELOPE"].subject, b"Lunch on Friday")
        self.assertIn("[CANNOT] A label can only be renamed within Labels/", out["refused"])
        # The Archive message was copied in (UID 1), the INBOX one moved in (UID 2: archived,
        # labelled); \Deleted and EXPUNGE took the label off the first, which stays in Archive.
        self.assertEqual(out["reisen"], 2)
        self.assertEqual(out["search"], [2])
        self.assertEqual(out["expunge"][1], [(1, b"EXPUNGE")])
        self.assertEqual(out["status"], {b"MESSAGES": 1, b"UIDNEXT": 3})
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        self.assertEqual(len(await self.store.list_folder_messages(archive.id)), 2)
        self.assertEqual((await self.store.get_message_view(inbox_mm.id))[0].folder_id, archive.id)
        # Over REST: the IMAP-made label, the renamed one, and the message lists.
        answer = await api.get(f"/api/v1/mailboxes/{self.mailbox.id}/labels")
        labels = {label["name"]: label for label in answer.json["data"]}
        self.assertEqual(sorted(labels), ["Arbeit/Entwürfe", "Reisen"])
        self.assertEqual(labels["Arbeit/Entwürfe"]["id"], rest_label["id"])
        self.assertEqual(labels["Reisen"]["uid_next"], 3)
        answer = await api.get(
            f"/api/v1/mailboxes/{self.mailbox.id}/messages?label_id={labels['Reisen']['id']}"
        )
        [entry] = answer.json["data"]
        self.assertEqual(entry["mailbox_message"]["id"], inbox_mm.id)
        self.assertEqual(
            [label["name"] for label in entry["labels"]], ["Arbeit/Entwürfe", "Reisen"]
        )

    @d
    async def test_imaplib_two_sessions_idle_hears_a_rest_label(self):
        api = APIClient(self.store)
        mm = await self.deliver(SIMPLE)
        label = await self.store.create_label(self.mailbox.id, "Später")
        port = self.listen()
        password = self.password
        ready = []

        def watcher():
            m = imaplib.IMAP4("127.0.0.1", port)
            m.sock.settimeout(10)
            try:
                m.login(ADDRESS, password)
                typ, data = m.select('"Labels/Sp&AOQ-ter"')
                out = {"select": (typ, data)}
                tag = m._new_tag()
                m.send(tag + b" IDLE\r\n")
                out["idle"] = m.readline()
                ready.append(True)
                out["pushed"] = m.readline()
                m.send(b"DONE\r\n")
                out["done"] = m.readline()
                out["fetch"] = m.fetch("1", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                return out
            finally:
                m.logout()

        idling = threads.deferToThread(watcher)
        while not ready:
            await threads.deferToThread(lambda: __import__("time").sleep(0.02))
        answer = await api.post(f"/api/v1/messages/{mm.id}/labels", {"label_id": label.id})
        self.assertEqual(answer.status, 201, answer.body)
        await changes_settled(self.store)
        out = await idling
        self.assertEqual(out["select"], ("OK", [b"0"]))
        self.assertEqual(out["idle"], b"+ idling\r\n")
        self.assertEqual(out["pushed"], b"* 1 EXISTS\r\n")
        self.assertTrue(out["done"].endswith(b" OK IDLE terminated\r\n"), out["done"])
        typ, data = out["fetch"]
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][0], b"1 (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {28}")
        self.assertEqual(data[0][1], b"Subject: Lunch on Friday\r\n\r\n")


class SQLiteLabelClientTests(LabelClientTests, IMAPTestCase):
    pass


class PostgresLabelClientTests(LabelClientTests, IMAPTestCase):
    skip = PG_SKIP

    def setUp(self):
        self.patch(helpers, "make_store", make_pg_store)
        return super().setUp()
