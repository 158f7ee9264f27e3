"""Health, readiness (API.md 5.1) and the config reload (API.md 1.14)."""

import os
import shutil

from twisted.internet import reactor
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.watcher import ConfigWatcher
from tests.api.client import APIClient, error
from tests.support import make_store


class HealthTests(unittest.TestCase):
    async def test_health_is_always_ok(self):
        answer = await APIClient().get("/health", auth=False)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json, {"status": "ok"})

    async def test_ready_on_a_working_store(self):
        store = await make_store(self)
        answer = await APIClient(store).get("/ready", auth=False)
        self.assertEqual((answer.status, answer.json), (200, {"status": "ready"}))

    async def test_ready_reports_the_database(self):
        store = await make_store(self)
        await store.close()
        answer = await APIClient(store).get("/ready", auth=False)
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["status"], "not_ready")
        self.assertTrue(answer.json["error"].startswith("database: "), answer.json)

    async def test_ready_reports_the_blob_store(self):
        store = await make_store(self)
        # Break the real blob directory: its spool directory is now a plain file.
        os.makedirs(store.blobs.root, exist_ok=True)
        spool = os.path.join(store.blobs.root, "tmp")
        shutil.rmtree(spool, ignore_errors=True)
        with open(spool, "w"):
            pass
        answer = await APIClient(store).get("/ready", auth=False)
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["status"], "not_ready")
        self.assertTrue(answer.json["error"].startswith("blobs: "), answer.json)


CONFIG = """
server {{ api_addr = "{api_addr}" }}
api {{ service_token = "{token}" }}
"""


class ReloadTests(unittest.TestCase):
    """``POST /api/v1/admin/reload`` with the real config watcher on a real Pkl file."""

    timeout = 60

    def write(self, token="first-token", api_addr="127.0.0.1:18080"):
        with open(self.path, "w") as f:
            f.write(CONFIG.format(token=token, api_addr=api_addr))

    def setUp(self):
        self.path = os.path.abspath(self.mktemp() + ".pkl")
        self.write()
        self.watcher = ConfigWatcher(
            self.path, reactor, load_config(self.path), handle_sighup=False
        )
        self.client = APIClient(reloader=self.watcher, config=lambda: self.watcher.current)

    def bearer(self, token):
        return {"auth": False, "headers": {"Authorization": f"Bearer {token}"}}

    async def test_reload_applies_the_new_token_to_the_next_request(self):
        self.write(token="second-token")
        answer = await self.client.post("/api/v1/admin/reload", **self.bearer("first-token"))
        self.assertEqual((answer.status, answer.body), (200, b'{"data":{}}'))
        answer = await self.client.get("/api/v1/nothing", **self.bearer("first-token"))
        self.assertEqual(answer.status, 401)
        answer = await self.client.get("/api/v1/nothing", **self.bearer("second-token"))
        self.assertEqual(answer.status, 404)

    async def test_refused_reload_is_409_with_the_reason(self):
        self.write(api_addr="127.0.0.1:18081")
        answer = await self.client.post("/api/v1/admin/reload", **self.bearer("first-token"))
        self.assertEqual(answer.status, 409)
        self.assertEqual(
            answer.json, error("reload_failed", "reload requires restart: [server.api_addr]")
        )
        self.assertEqual(self.watcher.current.server.api_addr, "127.0.0.1:18080")

    async def test_file_that_fails_to_evaluate_is_409_and_the_config_stays(self):
        with open(self.path, "w") as f:
            f.write("api { service_token = }")
        answer = await self.client.post("/api/v1/admin/reload", **self.bearer("first-token"))
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.json["error"]["code"], "reload_failed")
        self.assertTrue(answer.json["error"]["message"])
        self.assertEqual(self.watcher.current.api.service_token, "first-token")

    async def test_reload_needs_the_token(self):
        self.write(token="second-token")
        answer = await self.client.post("/api/v1/admin/reload", auth=False)
        self.assertEqual(answer.status, 401)
        self.assertEqual(self.watcher.current.api.service_token, "first-token")


class NoReloaderTests(unittest.TestCase):
    async def test_no_reloader_is_503(self):
        answer = await APIClient(reloader=None).post("/api/v1/admin/reload")
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["error"]["code"], "reload_unavailable")
