"""Schema 027 on a database that has data: the outbound tables keep every row (SQLite rebuilds
them to make ``outbound_jobs.message_id`` nullable), their foreign keys still hold, and the
vanished UIDs written before the upgrade count from it."""

from __future__ import annotations

import os
import secrets
import time

from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.interfaces import Conflict
from haitatsu.storage import engine as engine_module
from haitatsu.storage.engine import Database, SQLiteEngine
from tests.support import PG_SKIP, _drop_database, _pg_admin, pg_dsn_for

VERSION = 27

SEED = [
    "INSERT INTO mailboxes (id, primary_address, address_lower, created_at, updated_at) "
    "VALUES ('mb', 'a@example.com', 'a@example.com', 1, 1)",
    "INSERT INTO folders (id, mailbox_id, name, uid_validity, created_at, updated_at) "
    "VALUES ('f', 'mb', 'INBOX', 1, 1, 1)",
    "INSERT INTO expunged_uids (folder_id, uid, modseq) VALUES ('f', 7, 3)",
    "INSERT INTO blobs (blob_key, size_bytes, refcount, created_at) VALUES ('b', 1, 1, 1)",
    "INSERT INTO messages (id, blob_key, sha256, size_bytes, created_at, updated_at) "
    "VALUES ('m', 'b', 'x', 1, 1, 1)",
    "INSERT INTO outbound_jobs (id, message_id, mailbox_id, mail_from, status, next_attempt_at, "
    "created_at, updated_at, dsn_message_id) VALUES ('j', 'm', 'mb', 'bounces+m@example.com', "
    "'sent', 5, 1, 2, 'dsn')",
    "INSERT INTO outbound_recipients (id, job_id, rcpt, status, code, updated_at) "
    "VALUES ('r', 'j', 'bob@remote.test', 'sent', 250, 2)",
    "INSERT INTO outbound_attempts (id, job_id, attempt, node, result, started_at, finished_at) "
    "VALUES ('a', 'j', 1, 'node-1', '{}', 1, 2)",
]


class Migration027Mixin:
    async def database(self):
        raise NotImplementedError

    async def test_outbound_rows_survive_and_keys_hold(self):
        every = engine_module.schema_files
        self.patch(engine_module, "schema_files", lambda d: [f for f in every(d) if f[0] < VERSION])
        db = await self.database()
        await db.migrate()

        async def seed(txn):
            for sql in SEED:
                await txn.execute(sql)

        await db.run("seed", seed)
        self.patch(engine_module, "schema_files", every)
        before = time.time_ns()
        self.assertEqual((await db.migrate())[0], VERSION)

        async def read(txn):
            job = await txn.execute_one("SELECT * FROM outbound_jobs WHERE id = 'j'")
            rcpt = await txn.execute_one("SELECT * FROM outbound_recipients WHERE job_id = 'j'")
            attempt = await txn.execute_one("SELECT * FROM outbound_attempts WHERE job_id = 'j'")
            vanished = await txn.execute_one("SELECT * FROM expunged_uids WHERE folder_id = 'f'")
            folder = await txn.execute_one("SELECT vanished_pruned_modseq FROM folders")
            return job, rcpt, attempt, vanished, folder

        job, rcpt, attempt, vanished, folder = await db.run("read", read, readonly=True)
        self.assertEqual(
            (job["message_id"], job["status"], job["next_attempt_at"], job["dsn_message_id"]),
            ("m", "sent", 5, "dsn"),
        )
        self.assertEqual(
            (rcpt["rcpt"], rcpt["status"], rcpt["code"]), ("bob@remote.test", "sent", 250)
        )
        self.assertEqual((attempt["node"], attempt["finished_at"]), ("node-1", 2))
        self.assertGreaterEqual(vanished["expunged_at"], before - 2 * 10**9)
        self.assertEqual(folder["vanished_pruned_modseq"], 0)

        async def bogus_job(txn):
            await txn.execute(
                "INSERT INTO outbound_jobs (id, message_id, mailbox_id, mail_from, "
                "next_attempt_at, created_at, updated_at) VALUES ('x', 'nope', 'mb', 'f', 1, 1, 1)"
            )

        with self.assertRaises(Conflict):  # the reference to messages still holds
            await db.run("bogus", bogus_job)

        async def orphan_recipient(txn):
            await txn.execute(
                "INSERT INTO outbound_recipients (id, job_id, rcpt, updated_at) "
                "VALUES ('r2', 'nope', 'x@y', 1)"
            )

        with self.assertRaises(Conflict):  # and so does the recipients' reference to jobs
            await db.run("orphan", orphan_recipient)

        async def purge(txn):
            await txn.execute("UPDATE outbound_jobs SET message_id = NULL WHERE id = 'j'")
            await txn.execute("DELETE FROM messages WHERE id = 'm'")
            kept = await txn.execute_one("SELECT COUNT(*) AS n FROM outbound_recipients")
            await txn.execute("DELETE FROM outbound_jobs WHERE id = 'j'")
            left = await txn.execute_one(
                "SELECT (SELECT COUNT(*) FROM outbound_recipients) AS r, "
                "(SELECT COUNT(*) FROM outbound_attempts) AS a"
            )
            return kept["n"], left["r"], left["a"]

        # NULL allowed now; deleting a job still cascades to its rows.
        self.assertEqual(await db.run("purge", purge), (1, 0, 0))


class SQLiteMigration027Tests(Migration027Mixin, unittest.TestCase):
    async def database(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "test.db")
        db = Database(SQLiteEngine(path), reactor)
        await db.open()
        self.addCleanup(db.close)
        return db

    async def test_indexes_are_back_after_the_rebuild(self):
        db = await self.database()
        await db.migrate()

        async def names(txn):
            rows = await txn.execute(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE 'outbound%'"
            )
            return {r["name"]: r["sql"] or "" for r in rows}

        found = await db.run("names", names, readonly=True)
        for index in (
            "outbound_jobs_due",
            "outbound_jobs_mailbox",
            "outbound_jobs_message",
            "outbound_attempts_job",
        ):
            self.assertIn(index, found)
        self.assertFalse([name for name in found if name.endswith("_new")])
        self.assertNotIn("_new", found["outbound_recipients"] + found["outbound_attempts"])


class PostgresMigration027Tests(Migration027Mixin, unittest.TestCase):
    skip = PG_SKIP
    timeout = 120

    async def database(self):
        from haitatsu.storage.postgres import PostgresDatabase, PostgresEngine

        name = f"haitatsu_t_{os.getpid()}_m027_{secrets.token_hex(4)}"
        admin = _pg_admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        self.addCleanup(_drop_database, name)
        db = PostgresDatabase(PostgresEngine(pg_dsn_for(name), max_connections=1), reactor)
        await db.open()
        self.addCleanup(db.close)
        return db
