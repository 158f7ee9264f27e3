"""Query plans of the hot reads on SQLite: the REST message list must walk an index.

The statements are the ones the store really runs (captured with SQLite's trace callback on the
engine's connections) and ``EXPLAIN QUERY PLAN`` is asked of the same database. A page after a
cursor must be a range on ``mailbox_messages_mailbox`` (``mailbox_id``, ``created_at``, ``id``),
and the list of one folder a range on ``mailbox_messages_folder_created`` (schema 026), with no
sort: otherwise a page deep in a large mailbox, or of a small folder in it, walks every newer
row first (docs/api.md, Pagination; bench/rest.py measures it).
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.storage import Database, DirectoryBlobStore, LocalChangeBus, MailStore, SQLiteEngine
from haitatsu.storage.store import MessageQuery
from tests.support import deliver_bytes


class TracingEngine(SQLiteEngine):
    """A real SQLite engine whose connections record each statement they run, values filled in."""

    def __init__(self, path):
        super().__init__(path)
        self.statements: list[str] = []

    def connect(self):
        conn = super().connect()
        conn.set_trace_callback(self.statements.append)
        return conn


def message(n: int) -> bytes:
    return (
        f"From: a{n}@example.test\r\nTo: box@example.test\r\nSubject: message {n}\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


class MessageListPlanTests(unittest.TestCase):
    def setUp(self):
        return defer.Deferred.fromCoroutine(self.open_store())

    async def open_store(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.path = os.path.join(root, "haitatsu.db")
        self.engine = TracingEngine(self.path)
        self.store = MailStore(
            Database(self.engine, reactor),
            DirectoryBlobStore(os.path.join(root, "blobs"), reactor),
            LocalChangeBus(),
            reactor,
        )
        await self.store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.store.close()))
        self.mailbox = await self.store.create_mailbox("box@example.test")
        self.placed = []
        for n in range(5):
            self.placed += await deliver_bytes(self.store, message(n), self.mailbox.id)

    def plan_of_list(self) -> list[str]:
        """The query plan of the message list statement the store ran last."""
        runs = [s for s in self.engine.statements if "FROM mailbox_messages mm" in s]
        self.assertTrue(runs, "the store ran no message list")
        conn = sqlite3.connect(self.path)
        try:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + runs[-1])]
        finally:
            conn.close()

    async def test_first_page_walks_the_mailbox_index_without_sorting(self):
        self.engine.statements.clear()
        page = await self.store.query_messages(self.mailbox.id, limit=3)
        newest = sorted(self.placed, key=lambda mm: (mm.created_at, mm.id), reverse=True)
        self.assertEqual([mm.id for mm, _, _ in page], [mm.id for mm in newest[:3]])
        plan = self.plan_of_list()
        self.assertIn("SEARCH mm USING INDEX mailbox_messages_mailbox (mailbox_id=?)", plan)
        self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)

    async def test_page_after_a_cursor_is_a_range_on_the_index(self):
        newest = sorted(self.placed, key=lambda mm: (mm.created_at, mm.id), reverse=True)
        cursor = (newest[1].created_at, newest[1].id)
        self.engine.statements.clear()
        page = await self.store.query_messages(self.mailbox.id, limit=2, before=cursor)
        self.assertEqual([mm.id for mm, _, _ in page], [mm.id for mm in newest[2:4]])
        plan = self.plan_of_list()
        self.assertIn(
            "SEARCH mm USING INDEX mailbox_messages_mailbox "
            "(mailbox_id=? AND (created_at,id)<(?,?))",
            plan,
        )
        self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)

    async def test_one_folder_is_a_range_on_the_folder_index(self):
        other = await deliver_bytes(self.store, message(9), self.mailbox.id, folder="Sent")
        folder_id = other[0].folder_id
        self.engine.statements.clear()
        page = await self.store.query_messages(
            self.mailbox.id, MessageQuery(folder_id=folder_id), limit=2, before=(2**62, "Z")
        )
        self.assertEqual([mm.id for mm, _, _ in page], [other[0].id])
        plan = self.plan_of_list()
        self.assertIn(
            "SEARCH mm USING INDEX mailbox_messages_folder_created "
            "(folder_id=? AND (created_at,id)<(?,?))",
            plan,
        )
        self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)

    async def test_the_view_list_has_the_same_plans(self):
        # What the REST list runs (query_message_views: the placement's columns and the stored
        # message object) walks the same index ranges as query_messages, with no sort.
        newest = sorted(self.placed, key=lambda mm: (mm.created_at, mm.id), reverse=True)
        self.engine.statements.clear()
        page = await self.store.query_message_views(self.mailbox.id, limit=3)
        self.assertEqual([view.id for view in page], [mm.id for mm in newest[:3]])
        plan = self.plan_of_list()
        self.assertIn("SEARCH mm USING INDEX mailbox_messages_mailbox (mailbox_id=?)", plan)
        self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)
        cursor = (newest[1].created_at, newest[1].id)
        self.engine.statements.clear()
        page = await self.store.query_message_views(self.mailbox.id, limit=2, before=cursor)
        self.assertEqual([view.id for view in page], [mm.id for mm in newest[2:4]])
        plan = self.plan_of_list()
        self.assertIn(
            "SEARCH mm USING INDEX mailbox_messages_mailbox "
            "(mailbox_id=? AND (created_at,id)<(?,?))",
            plan,
        )
        self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)
        # Every message has its stored object: no second statement for the columns.
        self.assertFalse([s for s in self.engine.statements if "FROM messages m WHERE" in s])
