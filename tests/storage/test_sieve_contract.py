"""Sieve scripts and vacation responses in the store, on SQLite and on PostgreSQL + S3."""

from __future__ import annotations

import os
import tempfile

from twisted.trial import unittest

from haitatsu.interfaces import Conflict
from haitatsu.storage.store import NoSuchScript, ScriptIsActive
from tests.support import PG_SKIP, make_pg_store, make_store

S = 10**9


class SieveContractMixin:
    async def make(self):
        raise NotImplementedError

    async def mailbox(self, store, address="bob@example.com"):
        return await store.create_mailbox(address)

    async def test_scripts_lifecycle(self):
        store = await self.make()
        box = await self.mailbox(store)
        other = await self.mailbox(store, "carol@example.com")
        self.assertEqual(await store.list_sieve_scripts(box.id), [])
        self.assertIsNone(await store.active_sieve_script(box.id))
        one, created = await store.put_sieve_script(box.id, "one", "keep;")
        self.assertTrue(created)
        self.assertFalse(one.active)
        again, created = await store.put_sieve_script(box.id, "one", "discard;")
        self.assertFalse(created)
        self.assertEqual((again.id, again.content), (one.id, "discard;"))
        two, _ = await store.put_sieve_script(box.id, "two", "stop;", activate=True)
        self.assertTrue(two.active)
        await store.put_sieve_script(other.id, "one", "keep;", activate=True)
        self.assertEqual((await store.active_sieve_script(box.id)).name, "two")
        # Activating another deactivates the first; one active script per mailbox.
        await store.activate_sieve_script(box.id, "one")
        names = [(s.name, s.active) for s in await store.list_sieve_scripts(box.id)]
        self.assertEqual(names, [("one", True), ("two", False)])
        self.assertEqual((await store.active_sieve_script(other.id)).name, "one")
        # Replacing the active script keeps it active.
        replaced, _ = await store.put_sieve_script(box.id, "one", "keep;")
        self.assertTrue(replaced.active)
        with self.assertRaises(ScriptIsActive):
            await store.delete_sieve_script(box.id, "one")
        with self.assertRaises(NoSuchScript):
            await store.delete_sieve_script(box.id, "nope")
        with self.assertRaises(NoSuchScript):
            await store.activate_sieve_script(box.id, "nope")
        with self.assertRaises(Conflict):
            await store.rename_sieve_script(box.id, "two", "one")
        await store.rename_sieve_script(box.id, "two", "three")
        self.assertIsNotNone(await store.get_sieve_script(box.id, "three"))
        self.assertIsNone(await store.get_sieve_script(box.id, "two"))
        self.assertEqual(await store.sieve_space_used(box.id), (2, len("keep;stop;")))
        self.assertIsNone(await store.activate_sieve_script(box.id, ""))
        self.assertIsNone(await store.active_sieve_script(box.id))
        await store.delete_sieve_script(box.id, "one")
        self.assertEqual([s.name for s in await store.list_sieve_scripts(box.id)], ["three"])

    async def test_vacation_responses(self):
        store = await self.make()
        box = await self.mailbox(store)
        t0 = 1_700_000_000 * S
        week = 7 * 86400 * S
        respond = store.vacation_should_respond
        self.assertTrue(await respond(box.id, "h", "Alice@example.org", t0, week))
        self.assertFalse(await respond(box.id, "h", "alice@example.org", t0 + 10 * S, week))
        self.assertTrue(await respond(box.id, "other", "alice@example.org", t0 + 10 * S, week))
        self.assertTrue(await respond(box.id, "h", "dave@example.org", t0 + 10 * S, week))
        self.assertTrue(await respond(box.id, "h", "alice@example.org", t0 + week + S, week))
        self.assertFalse(await respond(box.id, "h", "alice@example.org", t0 + week + 2 * S, week))
        self.assertEqual(await store.prune_vacation_responses(t0 + week + 20 * S), 2)

    async def test_vacation_setting(self):
        from haitatsu.storage.store.sieve import VacationSetting

        store = await self.make()
        box = await self.mailbox(store)
        self.assertIsNone(await store.get_vacation_setting(box.id))
        stored = await store.put_vacation_setting(
            VacationSetting(box.id, True, "Away", "Back soon", 3, "", ("b@example.com",), 5, None)
        )
        self.assertEqual(
            (stored.enabled, stored.subject, stored.days, stored.addresses, stored.starts_at),
            (True, "Away", 3, ("b@example.com",), 5),
        )
        replaced = await store.put_vacation_setting(VacationSetting(box.id, False, body="x"))
        self.assertEqual((replaced.enabled, replaced.body, replaced.starts_at), (False, "x", None))
        self.assertEqual(await store.get_vacation_setting(box.id), replaced)
        self.assertTrue(await store.delete_vacation_setting(box.id))
        self.assertFalse(await store.delete_vacation_setting(box.id))

    async def test_queue_generated(self):
        store = await self.make()
        box = await self.mailbox(store)
        fd, path = tempfile.mkstemp(suffix=".eml")
        with os.fdopen(fd, "wb") as f:
            f.write(b"From: bob@example.com\r\nTo: x@example.net\r\nSubject: hi\r\n\r\nhi\r\n")
        self.addCleanup(os.unlink, path)
        job_id = await store.queue_generated(path, box.id, None, ["x@example.net"], "T1")
        job = await store.get_outbound_job(job_id)
        self.assertEqual([r.rcpt for r in job.recipients], ["x@example.net"])
        self.assertTrue(job.mail_from.startswith("bounces+"))
        self.assertTrue(job.mail_from.endswith("@example.com"))
        self.assertEqual(job.mailbox_id, box.id)
        null = await store.queue_generated(path, box.id, "", ["y@example.net"], "T2")
        self.assertEqual((await store.get_outbound_job(null)).mail_from, "")
        # Nothing is filed and nothing charged.
        self.assertEqual((await store.get_mailbox(box.id)).used_bytes, 0)


class SQLiteSieveTests(SieveContractMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)


class PostgresSieveTests(SieveContractMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)
