"""Group commit (``haitatsu/storage/group.py``) on both engines: transactions queued together
share one database transaction, each caller hears its own outcome only after the shared COMMIT,
a function that fails fails alone, and a transaction that fails as a whole commits nothing and
is run again function by function. Plus the crash test: a process killed in the middle of
grouped deliveries leaves every acknowledged message whole and nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.interfaces import Conflict, OverQuota, StorageUnavailable
from tests.support import PG_SKIP, changes_settled, deliver_bytes, make_pg_store, make_store

MESSAGE = b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: grouped\r\n\r\nHello.\r\n"


class Refused(Exception):
    """A function's own failure (like ``OverQuota`` for one delivery)."""


class GroupCommitMixin:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.db = self.store.db

        async def create(txn):
            await txn.execute("CREATE TABLE grouped (v TEXT UNIQUE NOT NULL)")

        await self.db.run("create", create)

    async def values(self):
        async def read(txn):
            return sorted(r["v"] for r in await txn.execute("SELECT v FROM grouped"))

        return await self.db.run("read", read, readonly=True)

    def insert(self, value, fail=None, after_commit=None):
        async def fn(txn):
            await txn.execute("INSERT INTO grouped (v) VALUES (?)", (value,))
            if after_commit is not None:
                txn.call_after_commit(after_commit, value)
            if fail == "refuse":
                raise Refused(value)
            if fail == "sql":
                await txn.execute("SELECT * FROM no_such_table")
            return value

        return fn

    async def run_all(self, specs):
        """Queue every function at once (one reactor turn), so they share transactions."""
        ds = [self.db.run_grouped("t", self.insert(*spec)) for spec in specs]
        return await defer.DeferredList(ds, consumeErrors=True)

    async def test_functions_queued_together_share_a_transaction(self):
        before = len(self.db.group.batch_sizes)
        results = await self.run_all([(f"v{i:02d}",) for i in range(20)])
        self.assertEqual([r for _, r in results], [f"v{i:02d}" for i in range(20)])
        self.assertEqual(await self.values(), [f"v{i:02d}" for i in range(20)])
        sizes = self.db.group.batch_sizes[before:]
        self.assertEqual(sum(sizes), 20)
        self.assertLess(len(sizes), 20)
        self.assertGreater(max(sizes), 1)

    async def test_a_caller_hears_its_result_only_once_it_is_committed(self):
        """When a caller's Deferred fires, its row is visible to any other connection."""

        async def visible(value):
            async def read(txn):
                row = await txn.execute_one("SELECT v FROM grouped WHERE v = ?", (value,))
                return row is not None

            return await self.db.run("check", read, readonly=True)

        checks = [
            self.db.run_grouped("t", self.insert(f"c{i}")).addCallback(
                lambda value: defer.Deferred.fromCoroutine(visible(value))
            )
            for i in range(10)
        ]
        self.assertEqual(await defer.gatherResults(checks), [True] * 10)

    async def test_a_failing_function_fails_alone(self):
        heard = []
        results = await self.run_all(
            [
                ("a", None, heard.append),
                ("b", "refuse", heard.append),
                ("c", None, heard.append),
                ("c", None, heard.append),  # a constraint violation: Conflict, alone
                ("d", None, heard.append),
            ]
        )
        oks = [ok for ok, _ in results]
        self.assertEqual((oks[0], oks[1], oks[4]), (True, False, True))
        results[1][1].trap(Refused)
        # Of the two inserting "c", one commits and the other is a Conflict, alone (which one
        # depends on the engine: PostgreSQL runs a failed batch's functions again concurrently).
        self.assertEqual(sorted(oks[2:4]), [False, True])
        [(_, conflict)] = [results[i] for i in (2, 3) if not oks[i]]
        conflict.trap(Conflict)
        self.assertEqual(await self.values(), ["a", "c", "d"])
        # After-commit callbacks ran for the committed functions only.
        self.assertEqual(sorted(heard), ["a", "c", "d"])

    async def test_a_database_error_fails_the_batch_and_each_runs_alone(self):
        results = await self.run_all([("x",), ("y", "sql"), ("z",)])
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        results[1][1].trap(StorageUnavailable)
        self.assertEqual(await self.values(), ["x", "z"])
        self.flushLoggedErrors()

    async def test_database_gone_fails_every_caller_and_commits_nothing(self):
        ds = [self.db.run_grouped("t", self.insert(f"g{i}")) for i in range(5)]
        await self.store.close()
        results = await defer.DeferredList(ds, consumeErrors=True)
        # The first may have been running already; the others never reached the database.
        failed = [r for ok, r in results if not ok]
        self.assertGreaterEqual(len(failed), 4)
        for failure in failed:
            failure.trap(StorageUnavailable)
        self.flushLoggedErrors()
        reopened = await self.reopen()
        if reopened is not None:

            async def read(txn):
                return [r["v"] for r in await txn.execute("SELECT v FROM grouped")]

            self.assertLessEqual(len(await reopened.db.run("r", read, readonly=True)), 1)

    async def reopen(self):
        return None

    async def test_concurrent_deliveries_are_all_committed(self):
        mailbox = await self.store.create_mailbox("bob@example.com")
        before = len(self.db.group.batch_sizes)
        placed = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(
                    deliver_bytes(self.store, MESSAGE + b"%d\r\n" % i, mailbox.id)
                )
                for i in range(25)
            ]
        )
        uids = sorted(p[0].uid for p in placed)
        self.assertEqual(uids, list(range(1, 26)))
        self.assertGreater(max(self.db.group.batch_sizes[before:]), 1)
        mailbox = await self.store.get_mailbox(mailbox.id)
        self.assertEqual(
            mailbox.used_bytes, sum(len(MESSAGE) + len(b"%d\r\n" % i) for i in range(25))
        )
        folder = await self.store.get_folder(mailbox.id, "INBOX")
        stored = await self.store.get_messages(folder.id, uids)
        self.assertEqual(len(stored), 25)
        for _, info in stored:
            data = await self.store.read_message(info)
            self.assertEqual(hashlib.sha256(data).hexdigest(), info.sha256)

    async def test_over_quota_in_a_batch_refuses_only_those_that_do_not_fit(self):
        size = len(MESSAGE) + 3
        mailbox = await self.store.create_mailbox("bob@example.com", quota_bytes=size * 4)
        heard = []
        self.store.changes.subscribe(mailbox.id, heard.append)
        results = await defer.DeferredList(
            [
                defer.Deferred.fromCoroutine(
                    deliver_bytes(self.store, MESSAGE + b"%d\r\n" % i, mailbox.id)
                )
                for i in range(7)
            ],
            consumeErrors=True,
        )
        self.assertEqual(sum(1 for ok, _ in results if ok), 4)
        for ok, failure in results:
            if not ok:
                failure.trap(OverQuota)
        self.assertEqual((await self.store.get_mailbox(mailbox.id)).used_bytes, size * 4)
        folder = await self.store.get_folder(mailbox.id, "INBOX")
        self.assertEqual(len(await self.store.list_folder_messages(folder.id)), 4)
        await changes_settled(self.store)
        self.assertEqual(sorted(c["uid"] for c in heard if c["type"] == "exists"), [1, 2, 3, 4])


