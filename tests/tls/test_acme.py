"""ACME end to end: the whole server (``HaitatsuService``) against Debian's pebble on loopback.

Each test starts a fresh pebble whose validation ports are our listeners' ports, so pebble
really fetches the HTTP-01 answer from the REST API listener or a dedicated one, and really
handshakes with ``acme-tls/1`` on the IMAPS listener or a dedicated one. Clients then check
what a running listener serves by verifying the chain against pebble's root, the way a mail
client would.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from service_identity.pyopenssl import verify_hostname
from twisted.internet import reactor, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from haitatsu.acme import ACMECache
from haitatsu.config.loader import load_config
from haitatsu.hub import HaitatsuService
from tests.config.test_loader import ConfigFileMixin
from tests.tls.ca import TestCA
from tests.tls.pebble import Pebble, free_port, pebble_missing

NAME = "mail.acme.test"
OTHER = "imap.acme.test"

CONFIG = """
server {{ api_addr = "127.0.0.1:{api}"; public_hostname = "{name}"; data_dir = "data" }}
smtp {{ inbound_addr = "127.0.0.1:{smtp}" }}
imap {{ addr = "127.0.0.1:{imap}"; tls_addr = "127.0.0.1:{imaps}" }}
pop3 {{ addr = "" }}
submission {{ starttls_addr = ""; tls_addr = "" }}
workers {{ enabled = false }}
tls {{
  mode = "acme"
  acme_email = "postmaster@acme.test"
  acme_ca = "{directory}"
  acme_ca_file = "{ca_file}"
  acme_cache_path = "cache"
{extra}
}}
"""


class ACMETestCase(ConfigFileMixin, unittest.TestCase):
    timeout = 120
    skip = pebble_missing()

    def setUp(self):
        self.dir = self.temp_dir()
        self.ports = {key: free_port() for key in ("api", "smtp", "imap", "imaps")}
        self.path = os.path.join(self.dir, "haitatsu.pkl")
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def start_pebble(self, http_port: int, tls_port: int) -> Pebble:
        pebble = Pebble(os.path.join(self.dir, "pebble"), http_port, tls_port)
        os.makedirs(pebble.directory, exist_ok=True)
        self.addCleanup(threads.deferToThread, pebble.stop)
        await threads.deferToThread(pebble.start)
        self.pebble = pebble
        return pebble

    def configure(self, directory: str, ca_file: str, **extra) -> None:
        lines = []
        for key, value in extra.items():
            if isinstance(value, bool):
                lines.append(f"  {key} = {str(value).lower()}")
            elif isinstance(value, int):
                lines.append(f"  {key} = {value}")
            elif isinstance(value, (list, tuple)):
                items = " ".join(f'"{v}"' for v in value)
                lines.append(f"  {key} {{ {items} }}")
            else:
                lines.append(f'  {key} = "{value}"')
        with open(self.path, "w") as f:
            f.write(
                CONFIG.format(
                    name=NAME,
                    directory=directory,
                    ca_file=ca_file,
                    extra="\n".join(lines),
                    **self.ports,
                )
            )

    async def start_hub(self, retry_seconds: float | None = None) -> HaitatsuService:
        hub = HaitatsuService(self.path, load_config(self.path), reactor)
        if retry_seconds is not None:
            hub.tls.acme.retry_base_seconds = retry_seconds
        checked = hub.tls.acme.checked
        hub.privilegedStartService()
        hub.startService()
        self.addCleanup(hub.stopService)
        await hub.ready
        self.first_check = checked
        return hub

    async def issued(self, hub: HaitatsuService) -> None:
        """Wait for the first check and fail with the reasons (ours and pebble's) if any name
        could not be certified."""
        await self.first_check
        manager = hub.tls.acme
        if manager.failures:
            errors = [e.get("reason") for e in self.events if "reason" in e and "domain" in e]
            self.fail(f"ACME failed: {errors}\npebble log:\n{self.pebble.log()[-3000:]}")

    def cache(self, directory_url: str) -> ACMECache:
        return ACMECache(os.path.join(self.dir, "cache"), directory_url, "postmaster@acme.test")

    # -- clients -------------------------------------------------------------------------------

    async def pebble_roots(self) -> str:
        """A CA file with this pebble run's root (what a client trusts)."""
        root = await threads.deferToThread(self.pebble.root)
        path = os.path.join(self.dir, "pebble-root.pem")
        with open(path, "wb") as f:
            f.write(root.public_bytes(serialization.Encoding.PEM))
        return path

    def imaps_chain(self, name: str, ca_file: str) -> list[x509.Certificate]:
        """The chain the IMAPS listener serves for ``name``, verified against ``ca_file`` and
        for the name (blocking)."""
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.load_verify_locations(ca_file)
        context.set_verify(SSL.VERIFY_PEER)
        with socket.create_connection(("127.0.0.1", self.ports["imaps"]), timeout=10) as sock:
            sock.setblocking(True)  # pyOpenSSL wants a blocking socket
            connection = SSL.Connection(context, sock)
            connection.set_tlsext_host_name(name.encode("ascii"))
            connection.set_connect_state()
            connection.do_handshake()
            verify_hostname(connection, name)
            chain = connection.get_peer_cert_chain(as_cryptography=True)
            connection.shutdown()
        return chain

    async def assert_served_by_pebble(self, name: str) -> x509.Certificate:
        """A verifying client on IMAPS gets a pebble-issued certificate for ``name`` with
        pebble's intermediate in the chain; returns the leaf."""
        roots = await self.pebble_roots()
        chain = await threads.deferToThread(self.imaps_chain, name, roots)
        intermediate = await threads.deferToThread(self.pebble.intermediate)
        leaf = chain[0]
        self.assertEqual(leaf.issuer, intermediate.subject)
        leaf.verify_directly_issued_by(intermediate)
        self.assertEqual(chain[1], intermediate)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), [name])
        return leaf

    def serial_unverified(self, name: str) -> int:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.ports["imaps"]), timeout=10) as sock:
            with context.wrap_socket(sock, server_hostname=name) as tls:
                der = tls.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    def orders(self) -> list[dict]:
        return [e for e in self.events if e.get("log_format", "").startswith("ACME: ordering")]


