"""The parts of ACME mode that need no CA: challenge certificates, the TLS-ALPN-01 switch in a
handshake (in memory), the HTTP-01 answers, the cache and the ``tls.acme_*`` settings."""

from __future__ import annotations

import hashlib
import os
import stat

import attrs
from acme import messages
from cryptography import x509
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from haitatsu.acme import (
    ACME_IDENTIFIER_OID,
    ACMECache,
    ACMEManager,
    HTTP01Responder,
    TLSALPN01Responder,
    challenge_certificate,
    issuer_key,
)
from haitatsu.config.model import (
    Config,
    ConfigError,
    TLSConfig,
    acme_directory_url,
    acme_domains,
    restart_keys_changed,
)
from haitatsu.tls import CertificateSet, TLSService, load_pem_files
from tests.api.client import APIClient
from tests.tls.ca import TestCA
from tests.tls.test_certificates import temp_dir

NAME = "mail.example.test"
KEY_AUTHORIZATION = "token-abc.thumbprint-xyz"


def acme_config(cache_path: str = "/nonexistent", **tls) -> Config:
    tls.setdefault("acme_email", "postmaster@example.test")
    return Config.from_mapping(
        {
            "server": {"public_hostname": NAME},
            "tls": {"mode": "acme", "acme_cache_path": cache_path, **tls},
        }
    )


def handshake(server_context, name: str, alpn=None, max_version=SSL.TLS1_3_VERSION):
    """A client/server handshake in memory; (client connection, server connection)."""
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_context.set_max_proto_version(max_version)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(name.encode("ascii"))
    if alpn:
        client.set_alpn_protos(alpn)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    for _ in range(10):
        for one in (client, server):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    return client, server


class ChallengeCertificateTests(unittest.SynchronousTestCase):
    def test_rfc_8737_contents(self):
        cert, key = challenge_certificate(NAME, KEY_AUTHORIZATION)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), [NAME])
        identifier = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        self.assertTrue(identifier.critical)
        digest = hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()
        # DER OCTET STRING (tag 4, length 32) of the SHA-256 of the key authorization.
        self.assertEqual(identifier.value.value, b"\x04\x20" + digest)
        self.assertEqual(cert.public_key(), key.public_key())


class TLSALPNSwitchTests(unittest.SynchronousTestCase):
    """What a listener context does with ``acme-tls/1`` while a validation is pending."""

    def setUp(self):
        ca = TestCA(temp_dir(self))
        self.served = load_pem_files(*ca.issue("a", NAME)[:2])
        self.responder = TLSALPN01Responder()
        self.set = CertificateSet(self.served, alpn=self.responder.select)
        self.challenge, key = challenge_certificate(NAME, KEY_AUTHORIZATION)
        self.responder.add(NAME, self.challenge, key)

    def peer(self, client):
        return client.get_peer_certificate(as_cryptography=True)

    def test_acme_client_gets_the_challenge_certificate_alone_over_tls_1_3(self):
        client, _ = handshake(self.set.default_context, NAME, [b"acme-tls/1"])
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(client.get_alpn_proto_negotiated(), b"acme-tls/1")
        self.assertEqual(self.peer(client), self.challenge)
        self.assertEqual(client.get_peer_cert_chain(as_cryptography=True), [self.challenge])

    def test_acme_client_gets_the_challenge_certificate_over_tls_1_2(self):
        client, _ = handshake(
            self.set.default_context, NAME, [b"acme-tls/1"], max_version=SSL.TLS1_2_VERSION
        )
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2")
        self.assertEqual(client.get_alpn_proto_negotiated(), b"acme-tls/1")
        self.assertEqual(self.peer(client), self.challenge)

    def test_other_clients_are_untouched(self):
        for alpn in (None, [b"imap"], [b"h2", b"http/1.1"]):
            client, _ = handshake(self.set.default_context, NAME, alpn)
            self.assertEqual(self.peer(client), self.served.leaf)
            self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_acme_tls_for_a_name_without_a_pending_validation(self):
        client, _ = handshake(self.set.default_context, "other.example.test", [b"acme-tls/1"])
        self.assertEqual(self.peer(client), self.served.leaf)
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_removed_challenge_is_no_longer_answered(self):
        self.responder.remove(NAME)
        client, _ = handshake(self.set.default_context, NAME, [b"acme-tls/1"])
        self.assertEqual(self.peer(client), self.served.leaf)

    def test_before_any_certificate(self):
        # No set yet: connections start on the responder's context, which answers ACME only.
        service = TLSService(
            reactor, no_certificate_context=self.responder.no_certificate_context()
        )
        self.assertFalse(service.available)
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            client, _ = handshake(
                service.serverConnectionForTLS(None).get_context(),
                NAME,
                [b"acme-tls/1"],
                max_version=version,
            )
            self.assertEqual(self.peer(client), self.challenge)
        client, _ = handshake(service.serverConnectionForTLS(None).get_context(), NAME)
        self.assertNotEqual(self.peer(client), self.challenge)


