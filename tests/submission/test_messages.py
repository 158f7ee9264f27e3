"""What a submitted message becomes: the Sent copy byte for byte (Bcc gone, Date, Message-ID and
our trace headers added, a DKIM signature dkimpy verifies with the published record), local
deliveries, and the outbound job with its VERP return path and every envelope recipient."""

from __future__ import annotations

import re

from twisted.trial import unittest

from tests.submission.helpers import SubmissionSession, plain, verify
from tests.submission.test_session import add_key
from tests.support import PG_SKIP, make_pg_store, make_store

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.com>, carol@remote.example\r\n"
    b"Bcc: dave@remote.example\r\n"
    b"Subject:  Hello   there \r\n"
    b"X-Haitatsu-Trace-ID: forged\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b"\r\n"
    b".a line with a leading dot\r\n"
    b"caf\xc3\xa9\r\n"
    b"\r\n"
    b"\r\n"
)

_OK = re.compile(rb"250 2\.0\.0 OK ([0-9A-HJKMNP-TV-Z]{26})\Z")


def dot_stuff(message: bytes) -> bytes:
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def split_signature(raw: bytes) -> tuple[bytes, bytes]:
    """``(DKIM-Signature field, the rest)`` of a message that starts with one."""
    assert raw.startswith(b"DKIM-Signature: "), raw[:80]
    end = 0
    while True:
        end = raw.index(b"\r\n", end) + 2
        if raw[end : end + 1] not in (b" ", b"\t"):
            return raw[:end], raw[end:]


async def queue_rows(store):
    """The outbound jobs and their recipients, read straight from the tables: the queue's own
    API is the queue workers' (another branch)."""

    async def txn_fn(txn):
        jobs = await txn.execute("SELECT * FROM outbound_jobs ORDER BY created_at")
        rcpts = await txn.execute("SELECT job_id, rcpt, status FROM outbound_recipients")
        return jobs, rcpts

    return await store.db.run("peek_queue", txn_fn, readonly=True)


