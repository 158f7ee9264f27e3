"""One SQL code path, several database engines.

Store code writes SQL once, with ``?`` placeholders, inside transaction functions
(``async def fn(txn, ...)``) run by ``Database.run``. The engine object knows what differs between
databases: how to connect, the parameter style, how to write ``IN`` lists, which errors are
constraint violations and which are worth retrying. The PostgreSQL engine (txpostgres) plugs in
here without a second store.

SQLite never runs on the reactor thread: every statement runs in a thread pool on a connection
checked out for the whole transaction. Writers are serialized in-process and take the write lock
up front (``BEGIN IMMEDIATE``); readers use their own connections, which WAL lets run beside the
writer.
"""

from __future__ import annotations

import os
import queue
import re
import sqlite3
import threading
from importlib import resources

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.storage.group import GroupCommitter, Outcome

_log = Logger()


class SQLiteEngine:
    """The embedded default: one database file in WAL mode."""

    name = "sqlite"
    supports_returning = True

    def __init__(
        self, path: str, readers: int = 3, busy_timeout_ms: int = 5000, synchronous: str = "FULL"
    ):
        self.path = path
        self.readers = readers
        self.busy_timeout_ms = busy_timeout_ms
        if synchronous.upper() not in ("FULL", "NORMAL", "OFF", "EXTRA"):
            raise ValueError(f"bad synchronous setting {synchronous!r}")
        #: ``FULL``: every COMMIT fsyncs the WAL, so a committed delivery survives a power
        #: loss (with ``NORMAL`` in WAL mode the last commits may roll back). Group commit
        #: makes this one fsync per batch of deliveries.
        self.synchronous = synchronous.upper()

    def connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    #: SQLite has one writer at a time (``BEGIN IMMEDIATE``): rows need no lock of their own.
    for_update = ""
    #: Queue claims need no ``SKIP LOCKED`` either: only one writer runs at a time.
    skip_locked = ""

    def convert_sql(self, sql: str) -> str:
        return sql

    def index_hint(self, index: str) -> str:
        """`` INDEXED BY index`` after a table name: where SQLite's planner would pick the
        primary key's index over a covering one (``store/summaries.py``)."""
        return f" INDEXED BY {index}"

    def in_clause(self, column: str, values) -> tuple[str, list]:
        values = list(values)
        if not values:
            return "1 = 0", []
        return f"{column} IN ({', '.join('?' * len(values))})", values

    def ascii_contains(self, column: str) -> str:
        """True where ``column`` with ASCII letters lowercased (and nothing else changed)
        contains the one parameter (``?``): SQLite's ``lower`` folds ASCII only."""
        return f"instr(lower({column}), ?) > 0"

    def non_ascii(self, column: str) -> str:
        """True where the text ``column`` holds a character outside ASCII."""
        return f"length({column}) <> length(CAST({column} AS BLOB))"

    def search_clause(self, message_alias: str, terms: str) -> tuple[str, list]:
        """Full-text match on the FTS5 table the 003 migration keeps in sync by triggers."""
        query = fts5_query(terms)
        if not query:
            return "1 = 0", []
        return (
            f"{message_alias}.id IN (SELECT message_id FROM message_search "
            "WHERE message_search MATCH ?)",
            [query],
        )

    #: SQLite's ``BEGIN IMMEDIATE`` already serializes migrating processes.
    migration_lock = ()

    def is_constraint_error(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError)

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def is_database_error(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.Error)


