"""Sending end to end on the real ``twistd -n haitatsu`` process: the hub serves
``submission.starttls_addr``; a DKIM key and an smtp app password are made over REST; smtplib
logs in and sends; the REST API sends too; both Sent copies are read back over REST."""

from __future__ import annotations

import json
import os
import smtplib

from twisted.trial import unittest

from tests.e2e.test_mail_loop import ServerProcess, free_port


def config_text(ports: dict) -> str:
    return f"""
server {{
  api_addr = "127.0.0.1:{ports["http"]}"
  public_hostname = "mail.e2e.test"
  instance_name = "e2e-node"
  data_dir = "data"
}}
smtp {{ inbound_addr = "127.0.0.1:{ports["smtp"]}" }}
imap {{ addr = "" }}
submission {{ starttls_addr = "127.0.0.1:{ports["submission"]}" tls_addr = "" }}
database {{ driver = "sqlite" }}
tls {{ mode = "off" }}
api {{ service_token = read?("env:E2E_TOKEN") ?? "unset" }}
"""


class SubmissionEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        ports = {name: free_port() for name in ("http", "smtp", "submission")}
        self.server = ServerProcess(self.workdir, ports)
        self.server.write_config(0, text=config_text(ports))
        self.server.start()
        self.addCleanup(self.server.stop)

    def post(self, path, body):
        status, raw = self.server.http("POST", path, body)
        self.assertIn(status, (200, 201), raw)
        return json.loads(raw)["data"]

    def test_send_over_submission_and_rest(self):
        server = self.server
        mailbox = self.post("/api/v1/mailboxes", {"primary_address": "alice@e2e.test"})
        password = self.post(
            f"/api/v1/mailboxes/{mailbox['id']}/passwords", {"name": "mua", "scopes": ["smtp"]}
        )["password"]
        key = self.post("/api/v1/dkim", {"domain": "e2e.test"})
        self.assertEqual(key["dns"]["name"], "zpr1._domainkey.e2e.test")

        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
            client.ehlo("client.test")
            self.assertEqual(client.esmtp_features["auth"].split(), ["PLAIN", "LOGIN"])
            client.login("alice@e2e.test", password)
            refused = client.sendmail(
                "alice@e2e.test",
                ["someone@remote.test"],
                b"From: alice@e2e.test\r\nSubject: over 587\r\n\r\nHi.\r\n",
            )
            self.assertEqual(refused, {})

        sent = self.post(
            f"/api/v1/mailboxes/{mailbox['id']}/outbound",
            {"from": "alice@e2e.test", "to": ["someone@remote.test"], "subject": "over REST"},
        )
        self.assertEqual(sent["subject"], "over REST")

        status, body = server.http("GET", f"/api/v1/mailboxes/{mailbox['id']}/messages")
        self.assertEqual(status, 200, body)
        views = json.loads(body)["data"]
        self.assertEqual(sorted(v["message"]["subject"] for v in views), ["over 587", "over REST"])
        for view in views:
            self.assertTrue(view["mailbox_message"]["read"])
            status, raw = server.http(
                "GET", f"/api/v1/messages/{view['mailbox_message']['id']}/raw"
            )
            self.assertEqual(status, 200)
            self.assertTrue(raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), raw[:100])
