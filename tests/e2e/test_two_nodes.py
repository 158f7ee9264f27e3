"""Two real ``twistd -n haitatsu`` nodes on one PostgreSQL database and one S3 bucket (moto on
loopback): IMAP IDLE on node A sees a message delivered over SMTP to node B within a second (the
LISTEN/NOTIFY change bus), and so does NOOP; the body B stored is read back on A from S3. IDLE on
A also sees the EXISTS, FETCH FLAGS and EXPUNGE that IMAP commands and REST calls on B make."""

from __future__ import annotations

import json
import os
import socket
import time

from twisted.trial import unittest

from tests.e2e.test_mail_loop import ServerProcess, free_port
from tests.support import MOTO_REGION, PG_SKIP, MotoS3Mixin, make_pg_database


def node_config(ports: dict, name: str, dsn: str, moto, bucket: str) -> str:
    return f"""
server {{
  api_addr = "127.0.0.1:{ports["http"]}"
  public_hostname = "{name}.test.example"
  instance_name = "{name}"
  data_dir = "data"
}}
smtp {{ inbound_addr = "127.0.0.1:{ports["smtp"]}" }}
imap {{ addr = "127.0.0.1:{ports["imap"]}" }}
submission {{ starttls_addr = "" tls_addr = "" }}
database {{
  driver = "postgres"
  dsn = {json.dumps(dsn)}
  max_connections = 4
}}
s3 {{
  endpoint = "{moto.endpoint}"
  bucket = "{bucket}"
  access_key_id = "{moto.access_key_id}"
  secret_access_key = "{moto.secret_access_key}"
  region = "{MOTO_REGION}"
}}
tls {{ mode = "off" }}
api {{ service_token = read?("env:E2E_TOKEN") ?? "unset" }}
"""


