"""The whole server with TLS: listeners wired by the hub, certificates re-read on reload."""

from __future__ import annotations

import imaplib
import os
import poplib
import signal
import socket
import ssl
import time
import warnings

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial import unittest

from haitatsu.config.loader import load_config
from haitatsu.config.watcher import ReloadError
from haitatsu.hub import HaitatsuService
from tests.config.test_loader import ConfigFileMixin
from tests.tls.ca import TLSFixture, common_name, peer_certificate

CONFIG = """
server {{ api_addr = "127.0.0.1:{api}"; public_hostname = "mail.example.test"; data_dir = "data" }}
smtp {{ inbound_addr = "127.0.0.1:{smtp}" }}
imap {{ addr = "127.0.0.1:{imap}"; tls_addr = "127.0.0.1:{imaps}" }}
pop3 {{ addr = "127.0.0.1:{pop3}"; tls_addr = "127.0.0.1:{pop3s}" }}
tls {{
  mode = "{mode}"
  cert_file = "ca/default/fullchain.pem"
  key_file = "ca/default/privkey.pem"
  certificates {{
    new {{ cert_file = "ca/other/fullchain.pem"; key_file = "ca/other/privkey.pem" }}
  }}
}}
"""


def free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class HubTLSTestCase(ConfigFileMixin, unittest.TestCase):
    timeout = 60
    mode = "manual"

    def setUp(self):
        self.dir = self.temp_dir()
        self.fixture = TLSFixture(os.path.join(self.dir, "ca"))
        api, smtp, imap, imaps, pop3, pop3s = free_ports(6)
        self.ports = {"imap": imap, "imaps": imaps, "pop3": pop3, "pop3s": pop3s, "smtp": smtp}
        self.path = os.path.join(self.dir, "haitatsu.pkl")
        with open(self.path, "w") as f:
            f.write(
                CONFIG.format(
                    api=api,
                    smtp=smtp,
                    imap=imap,
                    imaps=imaps,
                    pop3=pop3,
                    pop3s=pop3s,
                    mode=self.mode,
                )
            )

    async def start(self) -> HaitatsuService:
        hub = HaitatsuService(self.path, load_config(self.path), reactor)
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready
        return hub

    def serial(self, name=TLSFixture.DEFAULT_NAME, port_key="imaps") -> int:
        context = self.fixture.ca.client_context(name)
        with socket.create_connection(("127.0.0.1", self.ports[port_key]), timeout=10) as sock:
            with context.wrap_socket(sock) as tls:
                return peer_certificate(tls).serial_number

    async def serial_now(self, **kwargs) -> int:
        return await threads.deferToThread(self.serial, **kwargs)


class HubTLSTests(HubTLSTestCase):
    async def test_implicit_tls_listeners_and_starttls(self):
        await self.start()
        fixture = self.fixture

        def clients():
            imap_ctx = fixture.ca.client_context(TLSFixture.OTHER_NAME)
            with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=imap_ctx) as c:
                imaps = (common_name(peer_certificate(c.sock)), set(c.capabilities))
            with imaplib.IMAP4("127.0.0.1", self.ports["imap"]) as c:
                imap_plain = set(c.capabilities)
            pop_ctx = fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
            c = poplib.POP3_SSL("127.0.0.1", self.ports["pop3s"], context=pop_ctx, timeout=10)
            pop3s = (common_name(peer_certificate(c.sock)), c.capa())
            c.quit()
            c = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
            pop3_plain = c.capa()
            c.quit()
            return imaps, imap_plain, pop3s, pop3_plain

        imaps, imap_plain, pop3s, pop3_plain = await threads.deferToThread(clients)
        self.assertEqual(imaps[0], TLSFixture.OTHER_NAME)
        self.assertNotIn("STARTTLS", imaps[1])
        self.assertIn("AUTH=PLAIN", imaps[1])
        self.assertIn("LOGINDISABLED", imap_plain)
        self.assertEqual(pop3s[0], TLSFixture.DEFAULT_NAME)
        self.assertIn("USER", pop3s[1])
        self.assertIn("STLS", pop3_plain)
        self.assertNotIn("USER", pop3_plain)

    async def test_reload_rereads_the_same_files(self):
        hub = await self.start()
        self.assertEqual(await self.serial_now(), self.fixture.default_serial)
        _, _, renewed = self.fixture.ca.issue("default", TLSFixture.DEFAULT_NAME)
        # Replacing the files alone changes nothing for new connections...
        self.assertEqual(await self.serial_now(), self.fixture.default_serial)
        # ...the reload (here the admin API's path) does, with the config file unchanged.
        await hub.watcher.reload()
        self.assertEqual(await self.serial_now(), renewed)
        # The other certificate was re-read too and SNI still picks it.
        self.assertEqual(
            await self.serial_now(name=TLSFixture.OTHER_NAME), self.fixture.other_serial
        )

    async def test_sighup_rereads_the_files(self):
        await self.start()
        _, _, renewed = self.fixture.ca.issue("other", TLSFixture.OTHER_NAME)
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 20
        while await self.serial_now(name=TLSFixture.OTHER_NAME, port_key="pop3s") != renewed:
            if time.monotonic() > deadline:
                self.fail("the renewed certificate was not served after SIGHUP")
            await deferLater(reactor, 0.1, lambda: None)

    async def test_reload_refuses_an_expired_replacement(self):
        hub = await self.start()
        self.fixture.ca.issue("default", TLSFixture.DEFAULT_NAME, expired=True)
        with self.assertRaises(ReloadError) as caught:
            await hub.watcher.reload()
        self.assertIn("certificate is not valid now", str(caught.exception))
        self.assertIn("keeping the running certificate", str(caught.exception))
        self.assertEqual(await self.serial_now(), self.fixture.default_serial)

    async def test_reload_refuses_a_mismatched_key(self):
        hub = await self.start()
        self.fixture.ca.issue("elsewhere", "elsewhere.test")
        os.replace(
            os.path.join(self.dir, "ca", "elsewhere", "privkey.pem"),
            os.path.join(self.dir, "ca", "default", "privkey.pem"),
        )
        with self.assertRaises(ReloadError) as caught:
            await hub.watcher.reload()
        self.assertIn("does not belong", str(caught.exception))
        self.assertEqual(await self.serial_now(), self.fixture.default_serial)

    async def test_tls_1_1_is_refused_on_implicit_ports(self):
        await self.start()

        def handshake():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.maximum_version = ssl.TLSVersion.TLSv1_1
                context.minimum_version = ssl.TLSVersion.TLSv1
            with socket.create_connection(("127.0.0.1", self.ports["imaps"]), timeout=10) as s:
                context.wrap_socket(s, server_hostname=TLSFixture.DEFAULT_NAME)

        await self.assertFailure(threads.deferToThread(handshake), ssl.SSLError)
        # A TLS 1.2 client on the same port is fine.
        self.assertEqual(await self.serial_now(), self.fixture.default_serial)


