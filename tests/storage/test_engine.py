"""The SQLite engine: pragmas, thread use, transactions, errors and migrations."""

from __future__ import annotations

import os
import threading

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.storage.engine import (
    Database,
    SQLiteEngine,
    _Workers,
    schema_files,
    split_statements,
)


class ThreadReportingEngine(SQLiteEngine):
    """A real SQLite engine whose connections can say which thread runs a statement."""

    def connect(self):
        conn = super().connect()
        conn.create_function("thread_ident", 0, threading.get_ident)
        return conn


class SQLiteEngineTests(unittest.TestCase):
    async def open(self, engine_class=SQLiteEngine):
        path = os.path.join(os.path.abspath(self.mktemp()), "test.db")
        db = Database(engine_class(path), reactor)
        await db.open()
        self.addCleanup(db.close)
        return db

    async def test_pragmas(self):
        db = await self.open()

        async def read(txn):
            return (
                (await txn.execute_one("PRAGMA journal_mode"))["journal_mode"],
                (await txn.execute_one("PRAGMA foreign_keys"))["foreign_keys"],
                (await txn.execute_one("PRAGMA busy_timeout"))["timeout"],
            )

        self.assertEqual(await db.run("pragmas", read), ("wal", 1, 5000))
        self.assertEqual(await db.run("pragmas", read, readonly=True), ("wal", 1, 5000))

    async def test_statements_never_run_on_the_reactor_thread(self):
        db = await self.open(ThreadReportingEngine)

        async def where(txn):
            return (await txn.execute_one("SELECT thread_ident() AS t"))["t"]

        here = threading.get_ident()
        self.assertNotEqual(await db.run("where", where), here)
        self.assertNotEqual(await db.run("where", where, readonly=True), here)

    async def test_failed_transaction_rolls_back(self):
        db = await self.open()

        async def create(txn):
            await txn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")

        await db.run("create", create)

        async def insert_then_fail(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("a",))
            raise RuntimeError("boom")

        with self.assertRaises(RuntimeError):
            await db.run("fail", insert_then_fail)

        async def count(txn):
            return (await txn.execute_one("SELECT COUNT(*) AS n FROM t"))["n"]

        self.assertEqual(await db.run("count", count, readonly=True), 0)

        async def insert_twice(txn):
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("b",))
            await txn.execute("INSERT INTO t (v) VALUES (?)", ("b",))

        with self.assertRaises(Conflict):
            await db.run("dup", insert_twice)
        self.assertEqual(await db.run("count", count, readonly=True), 0)

        async def bad_sql(txn):
            await txn.execute("SELECT * FROM no_such_table")

        with self.assertRaises(StorageUnavailable):
            await db.run("bad", bad_sql)

    async def test_in_clause(self):
        db = await self.open()

        async def query(txn):
            clause, params = txn.in_clause("value", [1, 3])
            none_clause, none_params = txn.in_clause("value", [])
            rows = await txn.execute(
                f"SELECT value FROM (SELECT 1 AS value UNION SELECT 2 UNION SELECT 3) "
                f"WHERE {clause} ORDER BY value",
                params,
            )
            empty = await txn.execute(
                f"SELECT value FROM (SELECT 1 AS value) WHERE {none_clause}", none_params
            )
            return [r["value"] for r in rows], empty

        self.assertEqual(await db.run("in", query, readonly=True), ([1, 3], []))

    async def test_migrations_apply_once(self):
        db = await self.open()
        latest = max(v for v, _, _ in schema_files("sqlite"))
        applied = await db.migrate()
        self.assertEqual(applied[-1], latest)
        self.assertTrue(await db.schema_current())
        self.assertEqual(await db.migrate(), [])

    async def test_closed_database_is_unavailable(self):
        db = await self.open()
        await db.close()

        async def nothing(txn):
            return None

        with self.assertRaises(StorageUnavailable):
            await db.run("closed", nothing)


async def _entered(event: threading.Event, seconds: float = 10.0) -> None:
    """Wait, without blocking the reactor, until a database thread has set ``event``."""
    for _ in range(int(seconds / 0.01)):
        if event.is_set():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the transaction never started")