class HTTP01Tests(unittest.TestCase):
    async def test_api_route_answers_pending_tokens_without_the_service_token(self):
        client = APIClient()
        path = "/.well-known/acme-challenge/tok_en-1"
        # Without ACME every token is unknown.
        answer = await client.get(path, auth=False)
        self.assertEqual(answer.status, 404)
        responder = HTTP01Responder()
        client.api.acme_http01 = responder
        responder.add("tok_en-1", KEY_AUTHORIZATION)
        answer = await client.get(path, auth=False)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, KEY_AUTHORIZATION.encode())
        self.assertEqual(answer.header("Content-Type"), "application/octet-stream")
        self.assertEqual((await client.get(path + "x", auth=False)).status, 404)
        responder.remove("tok_en-1")
        self.assertEqual((await client.get(path, auth=False)).status, 404)

    def test_responder_refuses_what_is_not_a_token(self):
        responder = HTTP01Responder()
        responder.add("abc", "x")
        self.assertEqual(responder.get("abc"), "x")
        for bad in ("", "../abc", "ab c", "abc/", "a" * 300):
            self.assertIsNone(responder.get(bad))


class CacheTests(unittest.SynchronousTestCase):
    def test_certmagic_layout(self):
        # The issuer key is CertMagic's (the original's): tls.storage.issuer's default.
        self.assertEqual(
            issuer_key("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory",
        )
        self.assertEqual(issuer_key("https://127.0.0.1:14000/dir"), "127.0.0.1-14000-dir")
        cache = ACMECache("/c", "https://ca.test/acme/directory", "Post.Master@example.test")
        self.assertEqual(
            cache.certificate_paths("Mail.Example.Test"),
            tuple(
                f"/c/certificates/ca.test-acme-directory/mail.example.test/mail.example.test{x}"
                for x in (".crt", ".key", ".json")
            ),
        )
        self.assertEqual(
            cache._account_paths()[0],
            "/c/acme/ca.test-acme-directory/users/post.master@example.test/post.master.key",
        )

    def test_files_are_private_and_replaced_whole(self):
        root = temp_dir(self)
        ca = TestCA(os.path.join(root, "ca"))
        cache = ACMECache(os.path.join(root, "cache"), "https://ca.test/dir", "a@example.test")
        self.assertIsNone(cache.load_certificate(NAME))
        cert_file, key_file, serial = ca.issue("a", NAME)
        with open(cert_file, "rb") as c, open(key_file, "rb") as k:
            chain, key = c.read(), k.read()
        cache.save_certificate(NAME, chain, key, "https://ca.test/cert/1")
        self.assertEqual(cache.load_certificate(NAME).serial, serial)
        for path in cache.certificate_paths(NAME):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        directory = os.path.dirname(cache.certificate_paths(NAME)[0])
        self.assertEqual(
            sorted(os.listdir(directory)), [f"{NAME}.crt", f"{NAME}.json", f"{NAME}.key"]
        )
        # The account key is made once and then reused.
        first = cache.account_key()
        self.assertEqual(cache.account_key().private_numbers(), first.private_numbers())
        self.assertEqual(stat.S_IMODE(os.stat(cache._account_paths()[0]).st_mode), 0o600)

    def test_unusable_cached_certificate_is_logged_and_ordered_again(self):
        root = temp_dir(self)
        ca = TestCA(os.path.join(root, "ca"))
        config = acme_config(os.path.join(root, "cache"))
        cache = ACMECache(config.tls.acme_cache_path, acme_directory_url(config.tls), "x")
        cert_file, _, _ = ca.issue("a", NAME)
        _, other_key, _ = ca.issue("b", NAME)
        with open(cert_file, "rb") as c, open(other_key, "rb") as k:
            cache.save_certificate(NAME, c.read(), k.read(), "u")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = TLSService.from_config(config, reactor)
        self.assertFalse(service.available)
        self.assertEqual(service.acme.due(), [NAME])
        (error,) = [e for e in events if e.get("domain") == NAME]
        self.assertIn("does not belong to the certificate", error["error"])


class ScheduleTests(unittest.SynchronousTestCase):
    def manager(self, **tls) -> ACMEManager:
        return TLSService.from_config(acme_config(**tls), reactor).acme

    def test_due_when_missing_expiring_or_for_another_name(self):
        root = temp_dir(self)
        ca = TestCA(root)
        imap = "imap.example.test"
        manager = self.manager(acme_domains=[imap], acme_renew_before_days=30)
        self.assertEqual(manager.due(), [NAME, imap])

        def issue(name, valid_days, age_days):
            cert = ca.issue("x", name, valid_days=valid_days, age_days=age_days)
            return load_pem_files(*cert[:2])

        # 90-day certificates: renewed with 30 days left.
        manager.certificates[NAME] = issue(NAME, 31, 59)
        manager.certificates[imap] = issue(imap, 29, 61)
        self.assertEqual(manager.due(), [imap])
        # Short-lived ones with a third of their lifetime left (6 days: 2).
        manager.certificates[imap] = issue(imap, 2.5, 3.5)
        self.assertEqual(manager.due(), [])
        manager.certificates[imap] = issue(imap, 1.5, 4.5)
        self.assertEqual(manager.due(), [imap])
        # A certificate that does not cover the name (the config changed) is replaced.
        manager.certificates[NAME] = issue("other.test", 60, 1)
        self.assertEqual(manager.due(), [NAME, imap])

    def authorization(self, *types):
        return messages.AuthorizationResource(
            uri="https://ca.test/authz/1",
            body=messages.Authorization.from_json(
                {
                    "identifier": {"type": "dns", "value": NAME},
                    "status": "pending",
                    "challenges": [
                        {
                            "type": t,
                            "url": f"https://ca.test/chall/{t}",
                            "token": "a" * 43,
                            "status": "pending",
                        }
                        for t in types
                    ],
                }
            ),
        )

    def test_challenge_choice(self):
        authz = self.authorization("dns-01", "tls-alpn-01", "http-01")
        manager = self.manager()
        self.assertEqual(manager._choose(NAME, authz)[0], "http-01")
        # After HTTP-01 failed validation, the next order tries TLS-ALPN-01; once both
        # failed, the preferred one again.
        manager._failed_types[NAME] = {"http-01"}
        self.assertEqual(manager._choose(NAME, authz)[0], "tls-alpn-01")
        manager._failed_types[NAME] = {"http-01", "tls-alpn-01"}
        self.assertEqual(manager._choose(NAME, authz)[0], "http-01")
        self.assertNotIn(NAME, manager._failed_types)
        # A dedicated listener for TLS-ALPN-01 only puts it first.
        self.assertEqual(
            self.manager(acme_tls_alpn_port=8443)._choose(NAME, authz)[0], "tls-alpn-01"
        )
        self.assertEqual(
            self.manager(acme_disable_http_challenge=True)._choose(NAME, authz)[0],
            "tls-alpn-01",
        )
        with self.assertRaises(Exception) as caught:
            self.manager()._choose(NAME, self.authorization("dns-01"))
        self.assertIn("the CA offers dns-01, none of which is enabled", str(caught.exception))


class SettingsTests(unittest.SynchronousTestCase):
    def test_directory_names_and_domains(self):
        config = acme_config(acme_domains=["IMAP.Example.Test.", NAME])
        self.assertEqual(acme_domains(config), (NAME, "imap.example.test"))
        for name, url in (
            ("", "https://acme-v02.api.letsencrypt.org/directory"),
            ("letsencrypt-staging", "https://acme-staging-v02.api.letsencrypt.org/directory"),
            ("https://ca.test/dir", "https://ca.test/dir"),
        ):
            self.assertEqual(acme_directory_url(acme_config(acme_ca=name).tls), url)

    def test_refused_settings_name_the_key(self):
        for tls, message in (
            ({"acme_email": ""}, "tls.acme_email: an email address is required"),
            ({"acme_ca": "zerossl"}, "external account binding"),
            ({"acme_ca": "http://ca.test/dir"}, "tls.acme_ca: expected an https://"),
            ({"acme_domains": ["*.example.test"]}, "tls.acme_domains: '*.example.test'"),
            ({"acme_domains": ["192.0.2.1"]}, "tls.acme_domains: '192.0.2.1'"),
            (
                {"acme_disable_http_challenge": True, "acme_disable_tls_alpn_challenge": True},
                "at least one challenge type must stay enabled",
            ),
            ({"acme_http_port": -1}, "tls.acme_http_port"),
        ):
            with self.assertRaises(ConfigError) as caught:
                acme_config(**tls)
            self.assertIn(message, str(caught.exception))
        # A public hostname that is not a DNS name cannot be certified either.
        with self.assertRaises(ConfigError) as caught:
            Config.from_mapping(
                {
                    "server": {"public_hostname": "localhost"},
                    "tls": {"mode": "acme", "acme_email": "a@example.test"},
                }
            )
        self.assertIn("server.public_hostname: 'localhost' cannot be", str(caught.exception))

    def test_every_acme_key_is_restart_only(self):
        base = acme_config()
        for key, value in (
            ("acme_email", "b@example.test"),
            ("acme_ca", "https://ca.test/dir"),
            ("acme_http_port", 80),
            ("acme_tls_alpn_port", 443),
            ("acme_listen_host", "::"),
            ("acme_domains", ("x.example.test",)),
            ("acme_ca_file", "/ca.pem"),
            ("acme_renew_before_days", 10),
            ("acme_check_interval_minutes", 5),
            ("acme_disable_http_challenge", True),
        ):
            changed = attrs.evolve(base, tls=attrs.evolve(base.tls, **{key: value}))
            self.assertEqual(restart_keys_changed(base, changed), [f"tls.{key}"])

    def test_dedicated_listener_endpoints(self):
        self.assertEqual(TLSConfig().acme_endpoint(80, "k"), "tcp:80")
        self.assertEqual(
            TLSConfig(acme_listen_host="192.0.2.1").acme_endpoint(80, "k"),
            "tcp:80:interface=192.0.2.1",
        )
        self.assertEqual(
            TLSConfig(acme_listen_host="::").acme_endpoint(443, "k"),
            "tcp6:443:interface=\\:\\:",
        )
