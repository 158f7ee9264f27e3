"""The job workers as a running service: started by the hub (``haitatsu/hub.py``) and woken by a
new job, handing a job back when the node stops, putting a job back when storage fails, and
giving up on a job that keeps dying."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
import zipfile

import attrs
from twisted.internet import reactor, task, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.model import ServerConfig
from haitatsu.hub import HaitatsuService
from haitatsu.jobs import JobWorker
from haitatsu.jobs.service import MAX_ATTEMPTS
from tests.api.client import LiveConfig
from tests.config.test_loader import ConfigFileMixin
from tests.jobs.fixtures import build_maildir
from tests.support import deliver_bytes, make_store
from tests.tls.test_hub import free_ports

TOKEN = "jobs-hub-token"

CONFIG = """
server {{ api_addr = "127.0.0.1:{api}"; public_hostname = "mail.example.test"; data_dir = "data" }}
smtp {{ inbound_addr = "" }}
imap {{ addr = "" }}
pop3 {{ addr = "" }}
submission {{ starttls_addr = ""; tls_addr = "" }}
api {{ service_token = "{token}" }}
workers {{ enabled = true }}
imports {{ root = "import-root" }}
"""


async def wait_for(predicate, what: str, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.05, lambda: None)


class HubJobsTests(ConfigFileMixin, unittest.TestCase):
    timeout = 90

    def http(self, method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                if response.headers.get("Content-Type") == "application/zip":
                    return response.status, raw
                return response.status, json.loads(raw)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    async def call(self, method, path, body=None):
        return await threads.deferToThread(self.http, method, path, body)

    async def finished(self, path):
        async def done():
            status, answer = await self.call("GET", path)
            job = answer["data"]
            return job if job["status"] in ("completed", "failed") else None

        return await wait_for(done, path)

    async def test_the_hub_runs_exports_and_imports(self):
        directory = self.temp_dir()
        [self.port] = free_ports(1)
        path = os.path.join(directory, "haitatsu.pkl")
        with open(path, "w") as f:
            f.write(CONFIG.format(api=self.port, token=TOKEN))
        expected = build_maildir(os.path.join(directory, "import-root", "carol", "Maildir"))
        hub = HaitatsuService(path, load_config(path), reactor)
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready
        self.assertTrue(hub.jobs.running)

        status, answer = await self.call(
            "POST", "/api/v1/mailboxes", {"primary_address": "carol@example.com"}
        )
        mailbox = answer["data"]
        status, answer = await self.call(
            "POST",
            f"/api/v1/mailboxes/{mailbox['id']}/import",
            {"source_type": "maildir", "source": {"path": "carol/Maildir"}},
        )
        self.assertEqual(status, 201, answer)
        job = await self.finished(f"/api/v1/imports/{answer['data']['id']}")
        self.assertEqual((job["status"], job["imported_count"]), ("completed", len(expected)))

        status, answer = await self.call("POST", f"/api/v1/mailboxes/{mailbox['id']}/export")
        export = await self.finished(f"/api/v1/exports/{answer['data']['id']}")
        self.assertEqual(export["status"], "completed", export)
        status, content = await self.call("GET", f"/api/v1/exports/{export['id']}/download")
        self.assertEqual(status, 200)
        archive = zipfile.ZipFile(io.BytesIO(content))
        self.assertEqual(
            sorted(archive.read(n) for n in archive.namelist()), sorted(e.data for e in expected)
        )


class Silent(Protocol):
    """An IMAP server that accepts a connection and never says a word."""


class WorkerServiceTests(unittest.TestCase):
    timeout = 60

    async def setUp(self):
        self.store = await make_store(self)
        self.config = LiveConfig()
        self.config.config = attrs.evolve(
            self.config.config, server=ServerConfig(shutdown_timeout_seconds=1)
        )
        self.mailbox = await self.store.create_mailbox("dave@example.com")
        self.spool = self.mktemp()

    def worker(self, clock=None):
        return JobWorker(self.store, self.config, reactor, self.spool, clock=clock, node="n1")

    async def test_stopping_hands_the_job_back_without_using_an_attempt(self):
        port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        worker = self.worker()
        worker.startService()
        job = await self.store.create_import_job(
            self.mailbox.id,
            "imap",
            {
                "addr": f"127.0.0.1:{port.getHost().port}",
                "username": "u",
                "password": "p",
                "tls": False,
            },
        )

        async def processing():
            row = await self.store.get_job("import", job.id)
            return row.status == "processing"

        await wait_for(processing, "the worker to take the job")
        await worker.stopService()
        row = await self.store.get_job("import", job.id)
        self.assertEqual((row.status, row.locked_by, row.attempts), ("queued", "", 0))
        self.assertIsNone(row.locked_until)

    async def test_unavailable_storage_puts_the_job_back_for_later(self):
        await deliver_bytes(self.store, b"Subject: x\r\n\r\nx\r\n", self.mailbox.id)
        job = await self.store.create_export_job(self.mailbox.id)
        # The blob directory cannot take the export: a file where its exports/ folder goes.
        os.makedirs(self.store.blobs.root, exist_ok=True)
        with open(os.path.join(self.store.blobs.root, "exports"), "w") as f:
            f.write("in the way")
        clock = task.Clock()
        clock.advance(time.time())
        self.assertEqual(await self.worker(clock).process_due(), 1)
        row = await self.store.get_job("export", job.id)
        self.assertEqual((row.status, row.attempts), ("queued", 1))
        self.assertTrue(row.last_error["error"].startswith("storage unavailable"))
        self.assertGreater(row.next_attempt_at, clock.seconds() * 1e9)
        # Not due yet; once it is, and storage is back, the export completes.
        self.assertEqual(await self.worker(clock).process_due(), 0)
        os.unlink(os.path.join(self.store.blobs.root, "exports"))
        clock.advance(61)
        self.assertEqual(await self.worker(clock).process_due(), 1)
        row = await self.store.get_job("export", job.id)
        self.assertEqual((row.status, row.attempts, row.last_error), ("completed", 2, {}))

    async def test_a_job_that_keeps_dying_fails(self):
        job = await self.store.create_export_job(self.mailbox.id)
        lease = 300 * 10**9
        now = 0
        for _ in range(MAX_ATTEMPTS):
            self.assertIsNotNone(await self.store.claim_job("export", "dies", lease, now=now))
            now += lease + 1
        clock = task.Clock()
        clock.advance(now / 1e9 + 1)
        await self.worker(clock).process_due()
        row = await self.store.get_job("export", job.id)
        self.assertEqual(row.status, "failed")
        self.assertEqual(row.last_error, {"error": f"gave up after {MAX_ATTEMPTS} attempts"})

    async def test_a_new_job_wakes_an_idle_worker(self):
        # On a clock that never moves, an idle worker sleeps for ever unless it is woken.
        worker = self.worker(task.Clock())
        worker.startService()
        self.addCleanup(worker.stopService)
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertTrue(worker._sleepers)
        job = await self.store.create_export_job(self.mailbox.id)

        async def done():
            row = await self.store.get_job("export", job.id)
            return row.status == "completed"

        await wait_for(done, "the export")
