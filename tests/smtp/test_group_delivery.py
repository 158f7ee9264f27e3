"""Deliveries from several SMTP sessions finishing DATA together share group-committed
transactions: each session hears 250 only once its message is committed, and when the shared
transaction cannot commit every session hears 451 and nothing of any message is visible."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from haitatsu.storage import Database, DirectoryBlobStore, LocalChangeBus, MailStore, SQLiteEngine
from tests.smtp.helpers import Session, make_config, temp_dir
from tests.smtp.test_delivery import _OK, MESSAGE, dot_stuff

SESSIONS = 6


class GroupedDeliveryTests(unittest.TestCase):
    async def setUp(self):
        root = temp_dir(self)
        self.db_path = os.path.join(root, "haitatsu.db")
        # A short busy timeout, so a locked database fails fast instead of waiting 5 s.
        self.store = MailStore(
            Database(SQLiteEngine(self.db_path, busy_timeout_ms=50), reactor),
            DirectoryBlobStore(os.path.join(root, "blobs"), reactor),
            LocalChangeBus(),
            reactor,
        )
        await self.store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.store.close()))
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.heard = []
        self.store.changes.subscribe(self.bob.id, self.heard.append)
        self.sessions = []
        for _ in range(SESSIONS):
            session = Session(self, store=self.store, config=make_config())
            session.lines()
            session.command(b"EHLO client.example\r\n")
            self.sessions.append(session)

    async def send_all(self):
        """Each session sends one message; every end of DATA arrives in the same reactor turn.
        Return each session's reply to it."""
        for number, session in enumerate(self.sessions):
            lines = await session.converse(
                b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
                replies=3,
            )
            self.assertTrue(lines[-1].startswith(b"354"), lines)
            session.send(dot_stuff(MESSAGE + b"number %d\r\n" % number))
        for session in self.sessions:
            session.send(b".\r\n")
        return [(await session.converse(b"", replies=1))[0] for session in self.sessions]

    async def stored(self):
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        return await self.store.list_folder_messages(folder.id)

    async def test_sessions_finishing_together_share_transactions(self):
        before = len(self.store.db.group.batch_sizes)
        replies = await self.send_all()
        self.assertTrue(all(_OK.match(r) for r in replies), replies)
        self.assertEqual(len({_OK.match(r).group(1) for r in replies}), SESSIONS)
        self.assertEqual(sorted(m.uid for m in await self.stored()), list(range(1, 7)))
        self.assertGreater(max(self.store.db.group.batch_sizes[before:]), 1)
        exists = [c["uid"] for c in self.heard if c["type"] == "exists"]
        self.assertEqual(sorted(exists), list(range(1, 7)))

    async def test_a_shared_commit_that_fails_answers_451_to_each_and_stores_nothing(self):
        """Every delivery has stored its blob; then another connection holds the database's
        write lock while their commits run: the shared transaction and each retry alone fail,
        every session is told 451 4.3.0, and no message, placement or quota charge exists."""
        waiting = []
        blocker = sqlite3.connect(self.db_path, isolation_level=None, timeout=5)
        self.addCleanup(blocker.close)

        def barrier(keys):
            d = defer.Deferred()
            waiting.append(d)
            if len(waiting) == SESSIONS:
                blocker.execute("BEGIN IMMEDIATE")
                for w in waiting:
                    reactor.callLater(0, w.callback, None)
            return d

        self.store.before_commit = barrier
        replies = await self.send_all()
        self.assertEqual(replies, [b"451 4.3.0 temporary local problem"] * SESSIONS)
        blocker.execute("ROLLBACK")
        self.flushLoggedErrors()
        self.store.before_commit = None
        self.assertEqual(await self.stored(), [])
        self.assertEqual((await self.store.get_mailbox(self.bob.id)).used_bytes, 0)
        self.assertEqual(self.heard, [])

        async def rows(txn):
            messages = await txn.execute_one("SELECT COUNT(*) AS n FROM messages")
            referenced = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM blobs WHERE refcount <> 0"
            )
            return messages["n"], referenced["n"]

        self.assertEqual(await self.store.db.run("rows", rows, readonly=True), (0, 0))
        # The blobs stay for garbage collection; the next delivery goes through.
        session = self.sessions[0]
        lines = await session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        lines = await session.converse(dot_stuff(MESSAGE) + b".\r\n")
        self.assertTrue(_OK.match(lines[0]), lines)
        self.assertEqual(len(await self.stored()), 1)
        for s in self.sessions:
            self.assertEqual(s.spool_files(), [])
        await task.deferLater(reactor, 0, lambda: None)
