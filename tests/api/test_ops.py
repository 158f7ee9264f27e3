"""Health, readiness (API.md 5.1) and the config reload (API.md 1.14)."""

import os
import shutil

from twisted.internet import defer
from twisted.trial import unittest

from tests.api.client import APIClient, error
from tests.support import make_store


class Reloader:
    """A reloader as the config watcher provides it: ``reload()`` gives a Deferred."""

    def __init__(self, failure: Exception | None = None):
        self.failure = failure
        self.calls = 0

    def reload(self):
        self.calls += 1
        if self.failure is not None:
            return defer.fail(self.failure)
        return defer.succeed(None)


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


class ReloadTests(unittest.TestCase):
    async def test_reload_success(self):
        reloader = Reloader()
        answer = await APIClient(reloader=reloader).post("/api/v1/admin/reload")
        self.assertEqual((answer.status, answer.body), (200, b'{"data":{}}'))
        self.assertEqual(reloader.calls, 1)

    async def test_refused_reload_is_409_with_the_reason(self):
        reason = "reload requires restart: [database tls]"
        answer = await APIClient(reloader=Reloader(ValueError(reason))).post("/api/v1/admin/reload")
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.json, error("reload_failed", reason))

    async def test_no_reloader_is_503(self):
        answer = await APIClient(reloader=None).post("/api/v1/admin/reload")
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json["error"]["code"], "reload_unavailable")

    async def test_reload_needs_the_token(self):
        reloader = Reloader()
        answer = await APIClient(reloader=reloader).post("/api/v1/admin/reload", auth=False)
        self.assertEqual(answer.status, 401)
        self.assertEqual(reloader.calls, 0)
