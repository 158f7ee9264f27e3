"""Shared test fixtures: real stores on temporary storage, cleaned up after each test."""

from __future__ import annotations

import os
import secrets
import tempfile
import unittest

from twisted.internet import defer, reactor

from haitatsu.storage import open_sqlite_store


async def make_store(testcase, root: str | None = None):
    """A real ``MailStore`` on a temporary SQLite file and blob directory.

    The store is closed when the test ends. ``root`` defaults to a fresh directory under the
    test's temporary path.
    """
    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    store = await open_sqlite_store(
        reactor, os.path.join(root, "haitatsu.db"), os.path.join(root, "blobs")
    )
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


async def deliver_bytes(
    store,
    data: bytes,
    mailbox_id: str,
    folder: str = "INBOX",
    flags=(),
    testcase=None,
    trace_id: str = "TRACE",
):
    """Deliver ``data`` to one mailbox folder through the store's real delivery path."""
    from haitatsu.storage.records import Delivery

    fd, path = tempfile.mkstemp(suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        placed = await store.deliver(
            path,
            [Delivery(mailbox_id=mailbox_id, folder=folder, flags=tuple(flags))],
            trace_id=trace_id,
        )
    finally:
        os.unlink(path)
    return placed


# -- PostgreSQL -------------------------------------------------------------------------------

#: Why the PostgreSQL tests are skipped, or None when ``HAITATSU_TEST_POSTGRES_DSN`` is set.
PG_SKIP = (
    None
    if os.environ.get("HAITATSU_TEST_POSTGRES_DSN")
    else "HAITATSU_TEST_POSTGRES_DSN is not set: PostgreSQL tests skipped"
)

_PG_PREFIX = "haitatsu_t_"
_pg_template: str | None = None


def _pg_admin():
    """An autocommit psycopg2 connection to the configured (shared) database, for CREATE and
    DROP DATABASE and pg_terminate_backend only: tests never touch tables there."""
    import psycopg2

    conn = psycopg2.connect(os.environ["HAITATSU_TEST_POSTGRES_DSN"], connect_timeout=10)
    conn.autocommit = True
    return conn


def pg_dsn_for(dbname: str) -> str:
    from psycopg2.extensions import make_dsn, parse_dsn

    params = parse_dsn(os.environ["HAITATSU_TEST_POSTGRES_DSN"])
    params["dbname"] = dbname
    return make_dsn(**params)


def _drop_stale_databases(admin):
    """Databases of test processes that died before cleaning up (same host, pid gone)."""
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (_PG_PREFIX + "%",))
        for (name,) in cur.fetchall():
            try:
                pid = int(name[len(_PG_PREFIX) :].split("_")[0])
            except ValueError:
                continue
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_database(name: str):
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


async def _migrated_template() -> str:
    """One migrated database per test process; each test copies it (CREATE DATABASE ...
    TEMPLATE), which is much faster than migrating every time."""
    global _pg_template
    if _pg_template is not None:
        return _pg_template
    import atexit

    from haitatsu.storage.postgres import PostgresDatabase, PostgresEngine

    name = f"{_PG_PREFIX}{os.getpid()}_template_{secrets.token_hex(4)}"
    admin = _pg_admin()
    try:
        _drop_stale_databases(admin)
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    atexit.register(_drop_database, name)
    db = PostgresDatabase(PostgresEngine(pg_dsn_for(name), max_connections=1), reactor)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()
    _pg_template = name
    return name


async def make_pg_database(testcase) -> str:
    """A fresh, migrated PostgreSQL database of this test's own; its DSN. Dropped (with any
    connections still open to it) when the test ends."""
    if PG_SKIP:
        raise unittest.SkipTest(PG_SKIP)
    template = await _migrated_template()
    name = f"{_PG_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        admin.close()
    testcase.addCleanup(_drop_database, name)
    return pg_dsn_for(name)


def pg_terminate(dsn: str) -> int:
    """Kill every connection to the database ``dsn`` names (from an admin connection); return
    how many were killed."""
    from psycopg2.extensions import parse_dsn

    dbname = parse_dsn(dsn)["dbname"]
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            return len(cur.fetchall())
    finally:
        admin.close()


def pg_allow_connections(dsn: str, allowed: bool):
    """Refuse (or allow again) new connections to the database ``dsn`` names: an outage that
    ``pg_terminate`` alone would not make, since the engine reconnects at once."""
    from psycopg2.extensions import parse_dsn

    dbname = parse_dsn(dsn)["dbname"]
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        admin.close()


async def make_pg_store(testcase, root: str | None = None, max_connections: int = 4):
    """A real ``MailStore`` on a fresh PostgreSQL database (see ``make_pg_database``), the
    LISTEN/NOTIFY change bus and a temporary blob directory; closed when the test ends.
    ``store.db.engine.dsn`` names the database (for ``pg_terminate``)."""
    from haitatsu.storage import build_postgres_store

    dsn = await make_pg_database(testcase)
    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    store = build_postgres_store(reactor, dsn, os.path.join(root, "blobs"), max_connections)
    await store.open()
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


async def changes_settled(store, timeout: float = 5.0):
    """Wait until every change committed so far has reached this node's subscribers.

    A marker is published through the store's bus and awaited: PostgreSQL delivers
    notifications in commit order, so once the marker is heard everything before it was too
    (the in-process bus delivers synchronously, so this returns at once there).
    """
    marker = "settle-" + secrets.token_hex(8)
    heard = defer.Deferred()
    unsubscribe = store.changes.subscribe(
        marker, lambda change: heard.called or heard.callback(None)
    )
    try:
        store.changes.publish(marker, {"type": "settle"})
        heard.addTimeout(timeout, reactor)
        await heard
    finally:
        unsubscribe()
