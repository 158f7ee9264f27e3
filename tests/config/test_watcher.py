"""Hot reload with the real reactor, the real pkl binary and real inotify."""

from __future__ import annotations

import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.model import ConfigError
from haitatsu.config.watcher import ConfigWatcher, ReloadError
from tests.config.test_loader import ConfigFileMixin

BASE = """
server {{ api_addr = "127.0.0.1:18080" }}
smtp {{ inbound_addr = "127.0.0.1:12525" }}
imap {{ addr = "{imap}" }}
tls {{ mode = "{tls}" }}
api {{ service_token = "{token}" }}
limits {{ max_message_size_bytes = {size} }}
"""


def config_text(size=1000, imap="127.0.0.1:11143", tls="off", token="t") -> str:
    return BASE.format(size=size, imap=imap, tls=tls, token=token)


class WatcherTestCase(ConfigFileMixin, unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.path = self.write_config(config_text())
        self.calls = []
        self.watcher = ConfigWatcher(self.path, reactor, load_config(self.path))
        self.watcher.add_listener(lambda old, new: self.calls.append((old, new)))
        self.events = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event):
        if event.get("log_namespace", "").startswith("haitatsu.config.watcher"):
            self.events.append(event)

    def start(self):
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def rewrite(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    async def wait_for(self, predicate, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"condition not met within {seconds} s")
            await deferLater(reactor, 0.05, lambda: None)

    async def settle(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    def reload_events(self) -> list:
        return [e for e in self.events if "config reload" in e.get("log_format", "")]


class ReloadTests(WatcherTestCase):
    async def test_reload_applies_changed_limit(self):
        """A changed limit is live after reload() and listeners see old and new."""
        old = self.watcher.current
        self.rewrite(config_text(size=2000, token="new-token"))
        new = await self.watcher.reload()
        self.assertEqual(new.max_message_size, 2000)
        self.assertIs(self.watcher.current, new)
        self.assertEqual(self.watcher.current.api.service_token, "new-token")
        self.assertEqual(self.calls, [(old, new)])

    async def test_retention_is_hot(self):
        """The retention periods change on reload; housekeeping reads them at each run."""
        self.rewrite(config_text() + "retention { trash_days = 2; deleted_days = 3 }\n")
        new = await self.watcher.reload()
        self.assertEqual((new.retention.trash_days, new.retention.deleted_days), (2, 3))
        self.assertIs(self.watcher.current, new)
        self.rewrite(config_text() + "retention { trash_days = 0 }\n")
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn("retention.trash_days: must be > 0", str(caught.exception))
        self.assertIs(self.watcher.current, new)

    async def test_restart_only_change_refused(self):
        """Changing restart-only keys is refused with the key list; nothing changes."""
        old = self.watcher.current
        self.rewrite(config_text(size=2000, imap="127.0.0.1:11144", tls="storage"))
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertEqual(str(caught.exception), "reload requires restart: [imap.addr tls.mode]")
        self.assertIs(self.watcher.current, old)
        self.assertEqual(self.calls, [])

    async def test_broken_file_keeps_old_config(self):
        """A file that fails to evaluate is refused with the file name; the old config stays."""
        old = self.watcher.current
        self.rewrite("limits { max_message_size_bytes = \n")
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn(self.path, str(caught.exception))
        self.assertIs(self.watcher.current, old)

    async def test_invalid_value_keeps_old_config(self):
        """A validation error is refused naming the key; the old config stays."""
        old = self.watcher.current
        self.rewrite(config_text(size=-1))
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertIn("limits.max_message_size_bytes: must be >= 0", str(caught.exception))
        self.assertIs(self.watcher.current, old)

    async def test_unchanged_file_calls_no_listener(self):
        current = self.watcher.current
        self.assertIs(await self.watcher.reload(), current)
        self.assertEqual(self.calls, [])

    async def test_concurrent_reloads_are_serialized(self):
        """Two overlapping reloads run one after the other: the second sees the first's result."""
        self.rewrite(config_text(size=3000))
        first, second = self.watcher.reload(), self.watcher.reload()
        a = await first
        b = await second
        self.assertIs(a, b)
        self.assertEqual(len(self.calls), 1)

    async def test_listener_failure_does_not_undo_reload(self):
        def broken(old, new):
            raise RuntimeError("boom")

        self.watcher.add_listener(broken)
        self.rewrite(config_text(size=4000))
        await self.watcher.reload()
        self.assertEqual(self.watcher.current.max_message_size, 4000)
        self.assertEqual(len(self.calls), 1)
        self.flushLoggedErrors(RuntimeError)


class ReloadCheckTests(WatcherTestCase):
    """``add_reload_check``: state outside the file (TLS certificates) re-read on each reload."""

    async def test_check_runs_on_unchanged_file_and_commits(self):
        seen, committed = [], []

        async def check(new):
            seen.append(new)
            return lambda: committed.append(new)

        self.watcher.add_reload_check(check)
        current = await self.watcher.reload()
        self.assertEqual(seen, [current])
        self.assertEqual(committed, [current])
        self.assertEqual(self.calls, [])  # no config change: listeners are not told

    async def test_check_error_refuses_the_whole_reload(self):
        committed = []

        async def check(new):
            raise ConfigError("tls.cert_file: cannot read /nowhere.pem")

        async def other(new):
            return lambda: committed.append(new)

        self.watcher.add_reload_check(other)
        self.watcher.add_reload_check(check)
        old = self.watcher.current
        self.rewrite(config_text(size=2000))
        with self.assertRaises(ReloadError) as caught:
            await self.watcher.reload()
        self.assertEqual(str(caught.exception), "tls.cert_file: cannot read /nowhere.pem")
        self.assertIs(self.watcher.current, old)
        self.assertEqual(committed, [])


class FileWatchTests(WatcherTestCase):
    async def test_in_place_write(self):
        """Writing the file in place is picked up without any request."""
        self.start()
        self.rewrite(config_text(size=5000))
        await self.wait_for(lambda: self.watcher.current.max_message_size == 5000)

    async def test_write_temp_then_rename(self):
        """An editor's save (write a temp file, rename it over the config) is picked up."""
        self.start()
        temp = os.path.join(os.path.dirname(self.path), ".haitatsu.pkl.swp")
        with open(temp, "w") as f:
            f.write(config_text(size=6000))
        os.rename(temp, self.path)
        await self.wait_for(lambda: self.watcher.current.max_message_size == 6000)

    async def test_broken_write_is_logged_and_kept(self):
        """A broken save from the editor leaves the running config and logs why."""
        self.start()
        old = self.watcher.current
        self.rewrite("server { \n")
        await self.wait_for(lambda: any("failed" in e["log_format"] for e in self.reload_events()))
        self.assertIs(self.watcher.current, old)
        failed = [e for e in self.reload_events() if "failed" in e["log_format"]]
        self.assertIn(self.path, failed[0]["reason"])
        self.assertEqual(failed[0]["trigger"], "file change")
        # ... and a later good save still applies.
        self.rewrite(config_text(size=7000))
        await self.wait_for(lambda: self.watcher.current.max_message_size == 7000)

    async def test_restart_only_change_from_file_is_logged(self):
        self.start()
        self.rewrite(config_text(imap="127.0.0.1:11199"))
        await self.wait_for(lambda: any("refused" in e["log_format"] for e in self.reload_events()))
        refused = [e for e in self.reload_events() if "refused" in e["log_format"]]
        self.assertEqual(refused[0]["reason"], "reload requires restart: [imap.addr]")
        self.assertEqual(self.watcher.current.imap.addr, "127.0.0.1:11143")

    async def test_burst_of_writes_is_one_reload(self):
        """Events within the debounce window coalesce into one reload of the final content."""
        self.start()
        for size in range(8001, 8006):
            self.rewrite(config_text(size=size))
        await self.wait_for(lambda: self.watcher.current.max_message_size == 8005)
        await self.settle(0.5)
        self.assertEqual(len(self.reload_events()), 1)
        self.assertEqual(len(self.calls), 1)

    async def test_other_files_ignored(self):
        """Changes to other files in the directory do not reload."""
        self.start()
        with open(os.path.join(os.path.dirname(self.path), "notes.txt"), "w") as f:
            f.write("hello")
        await self.settle(0.6)
        self.assertEqual(self.reload_events(), [])

    async def test_stopped_watcher_ignores_changes(self):
        self.watcher.startService()
        await self.watcher.stopService()
        self.rewrite(config_text(size=9000))
        await self.settle(0.6)
        self.assertEqual(self.watcher.current.max_message_size, 1000)


class SighupTests(WatcherTestCase):
    async def test_sighup_reloads(self):
        """SIGHUP to the process reloads the file."""
        # Written before the watcher starts, so only the signal can trigger the reload.
        self.rewrite(config_text(size=10000))
        self.start()
        os.kill(os.getpid(), signal.SIGHUP)
        await self.wait_for(lambda: self.watcher.current.max_message_size == 10000)
        self.assertEqual([e["trigger"] for e in self.reload_events()], ["SIGHUP"])

    async def test_handler_restored_on_stop(self):
        before = signal.getsignal(signal.SIGHUP)
        self.watcher.startService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        await self.watcher.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
