"""Submission through the real hub (``HaitatsuService`` in-process, so ``haitatsu/hub.py``'s
wiring is what is tested), with real clients:

- smtplib ``SMTP_SSL`` on the implicit-TLS listener (``submission.tls_addr``) and ``starttls()``
  on 587, certificates from the test CA; AUTH refused before STARTTLS; swaks over STARTTLS;
- a message sent over 587 relayed by the queue to Debian's Postfix, and the copy Postfix stored
  verified with dkimpy against the key published by a ``twisted.names`` DNS server on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import smtplib
import socket
import subprocess
import tempfile
import urllib.request

import dkim
from twisted.internet import reactor, task, threads
from twisted.names import authority, common, dns, server
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.hub import HaitatsuService
from tests.config.test_loader import ConfigFileMixin
from tests.tls.ca import TLSFixture
from tests.tls.test_hub import free_ports

TOKEN = "hub-test-token"
DOMAIN = "example.test"
ADDRESS = f"alice@{DOMAIN}"

CONFIG = """
server {{ api_addr = "127.0.0.1:{api}"; public_hostname = "mail.example.test"; data_dir = "data" }}
smtp {{ inbound_addr = "" }}
imap {{ addr = "" }}
pop3 {{ addr = "" }}
submission {{ starttls_addr = "127.0.0.1:{starttls}"; tls_addr = "127.0.0.1:{implicit}" }}
tls {{
  mode = "manual"
  cert_file = "ca/default/fullchain.pem"
  key_file = "ca/default/privkey.pem"
}}
api {{ service_token = "{token}" }}
relay {{ addr = "{relay}" }}
workers {{ enabled = {workers} }}
"""


class HubSubmissionTestCase(ConfigFileMixin, unittest.TestCase):
    timeout = 120
    relay = ""
    workers = "false"

    def setUp(self):
        self.dir = self.temp_dir()
        self.fixture = TLSFixture(os.path.join(self.dir, "ca"))
        api, starttls, implicit = free_ports(3)
        self.ports = {"api": api, "starttls": starttls, "implicit": implicit}

    async def start(self) -> HaitatsuService:
        path = os.path.join(self.dir, "haitatsu.pkl")
        with open(path, "w") as f:
            f.write(
                CONFIG.format(token=TOKEN, relay=self.relay, workers=self.workers, **self.ports)
            )
        hub = HaitatsuService(path, load_config(path), reactor)
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready
        return hub

    def http(self, method: str, path: str, body=None):
        """A blocking REST call (run it in a thread): ``(status, parsed JSON)``."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['api']}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    async def call(self, method: str, path: str, body=None) -> dict:
        status, answer = await threads.deferToThread(self.http, method, path, body)
        self.assertIn(status, (200, 201), answer)
        return answer["data"]

    async def account(self) -> tuple[dict, str, dict]:
        """A mailbox, an smtp app password and the domain's DKIM key, all over REST."""
        mailbox = await self.call("POST", "/api/v1/mailboxes", {"primary_address": ADDRESS})
        password = (
            await self.call(
                "POST",
                f"/api/v1/mailboxes/{mailbox['id']}/passwords",
                {"name": "mua", "scopes": ["smtp"]},
            )
        )["password"]
        key = await self.call("POST", "/api/v1/dkim", {"domain": DOMAIN})
        return mailbox, password, key

    async def sent_subjects(self, mailbox_id: str) -> list[str]:
        views = await self.call("GET", f"/api/v1/mailboxes/{mailbox_id}/messages")
        return sorted(v["message"]["subject"] for v in views)


