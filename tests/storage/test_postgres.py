"""The PostgreSQL engine and change bus on a real server: placeholders, errors, the pool, what is
retried after a connection is killed (``pg_terminate_backend``) and what is not, reconnection,
migrations, and LISTEN/NOTIFY between two stores on one database."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.storage.changes_pg import MAX_PAYLOAD, PostgresChangeBus, encode
from haitatsu.storage.engine import schema_files
from haitatsu.storage.postgres import PostgresDatabase, PostgresEngine, convert_placeholders
from tests.support import (
    PG_SKIP,
    changes_settled,
    deliver_bytes,
    make_pg_database,
    make_pg_store,
    pg_allow_connections,
    pg_terminate,
)

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: pg\r\n\r\nHello.\r\n"


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class PlaceholderTests(unittest.SynchronousTestCase):
    def test_question_marks_become_format_markers(self):
        self.assertEqual(
            convert_placeholders("SELECT * FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)",
        )

    def test_literals_and_percent_signs(self):
        self.assertEqual(
            convert_placeholders("SELECT '?', \"a?\", 'it''s ?%' , 5 % 2, ? -- why? 100%\n, ?"),
            "SELECT '?', \"a?\", 'it''s ?%%' , 5 %% 2, %s -- why? 100%%\n, %s",
        )


class PostgresEngineTests(unittest.TestCase):
    skip = PG_SKIP

    async def open(self, max_connections=3):
        dsn = await make_pg_database(self)
        db = PostgresDatabase(PostgresEngine(dsn, max_connections=max_connections), reactor)
        await db.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(db.close()))

        async def create(txn):
            await txn.execute("CREATE TABLE t (id SERIAL PRIMARY KEY, v TEXT UNIQUE, n INT)")

        await db.run("create", create)
        return db

    async def count(self, db):
        async def read(txn):
            return (await txn.execute_one("SELECT COUNT(*) AS n FROM t"))["n"]

        return await db.run("count", read, readonly=True)

    async def test_rows_rowcount_and_in_clause(self):
        db = await self.open()

        async def work(txn):
            for v in ("a", "b", "c%"):
                await txn.execute("INSERT INTO t (v, n) VALUES (?, ?)", (v, len(v)))
            await txn.execute("UPDATE t SET n = n + 1 WHERE v LIKE 'c%'")
            updated = txn.rowcount
            clause, params = txn.in_clause("v", ["a", "c%"])
            rows = await txn.execute(f"SELECT v, n FROM t WHERE {clause} ORDER BY v", params)
            empty, none = txn.in_clause("v", [])
            nothing = await txn.execute(f"SELECT v FROM t WHERE {empty}", none)
            return updated, rows, nothing

        self.assertEqual(
            await db.run("work", work), (1, [{"v": "a", "n": 1}, {"v": "c%", "n": 3}], [])
        )

    async def test_errors_roll_back(self):
        db = await self.open()

        async def insert_then_fail(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("a",))
            raise RuntimeError("boom")

        with self.assertRaises(RuntimeError):
            await db.run("fail", insert_then_fail)

        async def insert_twice(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("b",))
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("b",))

        with self.assertRaises(Conflict):
            await db.run("dup", insert_twice)

        async def bad_sql(txn):
            await txn.execute("SELECT * FROM no_such_table")

        with self.assertRaises(StorageUnavailable):
            await db.run("bad", bad_sql)
        self.assertEqual(await self.count(db), 0)

    async def test_pool_never_exceeds_max_connections(self):
        db = await self.open(max_connections=2)
        running, peak = [0], [0]

        async def slow(txn):
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await txn.execute("SELECT pg_sleep(0.05)")
            running[0] -= 1

        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(db.run("slow", slow)) for _ in range(6)]
        )
        self.assertEqual(peak[0], 2)
        self.assertLessEqual(db.pool.size, 2)

    async def test_killed_before_commit_is_retried_and_commits_once(self):
        db = await self.open()
        attempts = []

        async def insert(txn):
            attempts.append(1)
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("once",))
            if len(attempts) == 1:
                self.assertEqual(pg_terminate(db.engine.dsn), 1)
            await txn.execute("UPDATE t SET n = 1 WHERE v = ?", ("once",))
            return len(attempts)

        self.assertEqual(await db.run("insert", insert), 2)
        self.assertEqual(await self.count(db), 1)

    async def test_idle_connections_killed_are_replaced(self):
        db = await self.open()

        async def hold(txn):
            await txn.execute("SELECT pg_sleep(0.02)")

        # Fill the pool with idle connections, kill them all, then carry on.
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(db.run("hold", hold)) for _ in range(3)]
        )
        self.assertEqual(pg_terminate(db.engine.dsn), 3)
        await sleep(0.1)

        async def insert(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("after",))

        await db.run("insert", insert)
        self.assertEqual(await self.count(db), 1)

    async def test_serialization_failure_is_retried(self):
        db = await self.open()

        async def seed(txn):
            await txn.execute("INSERT INTO t (v, n) VALUES ('row', 0)")

        await db.run("seed", seed)
        attempts = []
        go_on = defer.Deferred()

        async def read_then_write(txn):
            # The store runs at READ COMMITTED; a transaction that asks for REPEATABLE READ gets
            # serialization failures, and those are retried.
            await txn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            attempts.append(1)
            row = await txn.execute_one("SELECT n FROM t WHERE v = 'row'")
            if len(attempts) == 1:
                await go_on
            await txn.execute("UPDATE t SET n = ? WHERE v = 'row'", (row["n"] + 10,))

        async def bump(txn):
            await txn.execute("UPDATE t SET n = n + 1 WHERE v = 'row'")

        first = defer.Deferred.fromCoroutine(db.run("read_then_write", read_then_write))
        await sleep(0.05)
        await db.run("bump", bump)
        go_on.callback(None)
        await first

        async def value(txn):
            return (await txn.execute_one("SELECT n FROM t WHERE v = 'row'"))["n"]

        # The stale read (0) was not written back: the retry saw the concurrent bump.
        self.assertEqual((len(attempts), await db.run("value", value)), (2, 11))

    async def test_read_then_write_under_for_update_sees_the_concurrent_write(self):
        db = await self.open()

        async def seed(txn):
            await txn.execute("INSERT INTO t (v, n) VALUES ('row', 0)")

        await db.run("seed", seed)
        go_on = defer.Deferred()
        attempts = []

        async def bump_twice(txn):
            await txn.execute("UPDATE t SET n = n + 1 WHERE v = 'row'")
            await go_on
            await txn.execute("UPDATE t SET n = n + 1 WHERE v = 'row'")

        async def read_then_write(txn):
            attempts.append(1)
            row = await txn.execute_one("SELECT n FROM t WHERE v = 'row'" + txn.for_update)
            await txn.execute("UPDATE t SET n = ? WHERE v = 'row'", (row["n"] + 10,))

        first = defer.Deferred.fromCoroutine(db.run("bump_twice", bump_twice))
        await sleep(0.05)
        second = defer.Deferred.fromCoroutine(db.run("read_then_write", read_then_write))
        await sleep(0.05)
        go_on.callback(None)
        await first
        await second

        async def value(txn):
            return (await txn.execute_one("SELECT n FROM t WHERE v = 'row'"))["n"]

        # The locking read waited for the other transaction and saw both of its bumps.
        self.assertEqual((len(attempts), await db.run("value", value)), (1, 12))

    async def test_unreachable_database_is_unavailable_then_recovers(self):
        db = await self.open()
        pg_allow_connections(db.engine.dsn, False)
        self.addCleanup(pg_allow_connections, db.engine.dsn, True)
        pg_terminate(db.engine.dsn)
        await sleep(0.1)

        async def insert(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("x",))

        with self.assertRaises(StorageUnavailable):
            await db.run("insert", insert)
        # Within the back-off delay the pool answers at once, without trying.
        with self.assertRaisesRegex(StorageUnavailable, "next try in"):
            await db.run("insert", insert)
        pg_allow_connections(db.engine.dsn, True)
        for _ in range(50):
            try:
                await db.run("insert", insert)
                break
            except StorageUnavailable:
                await sleep(0.1)
        self.assertEqual(await self.count(db), 1)

    async def test_migrations_apply_once_even_from_two_nodes_at_once(self):
        dsn = await make_pg_database(self)
        # make_pg_database copies an already migrated template: start from an empty database.
        first = PostgresDatabase(PostgresEngine(dsn), reactor)
        await first.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(first.close()))

        async def drop_all(txn):
            await txn.execute("DROP SCHEMA public CASCADE")
            await txn.execute("CREATE SCHEMA public")

        await first.run("reset", drop_all)
        second = PostgresDatabase(PostgresEngine(dsn), reactor)
        await second.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(second.close()))
        applied = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(first.migrate()),
                defer.Deferred.fromCoroutine(second.migrate()),
            ]
        )
        every = [v for v, _, _ in schema_files("postgres")]
        self.assertEqual(sorted([applied[0], applied[1]]), [[], every])
        self.assertTrue(await first.schema_current())


class PostgresChangeBusTests(unittest.TestCase):
    skip = PG_SKIP

    def test_payload_limit(self):
        small = json.loads(encode("M", {"type": "flags", "folder_id": "F", "uid": 1}))
        self.assertEqual(small, {"m": "M", "c": {"type": "flags", "folder_id": "F", "uid": 1}})
        big = encode("M", {"type": "flags", "folder_id": "F", "flags": ["$k" * 50] * 200})
        self.assertLessEqual(len(big.encode()), MAX_PAYLOAD)
        self.assertEqual(
            json.loads(big)["c"], {"type": "flags", "folder_id": "F", "truncated": True}
        )

    async def test_two_nodes_hear_every_change_exactly_once(self):
        node_a = await make_pg_store(self)
        # A second node: its own pool and listener on the same database and blob directory.
        from haitatsu.storage import build_postgres_store

        node_b = build_postgres_store(reactor, node_a.db.engine.dsn, node_a.blobs.root, 2)
        await node_b.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(node_b.close()))
        mailbox = await node_a.create_mailbox("bob@example.com")
        heard_a, heard_b = [], []
        node_a.changes.subscribe(mailbox.id, heard_a.append)
        node_b.changes.subscribe(mailbox.id, heard_b.append)
        (first,) = await deliver_bytes(node_b, MESSAGE, mailbox.id)
        (second,) = await deliver_bytes(node_a, MESSAGE + b"2\r\n", mailbox.id)
        await node_a.store_flags(first.folder_id, [first.uid], ["\\Seen"], "+")
        big = ["$kw%04d" % i for i in range(1500)]
        await node_b.store_flags(first.folder_id, [second.uid], big, "+")
        await changes_settled(node_a)
        await changes_settled(node_b)
        self.assertEqual(heard_a, heard_b)
        self.assertEqual(
            [(c["type"], c.get("uid")) for c in heard_a],
            [("exists", 1), ("exists", 2), ("flags", 1), ("flags", None)],
        )
        self.assertEqual(heard_a[0]["folder_id"], first.folder_id)
        self.assertTrue(heard_a[3]["truncated"])

    async def test_rolled_back_changes_are_never_heard(self):
        store = await make_pg_store(self)
        mailbox = await store.create_mailbox("bob@example.com")
        heard = []
        store.changes.subscribe(mailbox.id, heard.append)

        async def announce_then_fail(txn):
            await store.changes.publish_in(txn, mailbox.id, {"type": "exists", "folder_id": "F"})
            raise RuntimeError("rolled back")

        with self.assertRaises(RuntimeError):
            await store.db.run("fail", announce_then_fail)
        await changes_settled(store)
        self.assertEqual(heard, [])

    async def test_listener_reconnects_and_listens_again(self):
        store = await make_pg_store(self)
        bus = store.changes
        self.assertIsInstance(bus, PostgresChangeBus)
        mailbox = await store.create_mailbox("bob@example.com")
        heard = []
        bus.subscribe(mailbox.id, heard.append)
        reconnected = bus.reconnected
        pg_terminate(store.db.engine.dsn)
        await reconnected.addTimeout(10, reactor)
        self.assertTrue(bus.listening)
        self.assertEqual(heard, [{"type": "resync"}])
        (mm,) = await deliver_bytes(store, MESSAGE, mailbox.id)
        await changes_settled(store)
        self.assertEqual([c["type"] for c in heard], ["resync", "exists"])
        self.assertEqual(heard[1]["uid"], mm.uid)


class BuildStoreTests(unittest.SynchronousTestCase):
    def test_driver_chooses_the_engine(self):
        from haitatsu.config.model import Config, DatabaseConfig
        from haitatsu.storage import build_store
        from haitatsu.storage.changes import LocalChangeBus
        from haitatsu.storage.engine import Database

        config = Config(
            database=DatabaseConfig(
                driver="postgres", dsn="host=127.0.0.1 dbname=mail user=me", max_connections=7
            )
        )
        store = build_store(config, reactor)
        self.assertIsInstance(store.db, PostgresDatabase)
        self.assertEqual(store.db.engine.max_connections, 7)
        self.assertEqual(store.db.engine.dsn, "host=127.0.0.1 dbname=mail user=me")
        self.assertIsInstance(store.changes, PostgresChangeBus)
        self.assertEqual(store.blobs.root, os.path.abspath(config.blob_dir))
        store = build_store(Config(), reactor)
        self.assertIsInstance(store.db, Database)
        self.assertIsInstance(store.changes, LocalChangeBus)
