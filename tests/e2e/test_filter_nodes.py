"""The filter chain in real ``twistd -n haitatsu`` processes: sender rules made over REST
apply to mail out of the box (the default chain), and greylisting and rate limits hold across
two nodes on one PostgreSQL database."""

from __future__ import annotations

import json
import os
import smtplib
import time

from twisted.trial import unittest

from tests.e2e.test_mail_loop import ServerProcess, config_text, free_port
from tests.support import PG_SKIP, make_pg_database

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@cluster.test>\r\n"
    b"Subject: filtered\r\n"
    b"\r\n"
    b"Hello.\r\n"
)

FILTERS = """
filters = new Listing {
  new { name = "sender_rules" }
  new { name = "rate_limit" per_ip { limit = 3 period_seconds = 3600 } }
  new { name = "greylist" delay_seconds = 1 auto_allow_passes = 0 }
}
"""


def node_config(ports: dict, name: str, dsn: str) -> str:
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
tls {{ mode = "off" }}
api {{ service_token = read?("env:E2E_TOKEN") ?? "unset" }}
{FILTERS}
"""


def send(node: ServerProcess):
    """One message; {} when accepted, the refused recipients, or (code, text) of MAIL."""
    with node.smtp() as client:
        try:
            return client.sendmail("alice@sender.test", ["bob@cluster.test"], MESSAGE)
        except smtplib.SMTPRecipientsRefused as e:
            return dict(e.recipients)
        except smtplib.SMTPSenderRefused as e:
            return e.smtp_code, e.smtp_error


def messages(node: ServerProcess, mailbox_id: str) -> list:
    status, body = node.http("GET", f"/api/v1/mailboxes/{mailbox_id}/messages")
    assert status == 200, body
    return json.loads(body)["data"]


class TwoNodeFilterTests(unittest.TestCase):
    skip = PG_SKIP
    timeout = 120

    async def setUp(self):
        dsn = await make_pg_database(self)
        root = os.path.abspath(self.mktemp())
        self.nodes = {}
        for name in ("a", "b"):
            workdir = os.path.join(root, name)
            os.makedirs(workdir)
            ports = {key: free_port() for key in ("http", "smtp", "imap")}
            node = ServerProcess(workdir, ports)
            node.write_config(0, node_config(ports, name, dsn))
            self.nodes[name] = node
        for node in self.nodes.values():
            self.addCleanup(node.stop)
            node.spawn()
        for node in self.nodes.values():
            node.wait_ready()

    def test_greylisting_and_rate_limits_are_shared(self):
        a, b = self.nodes["a"], self.nodes["b"]
        status, body = a.http("POST", "/api/v1/mailboxes", {"primary_address": "bob@cluster.test"})
        self.assertEqual(status, 201, body)
        mailbox_id = json.loads(body)["data"]["id"]

        # Greylisted on A (MAIL FROM number 1 for this client, counted by rate_limit) ...
        refused = send(a)
        self.assertEqual(refused["bob@cluster.test"][0], 451, refused)
        time.sleep(1.2)
        # ... the retry passes on B (number 2), and A knows the triplet now (number 3).
        self.assertEqual(send(b), {})
        self.assertEqual(send(a), {})
        # The fourth MAIL FROM from this address, on either node, is over the limit of 3.
        self.assertEqual(send(b), (450, b"4.7.1 rate limit exceeded, try again later"))
        self.assertEqual(send(a)[0], 450)

        stored = messages(b, mailbox_id)
        self.assertEqual(len(stored), 2)
        greylist = sorted(m["message"]["auth_results"]["greylist"] for m in stored)
        self.assertEqual(greylist, ["known", "passed"])


class SenderRulesOverRESTTests(unittest.TestCase):
    """API.md 1.12 end to end on the example config's defaults (no ``filters`` block)."""

    timeout = 60

    def setUp(self):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        ports = {key: free_port() for key in ("http", "smtp", "imap", "pop3")}
        self.node = ServerProcess(workdir, ports)
        self.node.write_config(0, config_text(ports, 1_000_000, "data"))
        self.addCleanup(self.node.stop)
        self.node.start()

    def test_a_block_rule_sends_mail_to_junk(self):
        node = self.node
        status, body = node.http(
            "POST", "/api/v1/mailboxes", {"primary_address": "bob@cluster.test"}
        )
        self.assertEqual(status, 201, body)
        mailbox_id = json.loads(body)["data"]["id"]
        rule = {
            "scope": "global",
            "kind": "block",
            "match_type": "email",
            "value": "Alice@Sender.test",
        }
        status, body = node.http("POST", "/api/v1/rules/sender", rule)
        self.assertEqual(status, 201, body)
        self.assertEqual(send(node), {})
        status, body = node.http("GET", f"/api/v1/mailboxes/{mailbox_id}/folders")
        folders = {f["id"]: f["name"] for f in json.loads(body)["data"]}
        [view] = messages(node, mailbox_id)
        self.assertEqual(folders[view["mailbox_message"]["folder_id"]], "Junk")
        results = view["message"]["auth_results"]
        self.assertEqual((results["list_kind"], results["spam_reasons"]), ("block", ["blocklist"]))
        self.assertEqual(view["message"]["spam_score"], 10)
        status, raw = node.http("GET", f"/api/v1/messages/{view['mailbox_message']['id']}/raw")
        self.assertIn(b"\r\nAuthentication-Results: mx.test.example; none\r\n", raw)