class CancelledTransactionTests(unittest.TestCase):
    """A caller cancelled while its transaction runs in a thread (Klein cancels a request's
    handler when the client goes away) gets ``CancelledError`` only once the thread is done:
    until then the connection stays with the running transaction."""

    async def open(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "test.db")
        db = Database(SQLiteEngine(path), reactor)
        await db.open()
        self.addCleanup(db.close)

        async def create(txn):
            await txn.execute("CREATE TABLE t (v TEXT)")

        await db.run("create", create)
        return db

    async def test_cancelled_read_keeps_its_connection_until_the_thread_ends(self):
        db = await self.open()
        entered, gate, events = threading.Event(), threading.Event(), []

        async def slow(txn):
            entered.set()
            gate.wait(10)
            row = await txn.execute_one("SELECT 1 AS one")  # fails on a closed connection
            events.append("read done")
            return row["one"]

        d = defer.Deferred.fromCoroutine(db.run("slow", slow, readonly=True))
        d.addErrback(lambda f: events.append(f.trap(defer.CancelledError).__name__))
        await _entered(entered)
        d.cancel()
        self.assertEqual(events, [])  # the caller is not let go while the thread runs
        gate.set()
        await d
        self.assertEqual(events, ["read done", "CancelledError"])

        async def again(txn):
            return (await txn.execute_one("SELECT 2 AS two"))["two"]

        self.assertEqual(await db.run("again", again, readonly=True), 2)

    async def test_cancelled_write_holds_the_write_lock_and_runs_after_commit(self):
        db = await self.open()
        entered, gate, events = threading.Event(), threading.Event(), []

        async def first(txn):
            entered.set()
            gate.wait(10)
            await txn.execute("INSERT INTO t (v) VALUES ('first')")
            txn.call_after_commit(events.append, "first committed")

        async def second(txn):
            events.append("second began")
            await txn.execute("INSERT INTO t (v) VALUES ('second')")

        d1 = defer.Deferred.fromCoroutine(db.run("first", first))
        d1.addErrback(lambda f: events.append(f.trap(defer.CancelledError).__name__))
        await _entered(entered)
        d1.cancel()
        d2 = defer.Deferred.fromCoroutine(db.run("second", second))
        self.assertEqual(events, [])
        gate.set()
        await d1
        await d2
        self.assertEqual(events, ["first committed", "CancelledError", "second began"])

        async def values(txn):
            return [r["v"] for r in await txn.execute("SELECT v FROM t ORDER BY v")]

        self.assertEqual(await db.run("values", values, readonly=True), ["first", "second"])


class SchemaFileTests(unittest.SynchronousTestCase):
    def test_split_statements(self):
        text = (
            "-- a comment; with a semicolon\n"
            "CREATE TABLE a (x TEXT DEFAULT 'a;b');\n"
            "\n"
            "CREATE INDEX i ON a (x);"
        )
        self.assertEqual(
            split_statements(text),
            ["CREATE TABLE a (x TEXT DEFAULT 'a;b')", "CREATE INDEX i ON a (x)"],
        )

    def test_schema_files_are_numbered_from_one(self):
        # Numbers need not be contiguous (parallel branches reserve numbers); migrate() relies on
        # their order and uniqueness, and on both databases having the same set.
        versions = [v for v, _, _ in schema_files("sqlite")]
        self.assertEqual(versions[0], 1)
        self.assertEqual(versions, sorted(set(versions)))
        self.assertEqual(versions, [v for v, _, _ in schema_files("postgres")])


class WorkerThreadTests(unittest.TestCase):
    """The database's threads (``_Workers``): calls run off the reactor thread, results and
    failures come back on it, and stopping lets the queued calls finish first."""

    async def test_results_failures_and_stop(self):
        workers = _Workers(reactor, 3, "test-db")
        workers.start()
        main = threading.get_ident()
        seen = []

        def call(n):
            self.assertNotEqual(threading.get_ident(), main)
            return n * 2

        def fail():
            raise ValueError("no")

        results = await defer.gatherResults(
            [workers.run(call, n).addCallback(lambda r: (seen.append(r), r)[1]) for n in range(50)]
        )
        self.assertEqual(results, [n * 2 for n in range(50)])
        self.assertEqual(sorted(seen), results)
        with self.assertRaises(ValueError):
            await workers.run(fail)
        gate = threading.Event()
        late = workers.run(lambda: gate.wait(10) and "ran")
        stopping = threads.deferToThread(workers.stop)
        gate.set()
        await stopping
        self.assertEqual(await late, "ran")