class IMAPLines:
    """A raw IMAP client socket, read line by line with a deadline (imaplib has no IDLE)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.transcript: list[bytes] = []

    def send(self, line: bytes):
        self.sock.sendall(line + b"\r\n")

    def read_until(self, predicate, seconds: float) -> bytes:
        deadline = time.monotonic() + seconds
        while True:
            while b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                self.transcript.append(line)
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; transcript: {self.transcript!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"connection closed; transcript: {self.transcript!r}")
            self.buffer += chunk

    def command(self, tag: bytes, line: bytes, seconds: float = 10.0) -> bytes:
        self.send(tag + b" " + line)
        return self.read_until(lambda got: got.startswith(tag + b" "), seconds)

    def close(self):
        self.sock.close()


MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@cluster.test>\r\n"
    b"Subject: across nodes\r\n"
    b"\r\n"
    b"Delivered on B, announced on A.\r\n"
)


class TwoNodeTests(MotoS3Mixin, unittest.TestCase):
    skip = PG_SKIP
    timeout = 120

    @classmethod
    def setUpClass(cls):
        if PG_SKIP:
            return
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        if PG_SKIP:
            return
        super().tearDownClass()

    async def setUp(self):
        dsn = await make_pg_database(self)
        root = os.path.abspath(self.mktemp())
        self.bucket = bucket = self.moto.create_bucket()
        self.nodes = {}
        for name in ("a", "b"):
            workdir = os.path.join(root, name)
            os.makedirs(workdir)
            ports = {key: free_port() for key in ("http", "smtp", "imap")}
            node = ServerProcess(workdir, ports)
            node.write_config(0, node_config(ports, name, dsn, self.moto, bucket))
            self.nodes[name] = node
        for node in self.nodes.values():
            self.addCleanup(node.stop)
        for node in self.nodes.values():
            node.start()

    def deliver(self, node: ServerProcess, message: bytes):
        with node.smtp() as client:
            client.ehlo("client.test")
            refused = client.sendmail("alice@sender.test", ["bob@cluster.test"], message)
            self.assertEqual(refused, {})

    def make_mailbox(self):
        """bob@cluster.test (made on A) and an IMAP app password for it (made on B)."""
        a, b = self.nodes["a"], self.nodes["b"]
        status, body = a.http("POST", "/api/v1/mailboxes", {"primary_address": "bob@cluster.test"})
        self.assertEqual(status, 201, body)
        mailbox = json.loads(body)["data"]
        status, body = b.http(
            "POST",
            f"/api/v1/mailboxes/{mailbox['id']}/passwords",
            {"name": "client", "scopes": ["imap"]},
        )
        self.assertEqual(status, 201, body)
        return mailbox, json.loads(body)["data"]["password"].encode()

    def test_idle_and_noop_on_a_see_delivery_on_b(self):
        a, b = self.nodes["a"], self.nodes["b"]
        mailbox, password = self.make_mailbox()

        idler, poller = IMAPLines(a.ports["imap"]), IMAPLines(a.ports["imap"])
        try:
            for client in (idler, poller):
                client.read_until(lambda line: line.startswith(b"* OK"), 10)
                ok = client.command(b"a1", b"LOGIN bob@cluster.test " + password)
                self.assertTrue(ok.startswith(b"a1 OK"), ok)
                ok = client.command(b"a2", b"SELECT INBOX")
                self.assertTrue(ok.startswith(b"a2 OK"), ok)
                self.assertIn(b"* 0 EXISTS", client.transcript)
            idler.send(b"a3 IDLE")
            idler.read_until(lambda line: line.startswith(b"+ "), 10)

            self.deliver(b, MESSAGE)
            delivered = time.monotonic()
            idler.read_until(lambda line: line == b"* 1 EXISTS", 1.0)
            self.assertLess(time.monotonic() - delivered, 1.0)
            idler.send(b"DONE")
            ok = idler.read_until(lambda line: line.startswith(b"a3 "), 10)
            self.assertTrue(ok.startswith(b"a3 OK"), ok)

            # NOOP on A (another connection, not idling) reports the same delivery, and the
            # message body B put in the bucket is readable on A.
            ok = poller.command(b"a3", b"NOOP")
            self.assertTrue(ok.startswith(b"a3 OK"), ok)
            self.assertIn(b"* 1 EXISTS", poller.transcript)
            self.deliver(b, MESSAGE + b"second\r\n")
            deadline = time.monotonic() + 1.0
            while b"* 2 EXISTS" not in poller.transcript and time.monotonic() < deadline:
                poller.command(b"a4", b"NOOP")
                time.sleep(0.05)
            self.assertIn(b"* 2 EXISTS", poller.transcript)
            ok = poller.command(b"a5", b"UID FETCH 1 (BODY.PEEK[])")
            self.assertTrue(ok.startswith(b"a5 OK"), ok)
            self.assertIn(b"Delivered on B, announced on A.", poller.transcript)
            self.assertTrue(self.moto.object_names(self.bucket))
        finally:
            idler.close()
            poller.close()

    def test_idle_on_a_sees_imap_and_rest_changes_made_on_b(self):
        a, b = self.nodes["a"], self.nodes["b"]
        mailbox, password = self.make_mailbox()
        idler, actor = IMAPLines(a.ports["imap"]), IMAPLines(b.ports["imap"])

        def seen(expected: bytes) -> bytes:
            return idler.read_until(lambda line: line == expected, 5.0)

        try:
            for client in (idler, actor):
                client.read_until(lambda line: line.startswith(b"* OK"), 10)
                ok = client.command(b"a1", b"LOGIN bob@cluster.test " + password)
                self.assertTrue(ok.startswith(b"a1 OK"), ok)
            ok = idler.command(b"a2", b"SELECT INBOX")
            self.assertTrue(ok.startswith(b"a2 OK"), ok)
            idler.send(b"a3 IDLE")
            idler.read_until(lambda line: line.startswith(b"+ "), 10)

            # IMAP on B: APPEND, STORE, EXPUNGE.
            for n in range(3):
                tag = b"b%d" % n
                actor.send(b"%s APPEND INBOX {%d+}\r\n%s" % (tag, len(MESSAGE), MESSAGE))
                ok = actor.read_until(lambda line, tag=tag: line.startswith(tag + b" "), 10)
                self.assertTrue(ok.startswith(tag + b" OK [APPENDUID"), actor.transcript)
            seen(b"* 3 EXISTS")
            ok = actor.command(b"c1", b"SELECT INBOX")
            self.assertTrue(ok.startswith(b"c1 OK"), ok)
            ok = actor.command(b"c2", b"STORE 1 +FLAGS.SILENT (\\Flagged)")
            self.assertTrue(ok.startswith(b"c2 OK"), ok)
            seen(b"* 1 FETCH (FLAGS (\\Flagged) UID 1)")
            ok = actor.command(b"c3", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
            ok = actor.command(b"c4", b"EXPUNGE")
            self.assertTrue(ok.startswith(b"c4 OK"), ok)
            seen(b"* 2 EXPUNGE")

            # REST on B: a flag change, and a forced delete (soft delete).
            status, body = b.http("GET", f"/api/v1/mailboxes/{mailbox['id']}/messages")
            self.assertEqual(status, 200, body)
            ids = {
                view["mailbox_message"]["uid"]: view["mailbox_message"]["id"]
                for view in json.loads(body)["data"]
            }
            self.assertEqual(sorted(ids), [1, 3])
            status, body = b.http("PATCH", f"/api/v1/messages/{ids[3]}", {"answered": True})
            self.assertEqual(status, 200, body)
            seen(b"* 2 FETCH (FLAGS (\\Answered) UID 3)")
            status, body = b.http("DELETE", f"/api/v1/messages/{ids[1]}?force=true")
            self.assertEqual(status, 200, body)
            seen(b"* 1 EXPUNGE")

            idler.send(b"DONE")
            ok = idler.read_until(lambda line: line.startswith(b"a3 "), 10)
            self.assertTrue(ok.startswith(b"a3 OK"), ok)
            ok = idler.command(b"a4", b"FETCH 1:* (UID FLAGS)")
            self.assertTrue(ok.startswith(b"a4 OK"), ok)
            self.assertEqual(idler.transcript[-2], b"* 1 FETCH (UID 3 FLAGS (\\Answered))")
        finally:
            idler.close()
            actor.close()
