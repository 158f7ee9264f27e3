"""schemathesis against the served OpenAPI document of a live server on 127.0.0.1: no 5xx, and
every answer's status, content type and body as the document says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import attrs
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.api import HaitatsuAPI
from haitatsu.config.model import DNSConfig
from haitatsu.metrics import Metrics
from tests.api.client import TOKEN, LiveConfig
from tests.api.test_dnscheck import start_dns_server
from tests.support import make_store

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def _schemathesis() -> list[str] | None:
    script = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if os.path.exists(script):
        return [script]
    found = shutil.which("schemathesis")
    return [found] if found else None


class SchemathesisTests(unittest.TestCase):
    timeout = 120

    async def test_no_server_errors_and_no_schema_violations(self):
        command = _schemathesis()
        if command is None:
            raise unittest.SkipTest("schemathesis is not installed (pip install schemathesis)")
        store = await make_store(self)
        mailbox = await store.create_mailbox("fuzz@example.com")
        await store.record_event("x.test", {"event": "x.test"}, mailbox_id=mailbox.id)
        config = LiveConfig()
        dns_port = await start_dns_server(self)
        config.config = attrs.evolve(
            config.config, dns=DNSConfig(nameservers=[f"127.0.0.1:{dns_port}"])
        )
        api = HaitatsuAPI(config, store, None, reactor, metrics=Metrics(False))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(api.site())
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/api/v1/openapi.json"
        argv = [
            *command,
            "run",
            url,
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            "8",
            "--phases",
            "examples,fuzzing",
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            # Without a reloader the reload route answers 503 by design; the stream never ends
            # for a mailbox that exists. Both have tests of their own.
            "--exclude-path",
            "/api/v1/admin/reload",
            "--exclude-path",
            "/api/v1/mailboxes/{mailbox_id}/stream",
            "--request-timeout",
            "10",
            "--no-color",
        ]
        env = dict(os.environ, NO_COLOR="1", SCHEMATHESIS_HOOKS="")
        # schemathesis keeps a cache of what it found in its working directory: a temporary one.
        workdir = self.mktemp()
        os.makedirs(workdir)
        result = await deferToThread(
            subprocess.run,
            argv,
            capture_output=True,
            text=True,
            timeout=110,
            env=env,
            cwd=workdir,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output[-6000:])