class BaseTransaction:
    """What a transaction function sees: ``await txn.execute(sql, params)`` gives rows as dicts
    and sets ``rowcount``; ``in_clause`` and ``search_clause`` write the dialect's SQL;
    ``call_after_commit`` runs a callable once the transaction has committed (never if it fails
    or is retried)."""

    def __init__(self, engine):
        self.engine = engine
        self.rowcount = -1
        self._after_commit: list = []
        #: ``(channel, payload)`` NOTIFYs the engine sends just before COMMIT, all in one
        #: statement (PostgreSQL's change bus queues them here instead of a round trip each).
        self.notifications: list[tuple[str, str]] = []

    async def execute(self, sql: str, params=()) -> list[dict]:
        raise NotImplementedError

    async def execute_values(self, sql: str, params=()) -> list[tuple]:
        """Rows as tuples in the order of the SELECT's columns: for reads of many rows, where
        building a dict per row is what costs."""
        raise NotImplementedError

    async def execute_one(self, sql: str, params=()) -> dict | None:
        rows = await self.execute(sql, params)
        return rows[0] if rows else None

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` where the engine needs rows locked before a read-then-write."""
        return self.engine.for_update

    @property
    def skip_locked(self) -> str:
        """`` FOR UPDATE SKIP LOCKED`` where concurrent claimers of queue rows must pass over
        rows another transaction holds instead of waiting for them (PostgreSQL)."""
        return self.engine.skip_locked

    def in_clause(self, column: str, values) -> tuple[str, list]:
        return self.engine.in_clause(column, values)

    def search_clause(self, message_alias: str, terms: str) -> tuple[str, list]:
        return self.engine.search_clause(message_alias, terms)

    def index_hint(self, index: str) -> str:
        """The engine's way to name the index a join reads ("" where there is none)."""
        return self.engine.index_hint(index)

    def ascii_contains(self, column: str) -> str:
        return self.engine.ascii_contains(column)

    def non_ascii(self, column: str) -> str:
        return self.engine.non_ascii(column)

    def call_after_commit(self, fn, *args):
        self._after_commit.append((fn, args))

    def run_after_commit(self):
        for fn, args in self._after_commit:
            try:
                fn(*args)
            except Exception:
                _log.failure("after-commit callback failed")


class Transaction(BaseTransaction):
    """A transaction on a SQLite connection, run whole in a database thread.

    ``execute`` runs the statement at once on the calling (database) thread, so a transaction
    function never suspends and ``_run_in_thread`` drives it to the end in one step: one thread
    hop per transaction instead of one per statement, and the write lock is held for the time
    the SQL takes, not for a round of reactor wake-ups per statement.
    """

    def __init__(self, engine, conn):
        super().__init__(engine)
        self._conn = conn

    async def execute(self, sql: str, params=()) -> list[dict]:
        rows, self.rowcount = _execute(self._conn, self.engine.convert_sql(sql), tuple(params))
        return rows

    async def execute_values(self, sql: str, params=()) -> list[tuple]:
        cursor = self._conn.cursor()
        cursor.row_factory = None
        try:
            cursor.execute(self.engine.convert_sql(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description else []
            self.rowcount = cursor.rowcount
            return rows
        finally:
            cursor.close()


def _drive(coro):
    """Run a transaction function's coroutine to its end in one step (``execute`` never
    suspends on SQLite) and return its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a SQLite transaction function awaited something other than its transaction")


def _rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except Exception:
        _log.failure("rollback failed")


def _run_in_thread(engine, conn, begin, fn, args):
    """Run ``fn(txn, *args)`` as one transaction on ``conn``; called in a database thread."""
    conn.execute(begin)
    txn = Transaction(engine, conn)
    try:
        result = _drive(fn(txn, *args))
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")
    return result, txn


def _run_group_in_thread(engine, conn, items):
    """Run the ``GroupItem`` functions in one write transaction on ``conn`` (a database
    thread), each in a savepoint of its own when there are several; return their
    ``Outcome``. A function's own failure rolls back its work only; a database error other
    than a constraint violation, or a failed COMMIT, rolls back everything and is raised."""
    conn.execute("BEGIN IMMEDIATE")
    outcomes = []
    savepoints = len(items) > 1
    try:
        for item in items:
            if savepoints:
                conn.execute("SAVEPOINT grouped")
            txn = Transaction(engine, conn)
            try:
                result = _drive(item.fn(txn, *item.args))
            except Exception as e:
                if engine.is_database_error(e) and not engine.is_constraint_error(e):
                    raise
                if not savepoints:
                    _rollback(conn)
                    return [Outcome(False, e)]
                conn.execute("ROLLBACK TO SAVEPOINT grouped")
                conn.execute("RELEASE SAVEPOINT grouped")
                outcomes.append(Outcome(False, e))
                continue
            if savepoints:
                conn.execute("RELEASE SAVEPOINT grouped")
            outcomes.append(Outcome(True, result, txn))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def _execute(conn, sql, params):
    cursor = conn.execute(sql, params)
    try:
        if not cursor.description:
            return [], cursor.rowcount
        # Plain tuples zipped with the column names: six times cheaper than dict(sqlite3.Row),
        # which a page of 50 message views (48 columns each) feels.
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()], cursor.rowcount
    finally:
        cursor.close()


class SchemaMixin:
    """Migrations for any database object with ``engine`` and ``run(desc, fn, readonly=)``."""

    # -- schema ---------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply the numbered schema files not applied yet; return the versions applied."""
        available = schema_files(self.engine.name)

        async def apply(txn):
            for statement in self.engine.migration_lock:
                await txn.execute(statement)
            await txn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            done = {
                r["version"] for r in await txn.execute("SELECT version FROM schema_migrations")
            }
            applied = []
            for version, name, text in available:
                if version in done:
                    continue
                for statement in split_statements(text):
                    await txn.execute(statement)
                await txn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, _now_ns()),
                )
                applied.append(version)
            return applied

        applied = await self.run("migrate", apply)
        for version in applied:
            _log.info("applied schema version {version}", version=version)
        return applied

    async def schema_current(self) -> bool:
        latest = max(v for v, _, _ in schema_files(self.engine.name))

        async def read(txn):
            row = await txn.execute_one("SELECT MAX(version) AS v FROM schema_migrations")
            return row["v"] if row else None

        return await self.run("schema_current", read, readonly=True) == latest


class Database(SchemaMixin):
    """Runs transaction functions against SQLite, off the reactor thread."""

    def __init__(self, engine, reactor):
        self.engine = engine
        self._reactor = reactor
        self._pool = _Workers(reactor, engine.readers + 1, "haitatsu-db")
        self._writer = None
        self._write_lock = defer.DeferredLock()
        self._readers: list = []
        self._reader_sem = defer.DeferredSemaphore(engine.readers)
        self._started = False
        self.group = GroupCommitter(
            self._run_group, self.run, self._map_error, lock=self._write_lock
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self):
        if not self._started:
            self._pool.start()
            self._started = True
        self._writer = await self._in_thread(self.engine.connect)

    async def close(self):
        # A write transaction in flight keeps the writer connection until it ends: closing a
        # connection another thread is using crashes SQLite.
        await self._write_lock.acquire()
        try:
            conns = [self._writer, *self._readers]
            self._writer, self._readers = None, []
        finally:
            self._write_lock.release()
        for conn in conns:
            if conn is not None:
                await self._in_thread(conn.close)
        if self._started:
            self._started = False
            await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._pool.stop)

    def _in_thread(self, fn, *args):
        if not self._started:
            return defer.fail(StorageUnavailable("database is closed"))
        return self._pool.run(fn, *args)

    # -- transactions ---------------------------------------------------------------------

    async def run(self, desc: str, fn, *args, readonly: bool = False, attempts: int = 3):
        """Run ``fn(txn, *args)`` in one transaction and return its result.

        Constraint violations raise ``Conflict``; other database errors raise
        ``StorageUnavailable`` after ``attempts`` tries of the retryable ones.
        """
        for attempt in range(1, attempts + 1):
            try:
                if readonly:
                    return await self._run_read(fn, args)
                return await self._run_write(fn, args)
            except (Conflict, StorageUnavailable):
                raise
            except Exception as e:
                if self.engine.is_constraint_error(e):
                    raise Conflict(str(e)) from e
                if self.engine.is_retryable(e) and attempt < attempts:
                    _log.warn("retrying {desc} after {error}", desc=desc, error=str(e))
                    continue
                if self.engine.is_database_error(e):
                    _log.error("{desc} failed: {error}", desc=desc, error=str(e))
                    raise StorageUnavailable(f"database: {e}") from e
                raise

    def run_grouped(self, desc: str, fn, *args) -> defer.Deferred:
        """Run ``fn(txn, *args)`` as ``run`` does, possibly sharing one write transaction with
        others queued at the same time (``haitatsu.storage.group``): fire with its result once
        that transaction has committed, or with its own failure."""
        return self.group.run(desc, fn, *args)

    def _map_error(self, error: BaseException) -> BaseException:
        if isinstance(error, (Conflict, StorageUnavailable)):
            return error
        if self.engine.is_constraint_error(error):
            return Conflict(str(error))
        return error

    async def _run_group(self, items):
        """One shared write transaction (the committer holds the write lock)."""
        if self._writer is None:
            raise StorageUnavailable("database is closed")
        return await self._in_thread(_run_group_in_thread, self.engine, self._writer, items)

    async def _run_write(self, fn, args):
        await self._write_lock.acquire()
        try:
            if self._writer is None:
                raise StorageUnavailable("database is closed")
            return await self._transaction(self._writer, "BEGIN IMMEDIATE", fn, args)
        finally:
            self._write_lock.release()

    async def _run_read(self, fn, args):
        await self._reader_sem.acquire()
        try:
            conn = self._readers.pop() if self._readers else None
            if conn is None:
                conn = await self._in_thread(self.engine.connect)
            try:
                result = await self._transaction(conn, "BEGIN", fn, args)
            except BaseException:
                await self._in_thread(conn.close)
                raise
            if self._started:
                self._readers.append(conn)
            else:
                conn.close()
            return result
        finally:
            self._reader_sem.release()

    async def _transaction(self, conn, begin, fn, args):
        """Run the transaction in a database thread and wait for it, even when cancelled.

        A caller may be cancelled while its transaction runs (Klein cancels a request's handler
        when the client disconnects). The thread cannot be stopped, and it goes on using
        ``conn``: so the connection, the write lock and the reader slot stay taken until it
        ends, and only then does ``CancelledError`` go up (after the after-commit callbacks of
        a transaction that committed). Letting go at once handed a connection still in use to
        the next transaction or closed it under the running one, which crashed the process.
        """
        work = _ThreadWork(self._in_thread(_run_in_thread, self.engine, conn, begin, fn, args))
        try:
            result, txn = await work.wait()
        except defer.CancelledError:
            while not work.done:
                try:
                    await work.wait()
                except Exception:  # cancelled again, or the transaction's own failure
                    pass
            if not isinstance(work.outcome, Failure):
                work.outcome[1].run_after_commit()
            raise
        txn.run_after_commit()
        return result


class _Workers:
    """The database's threads: ``run(fn, *args)`` calls ``fn`` in one of ``size`` threads and
    fires with its result (or failure) on the reactor thread.

    Twisted's ``ThreadPool`` does the same with a coordinator, a lock worker and a context
    per call: several times the CPU of the call itself for the short transactions of a
    delivery (a recipient lookup, the filters' read), a few of which every message makes.
    Here a call is one put on a queue, and results that finish while the reactor is busy are
    handed to it together, with one ``callFromThread``.
    """

    def __init__(self, reactor, size: int, name: str):
        self._reactor = reactor
        self._size = max(1, size)
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._done: list = []
        self._handing_over = False

    def start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Let the calls queued so far run, then end the threads (blocking)."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def run(self, fn, *args) -> defer.Deferred:
        d = defer.Deferred()
        self._queue.put((d, fn, args))
        return d

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            d, fn, args = item
            del item
            try:
                outcome = fn(*args)
            except BaseException:
                outcome = Failure()
            with self._lock:
                self._done.append((d, outcome))
                if self._handing_over:
                    continue
                self._handing_over = True
            self._reactor.callFromThread(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._handing_over = False
        for d, outcome in done:
            _fire(d, outcome)


class _ThreadWork:
    """The outcome of a call running in a thread, which any number of waiters can wait for;
    cancelling a waiter leaves the call and the other waiters alone."""

    def __init__(self, running):
        self.done = False
        self.outcome = None
        self._waiters = []
        running.addBoth(self._finish)

    def _finish(self, outcome):
        self.done, self.outcome = True, outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                _fire(waiter, outcome)
        return None  # the waiters report it; the running Deferred ends handled

    def wait(self):
        waiter = defer.Deferred()
        if self.done:
            _fire(waiter, self.outcome)
        else:
            self._waiters.append(waiter)
        return waiter


def _fire(d, outcome):
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


def _now_ns():
    import time

    return time.time_ns()


_SCHEMA_NAME = re.compile(r"^(\d+)_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


def schema_files(dialect: str) -> list[tuple[int, str, str]]:
    """The schema deltas for ``dialect``: ``NNN_name.sql``, or ``NNN_name.<dialect>.sql`` where the
    databases differ (a dialect file replaces the shared one of the same number)."""
    chosen: dict[int, tuple[str, str, bool]] = {}
    folder = resources.files("haitatsu.storage") / "schema"
    for entry in folder.iterdir():
        m = _SCHEMA_NAME.match(entry.name)
        if not m:
            continue
        version, name, suffix = int(m.group(1)), m.group(2), m.group(3)
        if suffix and suffix != dialect:
            continue
        if version in chosen and not suffix:
            continue
        chosen[version] = (name, entry.read_text(encoding="utf-8"), bool(suffix))
    return [(v, chosen[v][0], chosen[v][1]) for v in sorted(chosen)]


def split_statements(text: str) -> list[str]:
    """Split a schema file on semicolons that end a line; comments are dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [s.strip() for s in statements if s.strip()]


_FTS_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def fts5_query(terms: str) -> str:
    """Translate web-search syntax (what PostgreSQL's ``websearch_to_tsquery`` reads) into an
    FTS5 query with the same meaning: words and ``"quoted phrases"`` must all match, ``-word``
    excludes, ``OR`` separates alternatives (binding loosest, as in PostgreSQL). Every term is
    quoted, so FTS5 syntax typed by a user is read as plain words."""
    groups, positive, negative = [], [], []
    for m in _FTS_TOKEN.finditer(terms):
        if m.group(3) is not None:
            word = m.group(3)
            if word.lower() == "or":
                groups.append((positive, negative))
                positive, negative = [], []
                continue
            exclude = word.startswith("-") and len(word) > 1
            text = word[1:] if exclude else word
        else:
            exclude, text = bool(m.group(1)), m.group(2)
        words = re.findall(r"\w+", text)
        if words:
            (negative if exclude else positive).append('"' + " ".join(words) + '"')
    groups.append((positive, negative))
    alternatives = []
    for positive, negative in groups:
        if positive:
            alternatives.append(" ".join([" AND ".join(positive), *("NOT " + n for n in negative)]))
    return " OR ".join(f"({a})" for a in alternatives)