class ObtainTests(ACMETestCase):
    async def test_http01_on_the_api_listener(self):
        pebble = await self.start_pebble(http_port=self.ports["api"], tls_port=free_port())
        self.configure(pebble.directory_url, pebble.ca_file, acme_disable_tls_alpn_challenge=True)
        hub = await self.start_hub()
        await self.issued(hub)
        leaf = await self.assert_served_by_pebble(NAME)
        # Cached: the chain and a key that only the server's user can read.
        crt, key, meta = self.cache(pebble.directory_url).certificate_paths(NAME)
        with open(crt, "rb") as f:
            self.assertEqual(x509.load_pem_x509_certificates(f.read())[0], leaf)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertTrue(os.path.exists(meta))
        account_keys = [
            os.path.join(root, f)
            for root, _, files in os.walk(os.path.join(self.dir, "cache", "acme"))
            for f in files
            if f.endswith(".key")
        ]
        self.assertEqual(len(account_keys), 1)
        self.assertEqual(stat.S_IMODE(os.stat(account_keys[0]).st_mode), 0o600)
        # The challenge answer was served once and is gone now.
        answered = [e for e in self.events if e.get("kind") == "http-01"]
        self.assertEqual(len(answered), 1)
        self.assertEqual(hub.tls.acme.http01._tokens, {})

    async def test_tls_alpn01_on_the_imaps_listener_then_starttls(self):
        # No certificate at all at start: the IMAPS listener answers only acme-tls/1
        # handshakes, SMTP offers no STARTTLS; after issuance both serve the new certificate.
        pebble = await self.start_pebble(http_port=free_port(), tls_port=self.ports["imaps"])
        self.configure(pebble.directory_url, pebble.ca_file, acme_disable_http_challenge=True)
        hub = await self.start_hub()
        self.assertFalse(hub.tls.available)

        def smtp_starttls(ca_file):
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as smtp:
                smtp.ehlo("client.test")
                if not smtp.has_extn("starttls"):
                    return None
                context = ssl.create_default_context(cafile=ca_file)
                smtp._host = NAME  # the name STARTTLS verifies (smtplib uses the host)
                smtp.starttls(context=context)
                return x509.load_der_x509_certificate(smtp.sock.getpeercert(binary_form=True))

        await self.issued(hub)
        self.assertTrue(hub.tls.available)
        leaf = await self.assert_served_by_pebble(NAME)
        roots = await self.pebble_roots()
        self.assertEqual(await threads.deferToThread(smtp_starttls, roots), leaf)
        answered = [e for e in self.events if e.get("kind") == "tls-alpn-01"]
        self.assertEqual(len(answered), 1)
        self.assertEqual(hub.tls.acme.alpn._challenges, {})

    async def test_dedicated_tls_alpn_listener_and_two_names(self):
        alpn_port = free_port()
        pebble = await self.start_pebble(http_port=free_port(), tls_port=alpn_port)
        self.configure(
            pebble.directory_url,
            pebble.ca_file,
            acme_tls_alpn_port=alpn_port,
            acme_listen_host="127.0.0.1",
            acme_domains=[OTHER],
        )
        hub = await self.start_hub()
        await self.issued(hub)
        # TLS-ALPN-01 went first: only its listener is dedicated.
        kinds = [e.get("kind") for e in self.events if "kind" in e]
        self.assertEqual(kinds, ["tls-alpn-01", "tls-alpn-01"])
        default = await self.assert_served_by_pebble(NAME)
        other = await self.assert_served_by_pebble(OTHER)
        self.assertNotEqual(default.serial_number, other.serial_number)
        # A client asking for no name or an unknown one gets the public hostname's.
        self.assertEqual(
            await threads.deferToThread(self.serial_unverified, "unknown.test"),
            default.serial_number,
        )

    async def test_dedicated_http_listener(self):
        http_port = free_port()
        pebble = await self.start_pebble(http_port=http_port, tls_port=free_port())
        self.configure(
            pebble.directory_url,
            pebble.ca_file,
            acme_http_port=http_port,
            acme_listen_host="127.0.0.1",
            acme_disable_tls_alpn_challenge=True,
        )
        hub = await self.start_hub()
        await self.issued(hub)
        await self.assert_served_by_pebble(NAME)


