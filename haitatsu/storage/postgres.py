"""The PostgreSQL engine: txpostgres connections on the reactor, no threads.

Store code runs unchanged: ``PostgresDatabase.run(desc, fn)`` gives ``fn`` a transaction whose
``execute`` converts the store's ``?`` placeholders, returns rows as dicts and sets ``rowcount``.
Transactions run at READ COMMITTED. Every delivery updates the same hot rows (the folder's
``uid_next``, the mailbox's ``used_bytes``): at REPEATABLE READ concurrent deliveries to one
mailbox failed each other with serialization errors faster than retries could absorb. At READ
COMMITTED an ``UPDATE ... SET x = x + 1`` waits for the other writer and applies to the row it
committed, quota charges are single conditional UPDATEs, and where the store reads rows and then
writes them it locks them first (``txn.for_update``, ``SELECT ... FOR UPDATE``). Deadlocks are
still retried.

txpostgres does not reconnect. The pool notices a dead connection (the socket closed under it, or
a statement failed with a connection error), throws it away with every idle connection (after a
server restart or failover they are all dead), and opens fresh ones; when opening fails it waits
a growing delay before trying again and answers ``StorageUnavailable`` meanwhile, so the
protocols tempfail and recover by themselves. A transaction is retried only when it is known not
to have committed: it failed before COMMIT was sent, or PostgreSQL reported a serialization
failure or deadlock. A connection lost during COMMIT leaves the outcome unknown and is reported
as ``StorageUnavailable``, never retried.
"""

from __future__ import annotations

import functools
import random

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
from twisted.internet import defer, main
from twisted.internet.task import deferLater
from twisted.logger import Logger
from txpostgres import txpostgres

from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.storage.engine import BaseTransaction, SchemaMixin
from haitatsu.storage.group import GroupCommitter, Outcome, OutcomeUnknown

_log = Logger()

#: SQLSTATEs after which the transaction certainly did not commit and may run again.
_RETRYABLE_STATES = frozenset(
    (psycopg2.errorcodes.SERIALIZATION_FAILURE, psycopg2.errorcodes.DEADLOCK_DETECTED)
)
#: SQLSTATE classes and codes that mean the connection is gone (class 08, admin shutdown, ...).
_DISCONNECT_STATES = frozenset(("57P01", "57P02", "57P03"))


@functools.lru_cache(maxsize=1024)
def convert_placeholders(sql: str) -> str:
    """``?`` to ``%s`` and ``%`` to ``%%`` outside string literals, quoted identifiers and
    comments (psycopg2 always formats, so a literal ``%`` must be doubled)."""
    out = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1].replace("%", "%%"))
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PostgresEngine:
    """What PostgreSQL does differently from SQLite, and how to reach it.

    ``dsn`` is a libpq connection string, URL (``postgresql://user@host/db``) or ``key=value``.
    """

    name = "postgres"
    supports_returning = True
    #: Two nodes starting at once must not both apply a migration: the second waits for the
    #: lock, then (at READ COMMITTED, so it sees what the first committed) finds nothing to do.
    migration_lock = (
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SELECT pg_advisory_xact_lock(7244512003)",
    )

    def __init__(
        self,
        dsn: str,
        max_connections: int = 10,
        connect_timeout: int = 10,
        attempts: int = 5,
        application_name: str = "haitatsu",
    ):
        self.dsn = dsn
        self.max_connections = max(1, max_connections)
        self.attempts = attempts
        given = psycopg2.extensions.parse_dsn(dsn)
        self.connect_kwargs = {}
        if "connect_timeout" not in given:
            self.connect_kwargs["connect_timeout"] = connect_timeout
        if "application_name" not in given:
            self.connect_kwargs["application_name"] = application_name
        if "keepalives" not in given:
            # Notice a peer that vanished without closing (failover, partition) in about a minute.
            self.connect_kwargs.update(
                keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3
            )

    #: Run on every new connection, outside a transaction.
    session_setup = (
        "SET default_transaction_isolation TO 'read committed'",
        "SET TIME ZONE 'UTC'",
    )

    #: Appended to a SELECT whose rows the transaction goes on to change.
    for_update = " FOR UPDATE"

    #: Appended to a queue claim: rows another node is claiming right now are passed over.
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def convert_sql(self, sql: str) -> str:
        return convert_placeholders(sql)

    def index_hint(self, index: str) -> str:
        """PostgreSQL's planner chooses indexes itself."""
        return ""

    def in_clause(self, column: str, values) -> tuple[str, list]:
        values = list(values)
        if not values:
            return "1 = 0", []
        return f"{column} = ANY(?)", [values]

    def ascii_contains(self, column: str) -> str:
        """True where ``column`` with ASCII letters lowercased contains the one parameter:
        ``translate``, not ``lower``, whose folding depends on the database's locale."""
        return f"strpos(translate({column}, '{_UPPER}', '{_UPPER.lower()}'), ?) > 0"

    def non_ascii(self, column: str) -> str:
        """True where the text ``column`` holds a character outside ASCII."""
        return f"octet_length({column}) <> char_length({column})"

    def search_clause(self, message_alias: str, terms: str) -> tuple[str, list]:
        """Match the GIN-indexed ``search_vector`` the 003 migration adds. Addresses are indexed
        with ``@`` and ``.`` as spaces; the query is read the same way."""
        if not terms.strip():
            return "1 = 0", []
        return (
            f"{message_alias}.search_vector @@ "
            "websearch_to_tsquery('english', translate(?, '@.', '  '))",
            [terms],
        )

    def is_constraint_error(self, error: BaseException) -> bool:
        return isinstance(error, psycopg2.IntegrityError)

    def is_retryable(self, error: BaseException) -> bool:
        return getattr(error, "pgcode", None) in _RETRYABLE_STATES

    def is_disconnect(self, error: BaseException) -> bool:
        if isinstance(error, psycopg2.InterfaceError):
            return True
        if not isinstance(error, psycopg2.OperationalError):
            return False
        code = getattr(error, "pgcode", None)
        return code is None or code.startswith("08") or code in _DISCONNECT_STATES

    def is_database_error(self, error: BaseException) -> bool:
        return isinstance(error, psycopg2.Error)