def message(subject: str) -> bytes:
    return (
        f"From: {ADDRESS}\r\nTo: bob@remote.test\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    ).encode()


class TLSSubmissionTests(HubSubmissionTestCase):
    async def test_smtp_ssl_on_465_and_starttls_on_587(self):
        await self.start()
        mailbox, password, _ = await self.account()
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
        ports = self.ports
        plain = base64.b64encode(f"\0{ADDRESS}\0{password}".encode()).decode()

        def implicit():
            with smtplib.SMTP_SSL(
                "127.0.0.1", ports["implicit"], context=context, timeout=10
            ) as client:
                client.ehlo("client.test")
                features = dict(client.esmtp_features)
                version = client.sock.version()
                client.login(ADDRESS, password)  # smtplib picks PLAIN
                refused = client.sendmail(ADDRESS, ["bob@remote.test"], message("over 465"))
            return features, version, refused

        def starttls():
            with smtplib.SMTP("127.0.0.1", ports["starttls"], timeout=10) as client:
                client.ehlo("client.test")
                before = dict(client.esmtp_features)
                early = client.docmd("AUTH", f"PLAIN {plain}")
                client.starttls(context=context)
                client.ehlo("client.test")
                after = dict(client.esmtp_features)
                auth = client.docmd("AUTH", f"PLAIN {plain}")
                refused = client.sendmail(ADDRESS, ["bob@remote.test"], message("over 587"))
            return before, early, after, auth, refused

        features, version, refused = await threads.deferToThread(implicit)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(features["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertNotIn("starttls", features)
        self.assertEqual(refused, {})

        before, early, after, auth, refused = await threads.deferToThread(starttls)
        self.assertIn("starttls", before)
        self.assertNotIn("auth", before)
        self.assertEqual(early[0], 530)
        self.assertTrue(early[1].startswith(b"5.7.0"), early)
        self.assertNotIn("starttls", after)
        self.assertEqual(after["auth"].split(), ["PLAIN", "LOGIN"])
        self.assertEqual(auth[0], 235, auth)
        self.assertEqual(refused, {})

        self.assertEqual(await self.sent_subjects(mailbox["id"]), ["over 465", "over 587"])

    async def test_swaks_starttls_auth_plain(self):
        if shutil.which("swaks") is None:
            raise unittest.SkipTest("Debian's swaks is not installed (apt-get install swaks)")
        await self.start()
        mailbox, password, _ = await self.account()
        # swaks takes any argument that starts with "-" for an option, even as the value of
        # --auth-password: give it a password that does not.
        for _ in range(50):
            if not password.startswith("-"):
                break
            password = (
                await self.call(
                    "POST",
                    f"/api/v1/mailboxes/{mailbox['id']}/passwords",
                    {"name": "swaks", "scopes": ["smtp"]},
                )
            )["password"]
        command = [
            "swaks",
            "--server", "127.0.0.1",
            "--port", str(self.ports["starttls"]),
            "--tls",
            "--auth", "PLAIN",
            "--auth-user", ADDRESS,
            "--auth-password", password,
            "--from", ADDRESS,
            "--to", "bob@remote.test",
            "--header", "Subject: from swaks",
            "--timeout", "10",
        ]  # fmt: skip
        result = await threads.deferToThread(
            subprocess.run, command, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("<-  220 2.0.0 ready to start TLS", result.stdout)
        self.assertIn('=== TLS peer DN="/CN=mail.example.test"', result.stdout)
        self.assertIn(" ~> AUTH PLAIN", result.stdout)  # "~>": sent inside TLS
        self.assertIn("<~  235 2.7.0", result.stdout)
        self.assertIn("<~  250 2.0.0 OK", result.stdout)
        self.assertEqual(await self.sent_subjects(mailbox["id"]), ["from swaks"])


# -- A test DNS server ---------------------------------------------------------------------


class Zone(authority.FileAuthority):
    """An authoritative zone from records given in code (no zone file)."""

    def __init__(self, origin: bytes, records: dict[bytes, list]):
        common.ResolverBase.__init__(self)
        self._cache = {}
        self.soa = (
            origin,
            dns.Record_SOA(mname=b"ns." + origin, rname=b"hostmaster." + origin, ttl=60),
        )
        self.records = {origin.lower(): [self.soa[1]]}
        for name, rrs in records.items():
            self.records[name.lower()] = rrs


def txt_record(value: str) -> dns.Record_TXT:
    """A TXT record holding ``value`` split into strings of at most 255 bytes (an RSA key's
    record is longer than one)."""
    data = value.encode()
    return dns.Record_TXT(*[data[i : i + 255] for i in range(0, len(data), 255)], ttl=60)


def dns_txt(port: int):
    """A synchronous dkimpy ``dnsfunc`` that asks the DNS server on 127.0.0.1:``port`` over UDP,
    messages encoded with ``twisted.names.dns``."""

    def query(name, timeout=5):
        if isinstance(name, str):
            name = name.encode()
        request = dns.Message(id=random.randrange(1, 65535), recDes=0)
        request.queries = [dns.Query(name.rstrip(b"."), dns.TXT, dns.IN)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(request.toStr(), ("127.0.0.1", port))
            answer = dns.Message()
            answer.fromStr(sock.recv(65535))
        assert answer.id == request.id and answer.rCode == dns.OK, answer
        for rr in answer.answers:
            if rr.type == dns.TXT:
                return b"".join(rr.payload.data)
        return None

    return query


class PublishedDKIMTests(HubSubmissionTestCase):
    workers = "true"

    def setUp(self):
        super().setUp()
        if shutil.which("postfix") is None:
            raise unittest.SkipTest("Debian's postfix is not installed (apt-get install postfix)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("a throwaway Postfix instance needs root")

    async def test_relayed_copy_verifies_against_published_dns(self):
        from bench.peers import Postfix

        workdir = tempfile.mkdtemp(prefix="haitatsu-postfix-")
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        postfix = Postfix(workdir, domain="remote.test")
        await threads.deferToThread(postfix.start)
        self.addCleanup(lambda: threads.deferToThread(postfix.stop))
        self.relay = f"127.0.0.1:{postfix.port}"

        await self.start()
        mailbox, password, key = await self.account()
        self.assertEqual(key["dns"]["name"], f"{key['selector']}._domainkey.{DOMAIN}")

        # Publish the record the API told us to publish, on a real DNS server.
        zone = Zone(
            DOMAIN.encode(), {key["dns"]["name"].encode(): [txt_record(key["dns"]["value"])]}
        )
        protocol = dns.DNSDatagramProtocol(controller=server.DNSServerFactory(authorities=[zone]))
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        dnsfunc = dns_txt(port.getHost().port)

        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
        starttls_port = self.ports["starttls"]

        def send():
            with smtplib.SMTP("127.0.0.1", starttls_port, timeout=10) as client:
                client.starttls(context=context)
                client.login(ADDRESS, password)
                return client.sendmail(ADDRESS, ["bob@remote.test"], message("through DNS"))

        self.assertEqual(await threads.deferToThread(send), {})

        new = os.path.join(postfix.maildir, "box", "new")
        for _ in range(300):  # the queue relays, then Postfix delivers from its queue
            if os.path.isdir(new) and os.listdir(new):
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        (name,) = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            delivered = f.read().replace(b"\n", b"\r\n")  # a maildir file has LF line ends
        self.assertIn(b"Subject: through DNS", delivered)
        self.assertIn(f"s={key['selector']}".encode(), delivered)

        # The record travels through the DNS server: dkimpy asks it, in a thread.
        published = await threads.deferToThread(dnsfunc, f"{key['selector']}._domainkey.{DOMAIN}.")
        self.assertEqual(published, key["dns"]["value"].encode())
        self.assertTrue(
            await threads.deferToThread(dkim.verify, delivered, dnsfunc=dnsfunc),
            "dkimpy did not verify the copy Postfix stored",
        )
        # A record that does not match fails, so the check above means something.
        zone.records[key["dns"]["name"].encode()] = [
            txt_record(key["dns"]["value"].rsplit("p=", 1)[0] + "p=" + "A" * 40)
        ]
        self.assertFalse(await threads.deferToThread(dkim.verify, delivered, dnsfunc=dnsfunc))
