"""The message list's filters and the ``q`` search syntax (API.md 1.7), on SQLite (FTS5) and
PostgreSQL (tsvector)."""

from twisted.trial import unittest

from haitatsu.api.search import split
from haitatsu.storage.records import Delivery
from tests.api.client import APIClient
from tests.support import PG_SKIP, make_pg_store, make_store


def mail(
    sender, to, subject, body="Body.", date="Thu, 01 May 2025 10:00:00 +0000", cc=None, attach=False
):
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
    if cc:
        head += f"Cc: {cc}\r\n"
    if attach:
        return (
            head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            f"--b\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
            "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
            "filename=x.pdf\r\n\r\n%PDF\r\n--b--\r\n"
        ).encode()
    return (head + f"\r\n{body}\r\n").encode()


class SearchMixin:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.client = APIClient(self.store)
        self.mailbox = await self.store.create_mailbox("alice@example.com")
        m = self.mailbox.id
        self.invoice = await self.put(
            mail(
                "Billing@Shop.example",
                "alice@example.com",
                "Your invoice 42",
                "Pay soon please.",
                attach=True,
            ),
            flags=["\\Seen"],
        )
        self.party = await self.put(
            mail(
                "bob@friends.example",
                "alice@example.com",
                "Party on Friday",
                "Bring snacks",
                date="Sat, 10 May 2025 12:00:00 +0000",
                cc="carol@friends.example",
            ),
            flags=["\\Flagged"],
            tag="fun",
        )
        self.report = await self.put(
            mail(
                "boss@work.example",
                "team@work.example",
                "Quarterly report",
                "numbers attached",
                date="Mon, 02 Jun 2025 08:00:00 +0000",
            ),
            folder="Archive",
        )
        self.label = await self.store.create_label(m, "Important")
        await self.store.add_message_label(self.report.id, self.label.id)

    async def put(self, data, flags=(), folder="INBOX", tag=""):
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            [placed] = await self.store.deliver(
                path,
                [Delivery(self.mailbox.id, folder=folder, flags=tuple(flags), plus_tag=tag)],
                trace_id="T",
            )
        finally:
            os.unlink(path)
        return placed

    async def ids(self, q, extra=""):
        from urllib.parse import quote

        answer = await self.client.get(
            f"/api/v1/mailboxes/{self.mailbox.id}/messages?q={quote(q)}{extra}"
        )
        self.assertEqual(answer.status, 200, answer.body)
        return {v["mailbox_message"]["id"] for v in answer.json["data"]}

    async def test_filters(self):
        inv, party, rep = self.invoice.id, self.party.id, self.report.id
        cases = [
            ("from:shop", {inv}),
            ("FROM:BILLING", {inv}),
            ("to:team@work", {rep}),
            ("cc:carol", {party}),
            ('subject:"party on"', {party}),
            ("subject:REPORT", {rep}),
            ("folder:Archive", {rep}),
            ("folder:INBOX", {inv, party}),
            ("label:Important", {rep}),
            ("has:attachment", {inv}),
            ("is:read", {inv}),
            ("is:unread", {party, rep}),
            ("is:flagged", {party}),
            ("tag:FUN", {party}),
            ("after:2025-05-10", {party, rep}),
            ("before:2025-05-10", {inv, party}),
            ("after:2025-05-10T12:00:00Z before:2025-05-10T12:00:00Z", {party}),
            ("is:unread folder:INBOX", {party}),
            ("snacks", {party}),
            ("invoice", {inv}),
            ('"quarterly report"', {rep}),
            ("quarterly nothere", set()),
            ("from:boss numbers", {rep}),
            ("nokey:snacks", set()),  # free text: "nokey" and "snacks"
            ("bring:snacks", {party}),
        ]
        for q, expected in cases:
            self.assertEqual(await self.ids(q), expected, q)
        # q narrows the list's other filters.
        self.assertEqual(await self.ids("from:example", "&flagged=true"), {party})
        self.assertEqual(await self.ids("", f"&label_id={self.label.id}"), {rep})

    async def test_errors(self):
        base = f"/api/v1/mailboxes/{self.mailbox.id}/messages?q="
        for q, message in (
            ("folder:Nope", "folder not found"),
            ("label:Nope", "label not found"),
        ):
            answer = await self.client.get(base + q)
            self.assertEqual(answer.status, 400)
            self.assertEqual(
                answer.json["error"],
                {"code": "invalid_message_search", "message": message, "details": {}},
            )
        for q in ("after:yesterday", "before:2025-13-01", "is:spam", "has:pictures"):
            answer = await self.client.get(base + q)
            self.assertEqual(
                (answer.status, answer.json["error"]["code"]), (400, "invalid_message_search"), q
            )

    async def test_labels_in_list(self):
        answer = await self.client.get(f"/api/v1/mailboxes/{self.mailbox.id}/messages")
        views = {v["mailbox_message"]["id"]: v for v in answer.json["data"]}
        self.assertEqual([lab["name"] for lab in views[self.report.id]["labels"]], ["Important"])
        self.assertIsNone(views[self.invoice.id]["labels"])


class SplitTests(unittest.TestCase):
    def test_split(self):
        self.assertEqual(split('a  "b c" subject:"x y" d'), ["a", '"b c"', 'subject:"x y"', "d"])


class SQLiteSearchTests(SearchMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresSearchTests(SearchMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