class ExpiredAtStartTests(HubTLSTestCase):
    async def test_expired_certificate_is_served_and_fails_verification(self):
        # At start an expired certificate is served (logged as an error): for MTAs that do not
        # verify, encryption beats none; a verifying client rejects it, as it should.
        _, _, expired = self.fixture.ca.issue("default", TLSFixture.DEFAULT_NAME, expired=True)
        await self.start()
        failure = await self.assertFailure(
            threads.deferToThread(self.serial), ssl.SSLCertVerificationError
        )
        self.assertIn("certificate has expired", str(failure))


class TLSOffTests(HubTLSTestCase):
    mode = "off"

    async def test_implicit_tls_listeners_are_not_opened_and_login_is_plaintext(self):
        hub = await self.start()
        self.assertIsNone(hub.tls)
        names = {s.name for s in hub}
        self.assertIn("imap.addr", names)
        self.assertNotIn("imap.tls_addr", names)
        self.assertNotIn("pop3.tls_addr", names)

        def capabilities():
            with imaplib.IMAP4("127.0.0.1", self.ports["imap"]) as c:
                return set(c.capabilities)

        caps = await threads.deferToThread(capabilities)
        self.assertNotIn("LOGINDISABLED", caps)
        self.assertNotIn("STARTTLS", caps)
        self.assertIn("AUTH=PLAIN", caps)


class PerIPLimitWiringTests(HubTLSTestCase):
    async def test_the_listeners_of_a_protocol_share_one_count(self):
        hub = await self.start()

        def factory(name):
            found = hub.getServiceNamed(name).factory
            return getattr(found, "wrappedFactory", found)  # implicit TLS wraps it

        self.assertIs(factory("imap.addr").sessions, factory("imap.tls_addr").sessions)
        self.assertIs(factory("pop3.addr").sessions, factory("pop3.tls_addr").sessions)
        self.assertIsNot(factory("imap.addr").sessions, factory("pop3.addr").sessions)
        mx = factory("smtp.inbound_addr")
        self.assertIsNotNone(mx.message_rate)
        # A refused connection through the whole hub: the MX's limit is 20 by default.
        config = hub.get_config()
        self.assertEqual(config.limits.max_connections_per_ip, 20)

        def connect_all():
            sockets, replies = [], []
            for _ in range(21):
                s = socket.create_connection(("127.0.0.1", mx_port), timeout=10)
                sockets.append(s)
                replies.append(s.recv(200))
            for s in sockets:
                s.close()
            return replies

        mx_port = self.ports["smtp"]
        replies = await threads.deferToThread(connect_all)
        self.assertTrue(all(r.startswith(b"220 ") for r in replies[:20]), replies[:20])
        self.assertEqual(replies[20], b"421 4.7.0 too many connections from your address\r\n")
