"""PostgreSQL faults through the real SMTP protocol (``InboundSMTPFactory`` with the real store on
a database of the test's own): connections killed with ``pg_terminate_backend`` from an admin
connection while DATA streams or just before the final dot."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.smtp.helpers import Session, make_config
from tests.support import PG_SKIP, make_pg_store, pg_allow_connections, pg_terminate

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: fault\r\n"
    b"\r\n" + b"A line of body text that goes on for a while.\r\n" * 200
)


class PostgresFaultTests(unittest.TestCase):
    skip = PG_SKIP

    async def setUp(self):
        self.store = await make_pg_store(self)
        self.dsn = self.store.db.engine.dsn
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.config = make_config(max_message_size=1_000_000, max_line_length=1000)

    def session(self) -> Session:
        return Session(self, store=self.store, config=self.config)

    async def start_data(self, session: Session):
        lines = await session.converse(b"EHLO client.example\r\n")
        self.assertTrue(lines[-1].startswith(b"250 "), lines)
        lines = await session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        self.assertEqual(lines[-1], b"354 end data with <CR><LF>.<CR><LF>")

    async def visible(self):
        """Every trace a delivery leaves in the database: rows of messages, placements, blob
        references, and the mailbox's usage and folder UID counter."""

        async def read(txn):
            counts = {}
            for table in ("messages", "mailbox_messages", "blobs"):
                row = await txn.execute_one(f"SELECT COUNT(*) AS n FROM {table}")
                counts[table] = row["n"]
            return counts

        counts = await self.store.db.run("count", read, readonly=True)
        inbox = await self.store.get_folder(self.bob.id, "INBOX")
        counts["used_bytes"] = (await self.store.get_mailbox(self.bob.id)).used_bytes
        counts["uid_next"] = inbox.uid_next
        return counts

    async def test_outage_during_data_tempfails_then_service_resumes(self):
        """Connections killed mid-DATA and PostgreSQL refusing new ones: 451 4.3.0 at the final
        dot, nothing visible; once PostgreSQL is back the next delivery on the same server (no
        restart, no reopen) succeeds."""
        session = self.session()
        await self.start_data(session)
        half = len(MESSAGE) // 2
        session.send(MESSAGE[:half])
        self.addCleanup(pg_allow_connections, self.dsn, True)
        pg_allow_connections(self.dsn, False)
        self.assertGreaterEqual(pg_terminate(self.dsn), 1)
        await deferLater(reactor, 0.05, lambda: None)
        session.send(MESSAGE[half:])
        lines = await session.converse(b".\r\n")
        self.assertEqual(lines, [b"451 4.3.0 temporary local problem"])
        self.assertEqual(session.spool_files(), [])

        pg_allow_connections(self.dsn, True)
        await deferLater(reactor, 0.3, lambda: None)  # past the pool's first back-off delay
        self.assertEqual(
            await self.visible(),
            {"messages": 0, "mailbox_messages": 0, "blobs": 0, "used_bytes": 0, "uid_next": 1},
        )
        again = self.session()
        await self.start_data(again)
        lines = await again.converse(MESSAGE + b".\r\n")
        self.assertTrue(lines[-1].startswith(b"250 2.0.0"), lines)
        counts = await self.visible()
        self.assertEqual(
            (counts["messages"], counts["mailbox_messages"], counts["uid_next"]), (1, 1, 2)
        )
        self.flushLoggedErrors()

    async def test_connections_killed_before_the_final_dot_deliver_once(self):
        """Every connection killed just before the final dot while PostgreSQL stays up: the
        engine throws the dead connections away (a transaction that hit one before COMMIT is run
        again on a fresh one): 250, and the message is stored exactly once."""
        session = self.session()
        await self.start_data(session)
        session.send(MESSAGE)
        self.assertGreaterEqual(pg_terminate(self.dsn), 1)
        lines = await session.converse(b".\r\n")
        self.assertTrue(lines[-1].startswith(b"250 2.0.0"), lines)
        inbox = await self.store.get_folder(self.bob.id, "INBOX")
        (mm,) = await self.store.list_folder_messages(inbox.id)
        self.assertEqual(
            await self.visible(),
            {
                "messages": 1,
                "mailbox_messages": 1,
                "blobs": 1,
                "used_bytes": mm.size_bytes,
                "uid_next": 2,
            },
        )