class PostgresConnection(txpostgres.Connection):
    """A txpostgres connection that reports its own death instead of raising in the reactor.

    When the server closes an idle connection, libpq's poll raises inside ``doRead``; the
    reactor would log that as an unhandled error. We turn it into a lost connection and tell
    ``on_lost`` (the pool, or the change bus's listener) so it is replaced.
    """

    on_lost = None

    def doRead(self):
        try:
            return super().doRead()
        except psycopg2.Error as e:
            _log.warn("PostgreSQL connection lost: {error}", error=str(e).strip())
            return main.CONNECTION_LOST

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self)

    def _runInteraction(self, interaction, *args, **kwargs):
        """txpostgres' BEGIN, interaction, COMMIT or ROLLBACK, except that a connection that
        died is not rolled back (the server already did) and a failed rollback is reported as
        ``RollbackFailed`` without logging it as an unhandled error."""
        cursor = self.cursor()
        d = cursor.execute("begin")
        d.addCallback(interaction, *args, **kwargs)
        d.addCallback(lambda result: cursor.execute("commit").addCallback(lambda _: result))

        def rollback(failure):
            if self.is_closed:
                return failure
            r = defer.maybeDeferred(cursor.execute, "rollback")
            r.addCallbacks(
                lambda _: failure, lambda _: defer.fail(txpostgres.RollbackFailed(self, failure))
            )
            return r

        return d.addErrback(rollback)

    @property
    def is_closed(self) -> bool:
        return self._connection is None or bool(self._connection.closed)

    def close(self):
        if self._connection is None:
            return
        self.on_lost = None
        try:
            super().close()
        except Exception:
            _log.failure("closing a PostgreSQL connection failed")


async def connect(engine: PostgresEngine, reactor) -> PostgresConnection:
    """Open one connection with the session settings applied; ``StorageUnavailable`` if not."""
    conn = PostgresConnection(reactor=reactor)
    try:
        await conn.connect(engine.dsn, **engine.connect_kwargs)
        for statement in engine.session_setup:
            await conn.runOperation(statement)
    except psycopg2.Error as e:
        conn.close()
        raise StorageUnavailable(f"database: {str(e).strip()}") from e
    return conn


