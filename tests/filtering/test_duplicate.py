"""``duplicate`` through the chain: smtplib against the MX on loopback, on SQLite and on
PostgreSQL (the Message-IDs are shared state, migration 025)."""

from __future__ import annotations

import os

from twisted.trial import unittest

from haitatsu.config.model import FilterSpec
from haitatsu.filtering import FilterConfigError, FilterEnvironment
from haitatsu.filtering.registry import build_chain, builtin_package, discover
from tests.filtering.injector import plugin_directory
from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec
from tests.support import PG_SKIP, make_pg_store

builtin_package()  # haitatsu.filters, from filters/ in a checkout
from haitatsu.filters.duplicate import message_key  # noqa: E402


def with_id(message_id: bytes, message=MESSAGE) -> bytes:
    return message.replace(b"<m1@example.org>", message_id)


class DuplicateMixin:
    async def test_second_copy_is_discarded(self):
        await self.serve(spec("duplicate"))
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(), {})  # 250, stored nothing
        [info] = await self.folder(self.bob)
        self.assertEqual(info.rfc_message_id, "<m1@example.org>")
        # Another Message-ID is another message.
        self.assertEqual(await self.sendmail(message=with_id(b"<m2@example.org>")), {})
        self.assertEqual(len(await self.folder(self.bob)), 2)

    async def test_per_mailbox(self):
        await self.serve(spec("duplicate"))
        self.assertEqual(await self.sendmail(["bob@example.com"]), {})
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        [carol] = await self.folder(self.carol)
        self.assertIn(
            {"name": "duplicate", "stage": "delivery", "action": "discard", "reason": "duplicate"},
            carol.auth_results["filters"],
        )
        # Both have it now: the whole message is dropped with a 250.
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        self.assertEqual(len(await self.folder(self.carol)), 1)

    async def test_file_in_a_folder(self):
        await self.serve(spec("duplicate", action="file", folder="Dupes/Seen"))
        self.assertIsNone(await self.store.get_folder(self.bob.id, "Dupes/Seen"))
        for _ in range(3):
            self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        filed = await self.folder(self.bob, "Dupes/Seen")  # made on first use
        self.assertEqual(len(filed), 2)
        self.assertIn(
            {"name": "duplicate", "stage": "delivery", "action": "continue", "reason": "duplicate"},
            filed[0].auth_results["filters"],
        )

    async def test_without_message_id_nothing_is_a_duplicate(self):
        await self.serve(spec("duplicate"))
        no_id = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
        self.assertEqual(await self.sendmail(message=no_id), {})
        self.assertEqual(await self.sendmail(message=no_id), {})
        self.assertEqual(len(await self.folder(self.bob)), 2)

    async def test_a_refused_delivery_is_retried_not_dropped(self):
        """A later filter tempfails the first attempt after ``duplicate`` saw it: the client
        retries, and the retry is delivered (only the copy after that is a duplicate)."""
        await self.serve(spec("duplicate"), spec("inject"), plugins=plugin_directory(self))
        failing = b"X-Test-Delivery: tempfail\r\n" + MESSAGE
        self.assertEqual(await self.sendmail(message=failing), (451, b"4.7.1 try later"))
        self.assertEqual(await self.folder(self.bob), [])
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)


class SQLiteDuplicateTests(DuplicateMixin, LoopbackMX):
    pass


class PostgresDuplicateTests(DuplicateMixin, LoopbackMX):
    skip = PG_SKIP

    async def setUp(self):
        from tests.smtp.helpers import temp_dir

        self.root = temp_dir(self)
        self.store = await make_pg_store(self, os.path.join(self.root, "store"))
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("carol@example.com")


class DuplicateUnitTests(unittest.SynchronousTestCase):
    def test_message_key(self):
        self.assertEqual(message_key("<a@b>"), message_key("  <a@b> (comment)"))
        self.assertEqual(message_key("<a@b>"), message_key("a@b"))
        self.assertNotEqual(message_key("<a@b>"), message_key("<A@b>"))
        self.assertEqual(message_key("<>"), "")
        self.assertEqual(message_key("   "), "")

    def test_options(self):
        from twisted.internet import task

        from haitatsu.config.model import Config

        environment = FilterEnvironment(None, task.Clock(), None, Config())
        for options, expected in (
            ({"action": "keep"}, "filters[duplicate].action: must be one of discard, file"),
            ({"window_seconds": 0}, "filters[duplicate].window_seconds: must be >= 1"),
            ({"folder": " / "}, "filters[duplicate].folder: must name a folder"),
        ):
            with self.assertRaises(FilterConfigError) as caught:
                build_chain([FilterSpec("duplicate", options=options)], environment, discover())
            self.assertIn(expected, str(caught.exception))
