"""Sieve end to end in a real ``twistd -n haitatsu``: a script put over REST files mail sent with
smtplib into its folder with its flags (seen over IMAP), and the ManageSieve listener of the
hub takes a script from a client."""

from __future__ import annotations

import base64
import imaplib
import json
import os
import socket

from twisted.trial import unittest

from tests.e2e.test_mail_loop import ServerProcess, config_text, free_port

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@mx.test.example>\r\n"
    b"Subject: [acme] release\r\n"
    b"List-Id: Acme <acme.lists.sender.test>\r\n"
    b"\r\n"
    b"Version 2 is out.\r\n"
)

SCRIPT = """require ["fileinto", "imap4flags", "variables", "mailbox"];
if header :matches "List-Id" "*<*.lists.*>" {
    addflag "\\\\Flagged";
    fileinto :create :flags ["\\\\Flagged", "$list"] "Lists/${2}";
    stop;
}
"""


class SieveEndToEndTests(unittest.TestCase):
    timeout = 90

    def setUp(self):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        ports = {key: free_port() for key in ("http", "smtp", "imap", "pop3", "sieve")}
        self.node = ServerProcess(workdir, ports)
        text = config_text(ports, 1_000_000, "data") + (
            'filters = new Listing { new { name = "sieve" } }\n'
            f'managesieve {{ addr = "127.0.0.1:{ports["sieve"]}" }}\n'
        )
        self.node.write_config(0, text)
        self.addCleanup(self.node.stop)
        self.node.start()
        status, body = self.node.http(
            "POST", "/api/v1/mailboxes", {"primary_address": "bob@mx.test.example"}
        )
        self.assertEqual(status, 201, body)
        self.mailbox_id = json.loads(body)["data"]["id"]

    def password(self, scope: str) -> str:
        status, body = self.node.http(
            "POST",
            f"/api/v1/mailboxes/{self.mailbox_id}/passwords",
            {"name": scope, "scopes": [scope]},
        )
        self.assertEqual(status, 201, body)
        return json.loads(body)["data"]["password"]

    def test_script_over_rest_files_mail_with_flags(self):
        node = self.node
        status, body = node.http(
            "PUT",
            f"/api/v1/mailboxes/{self.mailbox_id}/sieve/lists",
            {"content": SCRIPT, "active": True},
        )
        self.assertEqual(status, 201, body)
        with node.smtp() as client:
            self.assertEqual(
                client.sendmail("alice@sender.test", ["bob@mx.test.example"], MESSAGE), {}
            )
        imap = imaplib.IMAP4("127.0.0.1", node.ports["imap"])
        try:
            imap.login("bob@mx.test.example", self.password("imap"))
            status, [count] = imap.select("INBOX")
            self.assertEqual(count, b"0")
            status, [count] = imap.select("Lists/acme")
            self.assertEqual((status, count), ("OK", b"1"))
            status, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            flags = data[0][0].decode()
            self.assertIn("\\Flagged", flags)
            self.assertIn("$list", flags)
            self.assertIn(b"[acme] release", data[0][1])
        finally:
            imap.logout()

    def test_managesieve_listener(self):
        password = self.password("sieve")
        with socket.create_connection(("127.0.0.1", self.node.ports["sieve"]), timeout=10) as s:
            f = s.makefile("rb")

            def until_status():
                lines = []
                while True:
                    line = f.readline()
                    lines.append(line)
                    if not line or line.split(b" ", 1)[0].strip() in (b"OK", b"NO", b"BYE"):
                        return lines

            greeting = until_status()
            self.assertIn(b'"IMPLEMENTATION" "haitatsu"\r\n', greeting)
            token = base64.b64encode(f"\0bob@mx.test.example\0{password}".encode())
            s.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
            self.assertTrue(until_status()[-1].startswith(b"OK"))
            s.sendall(b'PUTSCRIPT "m" {5+}\r\nkeep;\r\nSETACTIVE "m"\r\nLOGOUT\r\n')
            self.assertEqual(until_status(), [b"OK\r\n"])
            self.assertEqual(until_status(), [b"OK\r\n"])
        status, body = self.node.http("GET", f"/api/v1/mailboxes/{self.mailbox_id}/sieve/m")
        self.assertEqual(json.loads(body)["data"]["active"], True)