class ConnectionPool:
    """Up to ``engine.max_connections`` connections, opened when needed, replaced when dead.

    After a failed connect, new connects wait ``delay`` (0.1 s doubling to 5 s) and callers are
    told ``StorageUnavailable`` straight away until then, so a database that is down is not
    hammered and clients get their temporary failure at once.
    """

    MIN_DELAY = 0.1
    MAX_DELAY = 5.0

    def __init__(self, engine: PostgresEngine, reactor):
        self.engine = engine
        self._reactor = reactor
        self._idle: list[PostgresConnection] = []
        self._busy: set[PostgresConnection] = set()
        self._slots = defer.DeferredSemaphore(engine.max_connections)
        self._delay = 0.0
        self._next_connect = 0.0
        self._last_error = ""

    @property
    def size(self) -> int:
        return len(self._idle) + len(self._busy)

    async def acquire(self) -> PostgresConnection:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed:
                    break
                conn.close()
            else:
                conn = await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self._busy.add(conn)
        return conn

    def release(self, conn: PostgresConnection, broken: bool = False):
        self._busy.discard(conn)
        if broken or conn.is_closed:
            conn.close()
            if broken:
                self.discard_idle()
        else:
            self._idle.append(conn)
        self._slots.release()

    def discard_idle(self):
        """Close every idle connection: when one died, the others most likely did too."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connect(self) -> PostgresConnection:
        now = self._reactor.seconds()
        if now < self._next_connect:
            raise StorageUnavailable(
                f"database unreachable ({self._last_error}); next try in "
                f"{self._next_connect - now:.1f}s"
            )
        try:
            conn = await connect(self.engine, self._reactor)
        except StorageUnavailable as e:
            self._delay = min(max(self._delay * 2, self.MIN_DELAY), self.MAX_DELAY)
            self._next_connect = self._reactor.seconds() + self._delay
            self._last_error = str(e)
            _log.warn(
                "cannot connect to PostgreSQL: {error}; next try in {delay}s",
                error=str(e),
                delay=self._delay,
            )
            raise
        if self._delay:
            _log.info("connected to PostgreSQL again")
        self._delay = 0.0
        conn.on_lost = self._lost
        return conn

    def _lost(self, conn):
        if conn in self._idle:
            self._idle.remove(conn)
            conn.close()

    def close(self):
        self.discard_idle()
        for conn in list(self._busy):
            conn.close()


class PostgresTransaction(BaseTransaction):
    """Statements on the cursor of one txpostgres interaction."""

    def __init__(self, engine: PostgresEngine, cursor):
        super().__init__(engine)
        self._cursor = cursor

    async def execute(self, sql: str, params=()) -> list[dict]:
        cursor = self._cursor
        await cursor.execute(self.engine.convert_sql(sql), tuple(params))
        self.rowcount = cursor.rowcount
        if cursor.description is None:
            return []
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def execute_values(self, sql: str, params=()) -> list[tuple]:
        cursor = self._cursor
        await cursor.execute(self.engine.convert_sql(sql), tuple(params))
        self.rowcount = cursor.rowcount
        return cursor.fetchall() if cursor.description is not None else []


async def _send_notifications(cursor, notifications):
    """A transaction's queued NOTIFYs (``(channel, payload)``) in one statement, in order."""
    if not notifications:
        return
    if len(notifications) == 1:
        await cursor.execute("SELECT pg_notify(%s, %s)", notifications[0])
        return
    channels = [channel for channel, _ in notifications]
    payloads = [payload for _, payload in notifications]
    await cursor.execute(
        "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY "
        "AS n(c, p, i) ORDER BY i",
        (channels, payloads),
    )


class _Attempt:
    committing = False


