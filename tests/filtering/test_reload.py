"""Reloads rebuild the chain: a plugin module dropped into the plugin directory runs after a
reload (seen by smtplib through the MX on loopback); bad filter config refuses the reload and
the running chain stays. Real pkl, real reactor."""

from __future__ import annotations

import json
import os
import smtplib

from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.watcher import ConfigWatcher, ReloadError
from haitatsu.filtering.registry import Filtering
from haitatsu.smtp import InboundSMTPFactory
from tests.config.test_loader import ConfigFileMixin
from tests.filtering.test_plugins import write_plugin
from tests.smtp.helpers import temp_dir
from tests.support import make_store

MESSAGE = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello\r\n"

REJECTING = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from haitatsu.filtering import IFilter, IFilterFactory, Options, Stage, reject


@implementer(IFilter)
class Refuse:
    name = "stamp"
    stages = (Stage.DATA,)

    def check(self, stage, context):
        return reject("version two says no", reason="v2")


@implementer(IPlugin, IFilterFactory)
class Factory:
    name = "stamp"
    description = "refuses everything"

    def build(self, options, environment):
        Options(self.name, options).raw("text")
        return Refuse()


factory = Factory()
"""


def config_text(plugin_dir: str, filters: str) -> str:
    return f"""
server {{ public_hostname = "mx.reload.test" }}
smtp {{ inbound_addr = "127.0.0.1:12525" }}
plugins {{ directory = {json.dumps(plugin_dir)} }}
filters = new Listing {{
{filters}
}}
"""


class ReloadTests(ConfigFileMixin, unittest.TestCase):
    timeout = 60

    async def setUp(self):
        root = temp_dir(self)
        self.plugins = os.path.join(root, "plugins")
        os.makedirs(self.plugins, mode=0o755)
        self.path = self.write_config(config_text(self.plugins, '  new { name = "sender_rules" }'))
        config = load_config(self.path)
        self.store = await make_store(self, os.path.join(root, "store"))
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.filtering = Filtering(self.store, reactor, config)
        self.watcher = ConfigWatcher(self.path, reactor, config, handle_sighup=False)
        self.watcher.add_reload_check(self.filtering.prepare_reload)
        factory = InboundSMTPFactory(
            lambda: self.watcher.current,
            self.store,
            reactor,
            os.path.join(root, "spool"),
            chain=self.filtering.get_chain,
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def rewrite(self, filters: str):
        with open(self.path, "w") as f:
            f.write(config_text(self.plugins, filters))

    def send(self):
        """In a thread: one message with smtplib; the refusal, or None when accepted."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            try:
                client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error
        return None

    async def latest(self) -> bytes:
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        [(_, info)] = await self.store.get_messages(folder.id, [rows[-1].uid])
        return await self.store.read_message(info)

    async def test_a_new_plugin_runs_after_a_reload(self):
        self.assertEqual(self.filtering.current.names, ["sender_rules"])
        self.assertIsNone(await threads.deferToThread(self.send))
        self.assertNotIn(b"X-Stamp", await self.latest())

        write_plugin(self.plugins, "stamp_plugin")
        self.rewrite('  new { name = "sender_rules" }\n  new { name = "stamp" text = "reloaded" }')
        await self.watcher.reload()
        self.assertEqual(self.filtering.current.names, ["sender_rules", "stamp"])
        self.assertIsNone(await threads.deferToThread(self.send))
        raw = await self.latest()
        self.assertIn(b"\r\nX-Stamp: reloaded\r\n", raw)
        self.assertIn(b"Authentication-Results: mx.reload.test; none\r\n", raw)

        # A bad option refuses the reload, naming it; the running chain stays.
        running = self.filtering.current
        self.rewrite('  new { name = "stamp" text = "x" colour = "red" }')
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn("filters[stamp]: unknown option colour", str(caught.exception))
        self.assertIs(self.filtering.current, running)
        # So does an unknown filter.
        self.rewrite('  new { name = "stmap" }')
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn("no filter called 'stmap'", str(caught.exception))
        self.assertIs(self.filtering.current, running)
        self.assertIsNone(await threads.deferToThread(self.send))
        self.assertIn(b"X-Stamp: reloaded", await self.latest())

        # A changed module is imported again at the next reload.
        self.rewrite('  new { name = "stamp" text = "x" }')
        with open(os.path.join(self.plugins, "stamp_plugin.py"), "w") as f:
            f.write(REJECTING)
        await self.watcher.reload()
        self.assertEqual(
            await threads.deferToThread(self.send), (550, b"5.7.1 version two says no")
        )

    async def test_a_module_that_fails_to_import_refuses_the_reload(self):
        with open(os.path.join(self.plugins, "broken.py"), "w") as f:
            f.write("raise RuntimeError('half-written plugin')\n")
        running = self.filtering.current
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn(
            "broken.py failed to import: RuntimeError: half-written plugin", str(caught.exception)
        )
        self.assertIs(self.filtering.current, running)