class CacheTests(ACMETestCase):
    async def test_second_start_uses_the_cache_without_the_ca(self):
        pebble = await self.start_pebble(http_port=self.ports["api"], tls_port=free_port())
        self.configure(pebble.directory_url, pebble.ca_file, acme_disable_tls_alpn_challenge=True)
        hub = await self.start_hub()
        await self.issued(hub)
        first = await self.assert_served_by_pebble(NAME)
        await hub.stopService()
        await threads.deferToThread(pebble.stop)
        self.assertEqual(len(self.orders()), 1)

        # The CA is gone; a new server on the same cache serves the same certificate at once
        # and orders nothing.
        hub = await self.start_hub()
        self.assertTrue(hub.tls.available)
        self.assertEqual(
            await threads.deferToThread(self.serial_unverified, NAME), first.serial_number
        )
        await self.first_check
        self.assertEqual(len(self.orders()), 1)
        self.assertEqual(hub.tls.acme.failures, {})

    async def test_expiring_cached_certificate_is_renewed_and_swapped(self):
        pebble = await self.start_pebble(http_port=self.ports["api"], tls_port=free_port())
        self.configure(pebble.directory_url, pebble.ca_file, acme_disable_tls_alpn_challenge=True)
        # A cached 90-day certificate from elsewhere with 5 days left (due: under 30).
        old_serial = self.write_cached_certificate(pebble.directory_url, valid_days=5)
        hub = await self.start_hub()
        # Served from the cache before the renewal finished...
        self.assertEqual(hub.tls.certificates.default.serial, old_serial)
        await self.issued(hub)
        # ...and the renewed certificate afterwards, on the same running listener.
        leaf = await self.assert_served_by_pebble(NAME)
        self.assertNotEqual(leaf.serial_number, old_serial)
        crt, _, _ = self.cache(pebble.directory_url).certificate_paths(NAME)
        with open(crt, "rb") as f:
            self.assertEqual(x509.load_pem_x509_certificates(f.read())[0], leaf)

    def write_cached_certificate(self, directory_url: str, valid_days: float) -> int:
        ca = TestCA(os.path.join(self.dir, "old-ca"))
        cert_file, key_file, serial = ca.issue(
            "old", NAME, valid_days=valid_days, age_days=90 - valid_days
        )
        crt, key, _ = self.cache(directory_url).certificate_paths(NAME)
        os.makedirs(os.path.dirname(crt))
        os.replace(cert_file, crt)
        os.replace(key_file, key)
        return serial


class FailureTests(ACMETestCase):
    async def test_ca_down_keeps_the_old_certificate_and_retries(self):
        # Nothing listens at the directory URL.
        directory_url = f"https://127.0.0.1:{free_port()}/dir"
        self.configure(directory_url, "", acme_disable_tls_alpn_challenge=True)
        old_serial = CacheTests.write_cached_certificate(self, directory_url, valid_days=5)
        hub = await self.start_hub(retry_seconds=0.2)
        await self.first_check
        manager = hub.tls.acme
        self.assertEqual(manager.failures, {NAME: 1})
        # Retried after the backoff, failing again.
        await manager.checked
        self.assertEqual(manager.failures, {NAME: 2})
        errors = [e for e in self.events if e.get("domain") == NAME and "reason" in e]
        self.assertEqual([e["attempt"] for e in errors], [1, 2])
        self.assertIn("cannot use the ACME server", errors[0]["reason"])
        self.assertIn("still serving the certificate", errors[0]["serving"])
        # The server is up and still serves the old certificate.
        self.assertEqual(await threads.deferToThread(self.serial_unverified, NAME), old_serial)
        self.assertTrue(hub.running)

    async def test_failed_validation_is_logged_with_the_reason(self):
        # pebble validates HTTP-01 on a port where nothing listens.
        pebble = await self.start_pebble(http_port=free_port(), tls_port=free_port())
        self.configure(pebble.directory_url, pebble.ca_file, acme_disable_tls_alpn_challenge=True)
        hub = await self.start_hub(retry_seconds=3600)
        await self.first_check
        self.assertEqual(hub.tls.acme.failures, {NAME: 1})
        (error,) = [e for e in self.events if e.get("domain") == NAME and "reason" in e]
        self.assertIn("validation of mail.acme.test failed", error["reason"])
        self.assertIn("http-01", error["reason"])
        self.assertIn("no certificate for it yet", error["serving"])
        self.assertFalse(hub.tls.available)
