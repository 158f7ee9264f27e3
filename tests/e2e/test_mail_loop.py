"""The walking skeleton end to end: the real ``twistd -n haitatsu`` process on loopback.

A mailbox and an app password are made over REST, a message goes in with smtplib, comes out with
imaplib and over REST ``raw`` byte for byte; then the config file is edited under the running
server (a smaller size limit applies without a restart; an invalid file is refused and the server
keeps running).
"""

from __future__ import annotations

import imaplib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "e2e-service-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(ports: dict, max_size: int, data_dir: str) -> str:
    return f"""
server {{
  api_addr = "127.0.0.1:{ports["http"]}"
  public_hostname = "mx.test.example"
  instance_name = "e2e-node"
  data_dir = "{data_dir}"
}}
smtp {{ inbound_addr = "127.0.0.1:{ports["smtp"]}" }}
imap {{ addr = "127.0.0.1:{ports["imap"]}" }}
submission {{ starttls_addr = "" tls_addr = "" }}
database {{ driver = "sqlite" }}
tls {{ mode = "off" }}
api {{ service_token = read?("env:E2E_TOKEN") ?? "unset" }}
limits {{ max_message_size_bytes = {max_size} }}
"""


class ServerProcess:
    """A ``twistd -n haitatsu`` child process, with its log captured to a file."""

    def __init__(self, workdir: str, ports: dict):
        self.workdir = workdir
        self.ports = ports
        self.config = os.path.join(workdir, "haitatsu.pkl")
        self.log_path = os.path.join(workdir, "twistd.log")
        self.proc = None

    def write_config(self, max_size: int, text: str | None = None):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text if text is not None else config_text(self.ports, max_size, "data"))
        os.replace(tmp, self.config)

    def start(self):
        self.spawn()
        self.wait_ready()

    def spawn(self):
        """Start the process without waiting for it to be ready."""
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["E2E_TOKEN"] = TOKEN
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [twistd, "--pidfile=", "-n", "haitatsu", "--config", self.config],
            cwd=self.workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"twistd exited {self.proc.returncode}:\n{self.read_log()}")
            try:
                status, body = self.http("GET", "/ready", token=None)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not become ready:\n{self.read_log()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.log.close()

    def read_log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def http(self, method, path, body=None, token=TOKEN):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['http']}{path}", data=data, method=method
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10)


class MailLoopTests(unittest.TestCase):
    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        ports = {name: free_port() for name in ("http", "smtp", "imap")}
        self.server = ServerProcess(self.workdir, ports)
        self.server.write_config(max_size=100_000)
        self.server.start()
        self.addCleanup(self.server.stop)

    def wait_for(self, predicate, what, seconds=15.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        self.fail(f"timed out waiting for {what}:\n{self.server.read_log()[-4000:]}")

    def ehlo_size(self) -> int:
        with self.server.smtp() as client:
            client.ehlo("client.test")
            return int(client.esmtp_features["size"])

    def test_mail_loop(self):
        server = self.server

        # Missing and wrong tokens get the exact 401 envelope.
        expected_401 = {
            "error": {"code": "unauthorized", "message": "Authentication required", "details": {}}
        }
        status, body = server.http("GET", "/api/v1/mailboxes", token=None)
        self.assertEqual((status, json.loads(body)), (401, expected_401))
        status, body = server.http("GET", "/api/v1/mailboxes", token="wrong")
        self.assertEqual((status, json.loads(body)), (401, expected_401))

        # A mailbox and an app password over REST.
        status, body = server.http("POST", "/api/v1/mailboxes", {"primary_address": "bob@e2e.test"})
        self.assertEqual(status, 201, body)
        mailbox = json.loads(body)["data"]
        status, body = server.http(
            "POST",
            f"/api/v1/mailboxes/{mailbox['id']}/passwords",
            {"name": "imap client", "scopes": ["imap"]},
        )
        self.assertEqual(status, 201, body)
        password = json.loads(body)["data"]["password"]

        # A message in over SMTP.
        message = (
            b"From: Alice <alice@sender.test>\r\n"
            b"To: Bob <bob@e2e.test>\r\n"
            b"Subject: walking skeleton\r\n"
            b"Message-ID: <e2e-1@sender.test>\r\n"
            b"\r\n"
            b"Hello Bob,\r\n"
            b".leading dot survives\r\n"
            b"the end.\r\n"
        )
        with server.smtp() as client:
            client.ehlo("client.test")
            client.mail("alice@sender.test")
            code, _ = client.rcpt("nobody@e2e.test")
            self.assertEqual(code, 550)
            code, reply = client.rcpt("bob+skeleton@e2e.test")
            self.assertEqual(code, 250, reply)
            code, reply = client.data(message)
            self.assertEqual(code, 250, reply)

            # Oversize: refused with 552 while streaming, the session goes on.
            client.mail("alice@sender.test")
            client.rcpt("bob@e2e.test")
            code, reply = client.data(b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n")
            self.assertEqual(code, 552, reply)
            self.assertEqual(client.noop()[0], 250)

        # Out over IMAP: BODY[] ends with exactly the bytes sent.
        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
        try:
            with self.assertRaises(imaplib.IMAP4.error):
                imap.login("bob@e2e.test", "not-the-password")
            imap.login("bob@e2e.test", password)
            typ, data = imap.select("INBOX")
            self.assertEqual((typ, data), ("OK", [b"1"]))
            typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            imap_bytes = data[0][1]
            self.assertTrue(imap_bytes.endswith(message), imap_bytes)
            self.assertIn(b"X-Haitatsu-Trace-ID: ", imap_bytes)
            self.assertTrue(imap_bytes.startswith(b"Received: "))
        finally:
            imap.logout()

        # Over REST: the message list and raw bytes, identical to what IMAP served.
        status, body = server.http("GET", f"/api/v1/mailboxes/{mailbox['id']}/messages")
        self.assertEqual(status, 200, body)
        (view,) = json.loads(body)["data"]
        self.assertEqual(view["mailbox_message"]["plus_tag"], "skeleton")
        self.assertEqual(view["message"]["subject"], "walking skeleton")
        status, raw = server.http("GET", f"/api/v1/messages/{view['mailbox_message']['id']}/raw")
        self.assertEqual(status, 200)
        self.assertEqual(raw, imap_bytes)

        # Hot reload: a smaller size limit applies to the next connection, no restart.
        self.assertEqual(self.ehlo_size(), 100_000)
        server.write_config(max_size=50_000)
        self.wait_for(lambda: self.ehlo_size() == 50_000, "the new SIZE limit")

        # An invalid file is refused; the server keeps running on the config it had.
        server.write_config(max_size=0, text="server { api_addr = }\n")
        self.wait_for(
            lambda: "failed, keeping the running config" in server.read_log(),
            "the failed reload in the log",
        )
        status, body = server.http("GET", "/health", token=None)
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        self.assertEqual(self.ehlo_size(), 50_000)
        self.assertIsNone(server.proc.poll())

        # The reload endpoint reports the broken file with 409 reload_failed.
        status, body = server.http("POST", "/api/v1/admin/reload")
        self.assertEqual(status, 409, body)
        self.assertEqual(json.loads(body)["error"]["code"], "reload_failed")