class SQLiteGroupCommitTests(GroupCommitMixin, unittest.TestCase):
    async def make(self):
        self.root = os.path.abspath(self.mktemp())
        return await make_store(self, self.root)

    async def reopen(self):
        return await make_store(self, self.root)


class PostgresGroupCommitTests(GroupCommitMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)

    async def test_notifications_of_a_failed_function_are_never_heard(self):
        mailbox = await self.store.create_mailbox("bob@example.com")
        heard = []
        self.store.changes.subscribe(mailbox.id, heard.append)

        def announcing(value, fail):
            async def fn(txn):
                await self.store.changes.publish_in(txn, mailbox.id, {"type": "t", "v": value})
                if fail:
                    raise Refused(value)
                return value

            return fn

        results = await defer.DeferredList(
            [self.db.run_grouped("n", announcing(v, v == "b")) for v in "abc"],
            consumeErrors=True,
        )
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        results[1][1].trap(Refused)
        await changes_settled(self.store)
        self.assertEqual([c["v"] for c in heard], ["a", "c"])


# -- a process killed in the middle of grouped deliveries ----------------------------------

_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from twisted.internet import defer, reactor
from haitatsu.storage import build_postgres_store, build_sqlite_store
from haitatsu.storage.records import Delivery

root, mailbox_id, dsn = sys.argv[2], sys.argv[3], sys.argv[4]
MESSAGE = b"From: a@example.org\r\nSubject: crash\r\n\r\n" + b"body line\r\n" * 50