class _ItemFailed(Exception):
    """The only function of a shared transaction raised: roll back, report it to its caller."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


class PostgresDatabase(SchemaMixin):
    """Runs transaction functions on pooled txpostgres connections, with safe retries."""

    def __init__(self, engine: PostgresEngine, reactor):
        self.engine = engine
        self._reactor = reactor
        self._pool = None
        self.group = GroupCommitter(self._run_group, self.run, self._map_error)

    @property
    def pool(self) -> ConnectionPool | None:
        return self._pool

    async def open(self):
        pool = ConnectionPool(self.engine, self._reactor)
        conn = await pool.acquire()
        pool.release(conn)
        self._pool = pool

    async def close(self):
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def run(self, desc: str, fn, *args, readonly: bool = False, attempts: int | None = None):
        """Run ``fn(txn, *args)`` in one transaction and return its result.

        Constraint violations raise ``Conflict``; database errors raise ``StorageUnavailable``
        after retrying those that certainly did not commit (see the module docstring).
        ``readonly`` is accepted for the store's sake; every transaction uses the pool.
        """
        attempts = attempts or self.engine.attempts
        for attempt in range(1, attempts + 1):
            pool = self._pool
            if pool is None:
                raise StorageUnavailable("database is closed")
            conn = await pool.acquire()
            state = _Attempt()
            try:
                txn, result = await conn.runInteraction(self._interaction, fn, args, state)
            except Exception as e:
                error = e
                if isinstance(e, txpostgres.RollbackFailed):
                    error = e.originalFailure.value
                broken = (
                    conn.is_closed
                    or isinstance(e, txpostgres.RollbackFailed)
                    or self.engine.is_disconnect(error)
                )
                pool.release(conn, broken=broken)
                if isinstance(error, (Conflict, StorageUnavailable)):
                    raise error from None
                if self.engine.is_constraint_error(error):
                    raise Conflict(str(error).strip()) from error
                retry = self.engine.is_retryable(error) or (broken and not state.committing)
                if retry and attempt < attempts:
                    delay = self._retry_delay(attempt, broken)
                    _log.warn(
                        "retrying {desc} (attempt {attempt}) in {delay:.3f}s after {error}",
                        desc=desc,
                        attempt=attempt + 1,
                        delay=delay,
                        error=str(error).strip(),
                    )
                    if delay:
                        await deferLater(self._reactor, delay, lambda: None)
                    continue
                if broken or self.engine.is_database_error(error):
                    outcome = " (commit outcome unknown)" if state.committing and broken else ""
                    _log.error(
                        "{desc} failed{outcome}: {error}",
                        desc=desc,
                        outcome=outcome,
                        error=str(error).strip(),
                    )
                    raise StorageUnavailable(f"database{outcome}: {str(error).strip()}") from error
                raise error from None
            pool.release(conn)
            txn.run_after_commit()
            return result

    def run_grouped(self, desc: str, fn, *args) -> defer.Deferred:
        """Run ``fn(txn, *args)`` as ``run`` does, possibly sharing one transaction (one
        connection, one COMMIT) with others queued at the same time
        (``haitatsu.storage.group``)."""
        return self.group.run(desc, fn, *args)

    def _map_error(self, error: BaseException) -> BaseException:
        if isinstance(error, (Conflict, StorageUnavailable)):
            return error
        if self.engine.is_constraint_error(error):
            return Conflict(str(error).strip())
        return error

    async def _run_group(self, items):
        """One attempt at a shared transaction. Raises when it failed as a whole (the
        committer then runs each item alone, with ``run``'s retries), ``OutcomeUnknown`` when
        the connection died during COMMIT."""
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("database is closed")
        conn = await pool.acquire()
        state = _Attempt()
        try:
            outcomes = await conn.runInteraction(self._group_interaction, items, state)
        except Exception as e:
            error = e
            if isinstance(e, txpostgres.RollbackFailed):
                error = e.originalFailure.value
            broken = (
                conn.is_closed
                or isinstance(e, txpostgres.RollbackFailed)
                or self.engine.is_disconnect(error)
            )
            pool.release(conn, broken=broken)
            if isinstance(error, _ItemFailed):
                # The transaction held that one function only and was rolled back.
                return [Outcome(False, error.error)]
            if broken and state.committing:
                _log.error(
                    "a shared transaction of {count} failed (commit outcome unknown): {error}",
                    count=len(items),
                    error=str(error).strip(),
                )
                raise OutcomeUnknown(
                    f"database (commit outcome unknown): {str(error).strip()}"
                ) from error
            raise error from None
        pool.release(conn)
        return outcomes

    def _group_interaction(self, cursor, items, state):
        """The items one after the other in one transaction, without savepoints (each would
        cost two more round trips per delivery): when one of several fails, the whole
        transaction is rolled back and the committer runs each alone (``run``), so each
        caller still gets the outcome of its own work."""
        engine = self.engine

        async def body():
            outcomes = []
            notifications = []
            for item in items:
                txn = PostgresTransaction(engine, cursor)
                try:
                    result = await item.fn(txn, *item.args)
                except Exception as e:
                    if len(items) == 1 and not (
                        engine.is_database_error(e) and not engine.is_constraint_error(e)
                    ):
                        # runInteraction rolls the transaction back; the item failed alone.
                        raise _ItemFailed(e) from e
                    raise
                notifications += txn.notifications
                outcomes.append(Outcome(True, result, txn))
            await _send_notifications(cursor, notifications)
            state.committing = True
            return outcomes

        return defer.Deferred.fromCoroutine(body())

    def _retry_delay(self, attempt: int, broken: bool) -> float:
        """A dead connection is replaced at once; contention backs off with jitter."""
        if broken and attempt == 1:
            return 0.0
        return 0.02 * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    def _interaction(self, cursor, fn, args, state):
        txn = PostgresTransaction(self.engine, cursor)

        async def body():
            result = await fn(txn, *args)
            await _send_notifications(cursor, txn.notifications)
            state.committing = True
            return txn, result

        return defer.Deferred.fromCoroutine(body())