class SubmittedMessageTests(unittest.TestCase):
    make_store = staticmethod(make_store)

    async def setUp(self):
        self.store = await self.make_store(self)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")
        _, self.password = await self.store.create_app_password(self.alice.id, "mua", ["smtp"])
        self.key = await add_key(self.store, "example.com")
        self.session = SubmissionSession(self, self.store)
        self.session.lines()
        self.session.command(b"EHLO client.example\r\n")
        await self.session.converse(
            b"AUTH PLAIN " + plain("alice@example.com", self.password) + b"\r\n"
        )

    async def send(self, rcpts, message=MESSAGE, sender=b"alice@example.com"):
        lines = await self.session.converse(
            b"MAIL FROM:<" + sender + b">\r\n"
            + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts)
            + b"DATA\r\n",
            replies=len(rcpts) + 2,
        )  # fmt: skip
        self.assertTrue(lines[-1].startswith(b"354"), lines)
        lines += await self.session.converse(dot_stuff(message) + b".\r\n")
        return lines

    async def folder(self, mailbox, name):
        folder = await self.store.get_folder(mailbox.id, name)
        rows = await self.store.list_folder_messages(folder.id)
        views = await self.store.get_messages(folder.id, [m.uid for m in rows]) if rows else []
        return [(mm, info, await self.store.read_message(info)) for mm, info in views]

    async def test_sent_copy_local_delivery_and_queue(self):
        lines = await self.send(
            [b"bob@example.com", b"carol@remote.example", b"dave@remote.example"]
        )
        m = _OK.match(lines[-1])
        self.assertTrue(m, lines)
        trace_id = m.group(1).decode()

        [(sent, info, raw)] = await self.folder(self.alice, "Sent")
        self.assertEqual(sent.flags, ("\\Seen",))
        signature, rest = split_signature(raw)
        date = re.search(rb"\r\nDate: ([^\r]*)\r\n", rest).group(1)
        self.assertRegex(
            date, rb"\A[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000\Z"
        )
        message_id = re.search(rb"\r\nMessage-ID: (<[0-9A-Z]{26}@mail\.example\.test>)\r\n", rest)
        self.assertIsNotNone(message_id, rest)
        self.assertEqual(
            rest,
            b"From: Alice <alice@example.com>\r\n"
            b"To: Bob <bob@example.com>, carol@remote.example\r\n"
            b"Subject:  Hello   there \r\n"
            b"Date: " + date + b"\r\n"
            b"Message-ID: " + message_id.group(1) + b"\r\n"
            b"X-Haitatsu-Trace-ID: " + trace_id.encode() + b"\r\n"
            b"X-Haitatsu-Node: node-1\r\n"
            b"\r\n"
            b"Hello Bob,  \r\n"
            b"\r\n"
            b".a line with a leading dot\r\n"
            b"caf\xc3\xa9\r\n"
            b"\r\n"
            b"\r\n",
        )  # fmt: skip
        self.assertIn(b"d=example.com", signature)
        self.assertIn(b"a=rsa-sha256", signature)
        self.assertIn(b"c=relaxed/relaxed", signature)
        self.assertTrue(verify(raw, [self.key]))
        # The headers the signature covers: the contract's list, absent ones included.
        h = re.search(rb"h=([^;]*);", signature.replace(b"\r\n", b"")).group(1)
        self.assertEqual(
            [x.strip() for x in h.split(b":")],
            [
                b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                b"in-reply-to", b"references", b"mime-version", b"content-type",
                b"x-haitatsu-trace-id", b"x-haitatsu-node",
            ],
        )  # fmt: skip

        # The row: auth_results {}, the Bcc not even in the parsed headers.
        self.assertEqual(info.auth_results, {})
        self.assertEqual(info.bcc_addresses, [])
        self.assertEqual(info.size_bytes, len(raw))
        self.assertEqual(info.trace_id, trace_id)
        alice = await self.store.get_mailbox(self.alice.id)
        self.assertEqual(alice.used_bytes, len(raw))

        # Bob, local, has the same bytes in his INBOX, unread.
        [(inbox, bob_info, bob_raw)] = await self.folder(self.bob, "INBOX")
        self.assertEqual(bob_raw, raw)
        self.assertEqual(bob_info.id, info.id)
        self.assertEqual(inbox.flags, ())
        self.assertEqual(inbox.original_rcpt, "bob@example.com")

        # Carol and Dave (Bcc: only in the envelope) are queued, from the VERP address.
        jobs, rcpts = await queue_rows(self.store)
        [job] = jobs
        self.assertEqual(job["message_id"], info.id)
        self.assertEqual(job["mailbox_id"], self.alice.id)
        self.assertEqual(job["mail_from"], f"bounces+{info.id}@example.com")
        self.assertEqual(job["trace_id"], trace_id)
        self.assertEqual(job["status"], "queued")
        self.assertEqual(
            sorted((r["rcpt"], r["status"]) for r in rcpts),
            [("carol@remote.example", "pending"), ("dave@remote.example", "pending")],
        )
        self.assertEqual(self.session.spool_files(), [])

    async def test_existing_date_and_message_id_are_kept(self):
        message = (
            b"From: alice@example.com\r\n"
            b"Date: Thu, 01 May 2025 10:20:30 +0200\r\n"
            b"Message-ID: <mine@client.example>\r\n"
            b"Subject: kept\r\n"
            b"\r\n"
            b"Body\r\n"
        )
        await self.send([b"bob@example.com"], message)
        [(_, info, raw)] = await self.folder(self.alice, "Sent")
        _, rest = split_signature(raw)
        self.assertEqual(
            rest.split(b"\r\nX-Haitatsu-Trace-ID:")[0],
            b"From: alice@example.com\r\n"
            b"Date: Thu, 01 May 2025 10:20:30 +0200\r\n"
            b"Message-ID: <mine@client.example>\r\n"
            b"Subject: kept",
        )
        self.assertEqual(info.rfc_message_id, "<mine@client.example>")
        self.assertTrue(verify(raw, [self.key]))
        self.assertEqual(await queue_rows(self.store), ([], []))

    async def test_missing_from_is_added_and_bare_lf_becomes_crlf(self):
        await self.send([b"bob@example.com"], b"Subject: no from\r\n\r\nline\nnext\r\n")
        [(_, _, raw)] = await self.folder(self.alice, "Sent")
        _, rest = split_signature(raw)
        self.assertTrue(rest.startswith(b"Subject: no from\r\nFrom: alice@example.com\r\n"), rest)
        self.assertTrue(rest.endswith(b"\r\n\r\nline\r\nnext\r\n"), rest)
        self.assertTrue(verify(raw, [self.key]))

    async def test_ed25519_signature(self):
        """A domain whose key is Ed25519 gets an ed25519-sha256 signature (RFC 8463)."""
        await self.store.create_mailbox("erin@ed.example")
        erin = await self.store.find_mailbox("erin@ed.example")
        _, password = await self.store.create_app_password(erin.id, "mua", ["smtp"])
        key = await add_key(self.store, "ed.example", "ed25519", selector="ed1")
        session = SubmissionSession(self, self.store)
        session.lines()
        session.command(b"EHLO client.example\r\n")
        await session.converse(b"AUTH PLAIN " + plain("erin@ed.example", password) + b"\r\n")
        self.session = session
        lines = await self.send(
            [b"bob@example.com"], b"From: erin@ed.example\r\n\r\nHi\r\n", b"erin@ed.example"
        )
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.folder(erin, "Sent")
        signature, _ = split_signature(raw)
        self.assertIn(b"a=ed25519-sha256", signature)
        self.assertIn(b"s=ed1", signature)
        self.assertTrue(verify(raw, [key]))
        # And the check really checks: a changed body fails.
        self.assertFalse(verify(raw.replace(b"Hi\r\n", b"Ho\r\n"), [key]))

    async def test_local_recipient_over_quota_goes_to_the_queue(self):
        """A local mailbox that cannot take the message is not skipped: its recipient joins
        the outbound job, which retries and in the end bounces (docs/submission.md)."""
        await self.store.update_mailbox(self.bob.id, quota_bytes=10)
        lines = await self.send([b"bob@example.com"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(await self.folder(self.bob, "INBOX"), [])
        [(_, info, _)] = await self.folder(self.alice, "Sent")
        jobs, rcpts = await queue_rows(self.store)
        self.assertEqual([j["message_id"] for j in jobs], [info.id])
        self.assertEqual([r["rcpt"] for r in rcpts], ["bob@example.com"])

    async def test_sending_to_oneself(self):
        """The sender as a recipient: a Sent copy and an INBOX copy, each charged."""
        await self.send([b"alice@example.com"])
        [(sent, _, raw)] = await self.folder(self.alice, "Sent")
        [(inbox, _, _)] = await self.folder(self.alice, "INBOX")
        self.assertEqual((sent.flags, inbox.flags), (("\\Seen",), ()))
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, 2 * len(raw))

    async def test_storage_failure_is_451_and_leaves_nothing(self):
        await self.session.converse(
            b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        await self.store.db.close()
        lines = await self.session.converse(dot_stuff(MESSAGE) + b".\r\n")
        self.assertEqual(lines, [b"451 4.3.0 temporary local problem"])
        self.assertEqual(self.session.spool_files(), [])


class PostgresSubmittedMessageTests(SubmittedMessageTests):
    """The same on PostgreSQL (READ COMMITTED, FOR UPDATE paths)."""

    skip = PG_SKIP
    make_store = staticmethod(make_pg_store)