async def main():
    if dsn:
        store = build_postgres_store(reactor, dsn, os.path.join(root, "blobs"), 4)
    else:
        store = build_sqlite_store(reactor, os.path.join(root, "haitatsu.db"),
                                   os.path.join(root, "blobs"))
    await store.open()
    spool = os.path.join(root, "spool")
    os.makedirs(spool, exist_ok=True)
    counter = iter(range(10 ** 9))

    async def worker():
        for n in counter:
            path = os.path.join(spool, f"{n}.eml")
            with open(path, "wb") as f:
                f.write(b"X-Seq: %d\r\n" % n + MESSAGE)
            await store.deliver(path, [Delivery(mailbox_id=mailbox_id)], trace_id=f"T{n}",
                                disposable=True)
            os.unlink(path)
            sys.stdout.write(f"ACK T{n}\n")
            sys.stdout.flush()

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(12)])

reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(main()))
reactor.run()
"""


class CrashMixin:
    """A child process delivers with twelve concurrent workers (group commit busy) and prints
    each trace id the moment ``deliver`` returned; it is killed with SIGKILL mid-stream. Then:
    every acknowledged message is there, whole (its blob's SHA-256 is its key), every message
    row's blobs exist, each blob's reference count is the number of messages naming it, and the
    mailbox's ``used_bytes`` is the sum of its placements: nothing half-written is visible."""

    timeout = 120

    async def test_killed_mid_batch(self):
        store, dsn, root = await self.make_for_crash()
        mailbox = await store.create_mailbox("crash@example.com")
        script = os.path.join(tempfile.mkdtemp(prefix="haitatsu-crash-"), "child.py")
        with open(script, "w") as f:
            f.write(_CHILD)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        child = subprocess.Popen(
            [sys.executable, script, repo, root, mailbox.id, dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        acked = await deferToThread(self._read_acks, child, 150)
        os.kill(child.pid, signal.SIGKILL)
        await deferToThread(child.wait)
        child.stdout.close()
        child.stderr.close()
        self.assertGreaterEqual(len(acked), 150, "the child stopped early")

        async def state(txn):
            messages = await txn.execute(
                "SELECT id, trace_id, blob_key, sha256, layout FROM messages"
            )
            blobs = await txn.execute("SELECT blob_key, refcount FROM blobs")
            placements = await txn.execute(
                "SELECT uid, size_bytes FROM mailbox_messages WHERE mailbox_id = ?",
                (mailbox.id,),
            )
            used = await txn.execute_one(
                "SELECT used_bytes FROM mailboxes WHERE id = ?", (mailbox.id,)
            )
            return messages, blobs, placements, used["used_bytes"]

        messages, blobs, placements, used = await store.db.run("state", state, readonly=True)
        stored = {m["trace_id"] for m in messages}
        self.assertLessEqual(acked, stored)
        references = {}
        for m in messages:
            keys = {m["blob_key"]}
            if m["layout"]:
                keys |= {k for k, _, _ in json.loads(m["layout"])}
            for key in keys:
                references[key] = references.get(key, 0) + 1
            data = await store.blobs.read(m["blob_key"])
            self.assertEqual(hashlib.sha256(data).hexdigest(), m["sha256"])
        counts = {b["blob_key"]: b["refcount"] for b in blobs if b["refcount"] > 0}
        self.assertEqual(counts, references)
        self.assertEqual(len(placements), len(messages))
        self.assertEqual(len({p["uid"] for p in placements}), len(placements))
        self.assertEqual(used, sum(p["size_bytes"] for p in placements))

    @staticmethod
    def _read_acks(child, wanted):
        acked = set()
        while len(acked) < wanted:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"child exited: {child.stderr.read()[-2000:]!r}")
            if line.startswith(b"ACK "):
                acked.add(line.split()[1].decode())
        return acked


class SQLiteCrashTests(CrashMixin, unittest.TestCase):
    async def make_for_crash(self):
        root = os.path.abspath(self.mktemp())
        store = await make_store(self, root)
        return store, "", root


class PostgresCrashTests(CrashMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make_for_crash(self):
        root = os.path.abspath(self.mktemp())
        store = await make_pg_store(self, root)
        return store, store.db.engine.dsn, root
