"""``twistd -n haitatsu`` with an ``s3 {}`` block: the config reaches ``build_store``, mail taken
over SMTP lands in the bucket (once), comes back out over REST byte for byte, and ``/ready`` names
S3 when its credentials are wrong."""

from __future__ import annotations

import json
import os
import time

from twisted.trial import unittest

from tests.e2e.test_mail_loop import ServerProcess, free_port
from tests.support import MOTO_REGION, MotoS3Mixin


def config_text(ports: dict, moto, bucket: str, secret_env: str) -> str:
    return f"""
server {{
  api_addr = "127.0.0.1:{ports["http"]}"
  public_hostname = "mx.test.example"
  data_dir = "data"
}}
smtp {{ inbound_addr = "127.0.0.1:{ports["smtp"]}" }}
imap {{ addr = "127.0.0.1:{ports["imap"]}" }}
submission {{ starttls_addr = "" tls_addr = "" }}
api {{ service_token = read?("env:E2E_TOKEN") ?? "unset" }}
s3 {{
  endpoint = "{moto.endpoint}"
  bucket = "{bucket}"
  access_key_id = "{moto.access_key_id}"
  secret_access_key = read("env:{secret_env}")
  region = "{MOTO_REGION}"
}}
"""


class S3NodeTests(MotoS3Mixin, unittest.TestCase):
    timeout = 120

    def start(self, secret: str) -> ServerProcess:
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        ports = {name: free_port() for name in ("http", "smtp", "imap")}
        server = ServerProcess(workdir, ports)
        self.bucket = self.moto.create_bucket()
        os.environ["E2E_S3_SECRET"] = secret
        self.addCleanup(os.environ.pop, "E2E_S3_SECRET", None)
        server.write_config(0, config_text(ports, self.moto, self.bucket, "E2E_S3_SECRET"))
        self.addCleanup(server.stop)
        return server

    def test_delivery_goes_to_the_bucket(self):
        server = self.start(self.moto.secret_access_key)
        server.start()
        status, body = server.http("POST", "/api/v1/mailboxes", {"primary_address": "bob@e2e.test"})
        self.assertEqual(status, 201, body)
        mailbox = json.loads(body)["data"]
        message = b"From: alice@sender.test\r\nTo: bob@e2e.test\r\nSubject: s3\r\n\r\nHi.\r\n"
        with server.smtp() as client:
            client.ehlo("client.test")
            self.assertEqual(client.sendmail("alice@sender.test", ["bob@e2e.test"], message), {})
        names = self.moto.object_names(self.bucket)
        blobs = [n for n in names if n.startswith("blobs/")]
        self.assertEqual(len(blobs), 1, names)
        self.assertFalse(os.path.exists(os.path.join(server.workdir, "data", "blobs")))
        status, body = server.http("GET", f"/api/v1/mailboxes/{mailbox['id']}/messages")
        (view,) = json.loads(body)["data"]
        self.assertEqual(
            blobs[0], f"blobs/{view['message']['blob_key'][:2]}/" + view["message"]["blob_key"]
        )
        status, raw = server.http("GET", f"/api/v1/messages/{view['mailbox_message']['id']}/raw")
        self.assertEqual(status, 200)
        self.assertTrue(raw.endswith(message), raw)

    def test_ready_names_s3_when_the_secret_is_wrong(self):
        server = self.start("not-the-secret")
        server.spawn()
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and server.proc.poll() is None:
            try:
                answer = server.http("GET", "/ready", token=None)
            except OSError:
                answer = None
            if answer is not None and answer[0] == 503 and b"blobs:" in answer[1]:
                break
            time.sleep(0.2)
        self.assertIsNotNone(answer, server.read_log())
        self.assertEqual(answer[0], 503, server.read_log())
        self.assertEqual(
            json.loads(answer[1])["error"],
            "blobs: s3: access denied (check access_key_id/secret_access_key) "
            "[SignatureDoesNotMatch]",
        )
        # The node keeps running (and will be ready once the secret is fixed and it restarts).
        self.assertIsNone(server.proc.poll())
