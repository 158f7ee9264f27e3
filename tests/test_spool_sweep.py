"""What a crash leaves in the spool directory is removed at start-up, and nothing else."""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.hub import SPOOL_LEFTOVER_SECONDS, HaitatsuService
from haitatsu.smtp import spool
from tests.config.test_loader import ConfigFileMixin
from tests.tls.test_hub import free_ports


def _file(path: str, age: float) -> str:
    with open(path, "wb") as f:
        f.write(b"x")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


class SweepTests(unittest.SynchronousTestCase):
    def test_old_files_go_recent_files_and_directories_stay(self):
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "sub"))
        old = _file(os.path.join(directory, "smtp-old.eml"), 7200)
        part = _file(os.path.join(directory, "part-old"), 7200)
        fresh = _file(os.path.join(directory, "smtp-fresh.eml"), 10)
        self.assertEqual(spool.sweep(directory, 3600, time.time()), 2)
        self.assertFalse(os.path.exists(old))
        self.assertFalse(os.path.exists(part))
        self.assertTrue(os.path.exists(fresh))
        self.assertTrue(os.path.isdir(os.path.join(directory, "sub")))

    def test_missing_directory_is_nothing_to_do(self):
        self.assertEqual(spool.sweep(self.mktemp(), 3600, time.time()), 0)


class HubSweepTests(ConfigFileMixin, unittest.TestCase):
    timeout = 60

    async def test_hub_removes_leftovers_when_it_starts(self):
        directory = self.temp_dir()
        api, smtp = free_ports(2)
        path = self.write_config(
            f'server {{ api_addr = "127.0.0.1:{api}"; data_dir = "{directory}/data" }}\n'
            f'smtp {{ inbound_addr = "127.0.0.1:{smtp}" }}\n'
        )
        spool_dir = os.path.join(directory, "data", "spool")
        os.makedirs(spool_dir)
        leftover = _file(os.path.join(spool_dir, "smtp-crashed.eml"), SPOOL_LEFTOVER_SECONDS + 60)
        live = _file(os.path.join(spool_dir, "smtp-live.eml"), 1)
        hub = HaitatsuService(path, load_config(path), reactor)
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready
        await hub.spool_swept
        self.assertFalse(os.path.exists(leftover))
        self.assertTrue(os.path.exists(live))
