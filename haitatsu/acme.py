"""Certificates from an ACME CA (RFC 8555): ``tls.mode = "acme"``.

``ACMEManager`` keeps one certificate per name (``server.public_hostname`` first, then
``tls.acme_domains``) under ``tls.acme_cache_path``, obtains the missing ones at start,
renews each when less than ``tls.acme_renew_before_days`` are left (checked at start and every
``tls.acme_check_interval_minutes``) and swaps every change into the ``TLSService``, so running
listeners serve it to their next connection without a restart.

The ACME protocol is certbot's ``acme`` library: maintained, RFC 8555 complete, and what
certbot runs against every public CA. It is blocking (``requests``), so each network round
trip, each key generation and each file write runs in the reactor's thread pool, one step at a
time; waiting between polls happens on the reactor, so a stop never waits for a poll loop.
(txacme, the Twisted-native client, speaks only ACME v1 and no longer imports.)

Challenges, answered while an order is pending:

- **HTTP-01**: ``GET /.well-known/acme-challenge/<token>`` on the REST API listener
  (``server.api_addr``), and on a dedicated listener when ``tls.acme_http_port`` is set.
- **TLS-ALPN-01** (RFC 8737): a handshake offering ALPN ``acme-tls/1`` for a name being
  validated gets a self-signed certificate carrying the ``acmeIdentifier`` extension, on every
  implicit-TLS listener (993, 995, 465) and on a dedicated listener when
  ``tls.acme_tls_alpn_port`` is set. certbot's library dropped its TLS-ALPN-01 helpers, so
  the challenge type and its certificate are defined here (with ``cryptography``).

A failure (CA unreachable, validation refused, rate limit) is logged with the CA's reason; the
certificates already served stay, and the name is tried again after 2, 4, 8 ... minutes (at
most 6 hours), with the other challenge type if one failed validation. The service never stops
because of ACME.

The cache follows CertMagic's file layout (what the original haitatsu used), so its
certificates and account are reused: ``certificates/<ca>/<name>/<name>.crt`` (the PEM chain),
``.key`` and ``.json``; the account key under ``acme/<ca>/users/<email>/``. Files are written
atomically (a temporary file renamed over the old one), private keys readable only by the
server's user.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
import urllib.parse

import josepy as jose
from acme import challenges, errors, messages
from acme import client as acme_client
from acme import crypto_util as acme_crypto
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from haitatsu import __version__
from haitatsu.config.model import acme_directory_url, acme_domains
from haitatsu.tls import (
    Certificate,
    CertificateError,
    CertificateSet,
    TLSService,
    certificate_from_pem,
    server_context,
)

#: The ALPN protocol of TLS-ALPN-01 (RFC 8737 section 6.2).
ACME_TLS_ALPN = b"acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
HTTP01_PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- TLS-ALPN-01 as an acme challenge type ------------------------------------------------------


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a TLS-ALPN-01 challenge: "ready to be validated"."""

    typ = "tls-alpn-01"


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's challenge: the key authorization goes in the challenge certificate."""

    typ = "tls-alpn-01"
    response_cls = TLSALPN01Response

    def validation(self, account_key, **kwargs):
        return self.key_authorization(account_key)


if "tls-alpn-01" not in challenges.Challenge.TYPES:
    challenges.Challenge.register(TLSALPN01)


def challenge_certificate(domain: str, key_authorization: str):
    """The self-signed certificate of a TLS-ALPN-01 validation of ``domain`` (RFC 8737
    section 3) and its key: the name as its only subject alternative name, and the SHA-256 of
    the key authorization in a critical ``acmeIdentifier`` extension. Blocking (key
    generation): call it from a thread."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=True)
        # The extension's value is the DER OCTET STRING of the digest.
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


# -- responders --------------------------------------------------------------------------------


class HTTP01Responder:
    """Key authorizations of the HTTP-01 challenges pending now, by token.

    Changed and read on the reactor thread only. ``resource()`` serves them on a dedicated
    listener; the REST API serves the same answers at the same path.
    """

    def __init__(self):
        self._tokens: dict[str, str] = {}

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    def get(self, token: str) -> str | None:
        """The key authorization for ``token``, or None (unknown, or not a token at all)."""
        if not _TOKEN.match(token):
            return None
        return self._tokens.get(token)

    def resource(self) -> Resource:
        return _HTTP01Resource(self)


class _HTTP01Resource(Resource):
    """Answers ``GET /.well-known/acme-challenge/<token>``; everything else is a 404."""

    isLeaf = True

    def __init__(self, responder: HTTP01Responder):
        super().__init__()
        self.responder = responder

    def render_GET(self, request):
        path = request.path.decode("ascii", "replace")
        answer = None
        if path.startswith(HTTP01_PREFIX):
            answer = self.responder.get(path[len(HTTP01_PREFIX) :])
        if answer is None:
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setResponseCode(404)
            return b"Not Found"
        # As in RFC 8555 section 8.3's example.
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return answer.encode("ascii")


class TLSALPN01Responder:
    """Challenge certificates of the TLS-ALPN-01 validations pending now, by name.

    ``select`` is the ALPN callback of every listener context: a client that offers
    ``acme-tls/1`` for a name being validated gets that name's challenge certificate, any other
    client is untouched. With TLS 1.3 (what CAs validate with) the connection moves to the
    challenge's own context, so the challenge certificate is sent alone; with TLS 1.2 OpenSSL
    has chosen the certificate before ALPN, so it is replaced on the connection (which works
    when the served certificate is also an EC key, as ACME's are).
    """

    _log = Logger()

    def __init__(self):
        self._challenges: dict[str, tuple[x509.Certificate, object, SSL.Context]] = {}
        self._no_certificate_context = None

    def add(self, domain: str, certificate: x509.Certificate, key) -> None:
        ctx = server_context()
        ctx.use_certificate(certificate)
        ctx.use_privatekey(key)
        ctx.set_alpn_select_callback(self.select)
        self._challenges[domain] = (certificate, key, ctx)

    def remove(self, domain: str) -> None:
        self._challenges.pop(domain, None)

    def select(self, connection: SSL.Connection, offered: list[bytes]):
        if ACME_TLS_ALPN not in offered:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        raw = connection.get_servername() or b""
        name = raw.decode("ascii", "replace").lower().rstrip(".")
        challenge = self._challenges.get(name)
        if challenge is None:
            self._log.info(
                "TLS-ALPN-01 handshake for {name}, which has no pending validation",
                name=name,
            )
            return SSL.NO_OVERLAPPING_PROTOCOLS
        certificate, key, ctx = challenge
        if connection.get_protocol_version() >= 0x0304:
            connection.set_context(ctx)
        else:
            connection.use_certificate(certificate)
            connection.use_privatekey(key)
        return ACME_TLS_ALPN

    def no_certificate_context(self) -> SSL.Context:
        """The context for TLS connections while no certificate exists yet, and of the
        dedicated listener: a throwaway self-signed certificate (so that TLS 1.2 handshakes
        get as far as ALPN) and ``select``. Built once."""
        if self._no_certificate_context is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "haitatsu acme")])
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .sign(key, hashes.SHA256())
            )
            ctx = server_context()
            ctx.use_certificate(cert)
            ctx.use_privatekey(key)
            ctx.set_alpn_select_callback(self.select)
            self._no_certificate_context = ctx
        return self._no_certificate_context


@implementer(IOpenSSLServerConnectionCreator)
class _ALPNConnections:
    """The ``IOpenSSLServerConnectionCreator`` of the dedicated TLS-ALPN-01 listener."""

    def __init__(self, responder: TLSALPN01Responder):
        self.responder = responder

    def serverConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self.responder.no_certificate_context(), None)


class _Hangup(Protocol):
    """What the dedicated TLS-ALPN-01 listener runs after the handshake: nothing. The CA
    closes the connection once it has seen the certificate; anyone else is cut off."""

    timeout = 10.0

    def connectionMade(self):
        self._call = self.factory.reactor.callLater(self.timeout, self.transport.abortConnection)

    def connectionLost(self, reason):
        if self._call.active():
            self._call.cancel()


# -- the cache ---------------------------------------------------------------------------------


def _safe(text: str) -> str:
    """CertMagic's ``KeyBuilder.Safe``: one storage path component from a name."""
    text = text.strip().lower()
    for old, new in ((" ", "_"), ("+", "_plus_"), ("*", "wildcard_"), (":", "-"), ("..", "")):
        text = text.replace(old, new)
    return re.sub(r"[^\w@.-]", "", text)


def issuer_key(directory_url: str) -> str:
    """CertMagic's name for a CA: host (and port) plus the directory path, with dashes."""
    parts = urllib.parse.urlsplit(directory_url)
    key = parts.netloc
    path = parts.path.replace("/", "-").replace("\\", "-").strip("-")
    return _safe(f"{key}-{path}" if path else key)


def _write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class ACMECache:
    """Account key and certificates of one CA under ``tls.acme_cache_path`` (blocking file
    access: call from a thread, or before the reactor runs)."""

    def __init__(self, root: str, directory_url: str, email: str):
        self.root = root
        self.directory_url = directory_url
        self.email = email
        self.issuer = issuer_key(directory_url)

    def certificate_paths(self, domain: str) -> tuple[str, str, str]:
        name = _safe(domain)
        base = os.path.join(self.root, "certificates", self.issuer, name, name)
        return base + ".crt", base + ".key", base + ".json"

    def load_certificate(self, domain: str) -> Certificate | None:
        """The cached certificate for ``domain``; None when there is none. Raises
        ``CertificateError`` when the files are there but unusable."""
        crt, key, _ = self.certificate_paths(domain)
        try:
            with open(crt, "rb") as f:
                chain = f.read()
            with open(key, "rb") as f:
                key_pem = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CertificateError(f"{crt}: cannot read: {e.strerror}") from None
        return certificate_from_pem(chain, key_pem, source=crt)

    def save_certificate(self, domain: str, chain_pem: bytes, key_pem: bytes, url: str) -> None:
        crt, key, meta = self.certificate_paths(domain)
        # The key first: a crash between the two leaves a new key with the old chain, which
        # loading rejects (the key does not match), and the name is ordered again.
        _write_atomically(key, key_pem)
        _write_atomically(crt, chain_pem)
        issuer_data = {"url": url, "ca": self.directory_url}
        _write_atomically(meta, json.dumps({"sans": [domain], "issuer_data": issuer_data}).encode())

    def _account_paths(self) -> tuple[str, str]:
        user = self.email.split("@", 1)[0] if "@" in self.email else (self.email or "default")
        base = os.path.join(
            self.root, "acme", self.issuer, "users", _safe(self.email or "default"), _safe(user)
        )
        return base + ".key", base + ".json"

    def account_key(self):
        """The account's private key, made (EC P-256) and saved the first time."""
        path, _ = self._account_paths()
        try:
            with open(path, "rb") as f:
                return serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError:
            pass
        key = ec.generate_private_key(ec.SECP256R1())
        _write_atomically(path, _key_pem(key))
        return key

    def save_account(self, location: str) -> None:
        _, path = self._account_paths()
        body = {
            "status": "valid",
            "contact": [f"mailto:{self.email}"] if self.email else [],
            "termsOfServiceAgreed": True,
            "location": location,
        }
        _write_atomically(path, json.dumps(body).encode())


# -- the manager -------------------------------------------------------------------------------


class ACMEError(Exception):
    """An issuance that did not work, with the reason to log."""


HTTP01 = "http-01"
TLSALPN01_TYPE = "tls-alpn-01"


class ACMEManager(MultiService):
    """Obtains and renews the certificates and keeps the ``TLSService`` serving them.

    A child of the ``TLSService`` (so it starts and stops with it); its own children are the
    dedicated challenge listeners, if configured.
    """

    name = "acme"
    _log = Logger()

    #: First retry delay after a failure (doubled per failure in a row), and the most.
    retry_base_seconds = 120.0
    retry_max_seconds = 6 * 3600.0
    #: How long to wait for the CA to validate or to issue, and between two polls.
    poll_deadline_seconds = 120.0
    poll_interval_seconds = 1.0
    #: Per network round trip.
    network_timeout_seconds = 30

    def __init__(self, config, tls: TLSService, reactor, cached: dict[str, Certificate]):
        super().__init__()
        settings = config.tls
        self.reactor = reactor
        self.tls = tls
        self.domains = acme_domains(config)
        self.directory_url = acme_directory_url(settings)
        self.email = settings.acme_email
        self.ca_file = settings.acme_ca_file
        self.renew_before = datetime.timedelta(days=settings.acme_renew_before_days)
        self.check_interval = settings.acme_check_interval_minutes * 60.0
        self.cache = ACMECache(settings.acme_cache_path, self.directory_url, self.email)
        self.http01 = HTTP01Responder()
        self.alpn = TLSALPN01Responder()
        self.challenge_types = self._challenge_order(settings)
        #: The certificate served for each name, from the cache or an issuance.
        self.certificates: dict[str, Certificate] = dict(cached)
        #: Consecutive failures per name, and the challenge types that failed validation.
        self.failures: dict[str, int] = {}
        self._failed_types: dict[str, set[str]] = {}
        self._next_check = None
        self._checking = None
        #: Fired with None after each check (tests wait on it); replaced each time.
        self.checked = defer.Deferred()
        if settings.acme_http_port:
            self._listen(
                settings.acme_endpoint(settings.acme_http_port, "tls.acme_http_port"),
                Site(self.http01.resource()),
                "tls.acme_http_port",
            )
        if settings.acme_tls_alpn_port:
            hangup = Factory.forProtocol(_Hangup)
            hangup.reactor = reactor
            self._listen(
                settings.acme_endpoint(settings.acme_tls_alpn_port, "tls.acme_tls_alpn_port"),
                TLSMemoryBIOFactory(_ALPNConnections(self.alpn), False, hangup),
                "tls.acme_tls_alpn_port",
            )

    @classmethod
    def tls_service(cls, config, reactor) -> TLSService:
        """The ``TLSService`` of ACME mode, serving what the cache holds (read now: blocking,
        before the reactor runs), with its manager as a child."""
        directory_url = acme_directory_url(config.tls)
        cache = ACMECache(config.tls.acme_cache_path, directory_url, config.tls.acme_email)
        cached = {}
        for domain in acme_domains(config):
            try:
                cert = cache.load_certificate(domain)
            except CertificateError as e:
                cls._log.error(
                    "ACME: cached certificate for {domain} is unusable, ordering a new one: "
                    "{error}",
                    domain=domain,
                    error=str(e),
                )
                continue
            if cert is not None:
                cached[domain] = cert
        service = TLSService(reactor)
        manager = cls(config, service, reactor, cached)
        service._no_certificate_context = manager.alpn.no_certificate_context()
        service.acme = manager
        manager.setServiceParent(service)
        manager.install("loaded")
        return service

    @staticmethod
    def _challenge_order(settings) -> list[str]:
        order = []
        if not settings.acme_disable_http_challenge:
            order.append(HTTP01)
        if not settings.acme_disable_tls_alpn_challenge:
            order.append(TLSALPN01_TYPE)
        # A dedicated listener for only one of them says which one the CA can reach.
        if settings.acme_tls_alpn_port and not settings.acme_http_port:
            order.sort(key=lambda t: t != TLSALPN01_TYPE)
        return order

    def _listen(self, endpoint: str, factory, name: str) -> None:
        service = strports.service(endpoint, factory)
        service.setName(name)
        service.setServiceParent(self)

    # -- serving -------------------------------------------------------------------------------

    def install(self, verb: str) -> None:
        """Swap the certificates held now into the ``TLSService`` (the public hostname's as
        the default, the others chosen by SNI)."""
        certs = [self.certificates[d] for d in self.domains if d in self.certificates]
        if not certs:
            return
        new = CertificateSet(certs[0], certs[1:], alpn=self.alpn.select)
        self.tls.swap(new)
        self.tls.report(new, verb)

    def due(self, now: datetime.datetime | None = None) -> list[str]:
        """The names whose certificate is missing, does not cover the name, or has less than
        ``renew_before`` left, or less than a third of its lifetime for short-lived
        certificates (as CertMagic does: a 6-day certificate is renewed with 2 days left)."""
        now = now or _now()
        out = []
        for domain in self.domains:
            cert = self.certificates.get(domain)
            if cert is None or not cert.matches(domain):
                out.append(domain)
                continue
            threshold = min(self.renew_before, (cert.not_after - cert.not_before) / 3)
            if cert.not_after - now < threshold:
                out.append(domain)
        return out

    # -- the schedule --------------------------------------------------------------------------

    def startService(self):
        super().startService()
        self._schedule(0)

    def stopService(self):
        stopped = super().stopService()  # not running any more: nothing is rescheduled
        if self._next_check is not None and self._next_check.active():
            self._next_check.cancel()
        self._next_check = None
        if self._checking is not None:
            self._checking.cancel()
        return stopped

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        self._next_check = self.reactor.callLater(delay, self._run_check)

    def _run_check(self):
        self._next_check = None
        self._checking = defer.Deferred.fromCoroutine(self.check())
        self._checking.addErrback(self._check_crashed)
        self._checking.addBoth(self._checked)

    def _check_crashed(self, failure):
        if not failure.check(defer.CancelledError):
            self._log.failure("ACME: certificate check failed unexpectedly", failure)

    def _checked(self, _):
        self._checking = None
        delay = self.check_interval or 12 * 3600.0
        if self.failures:
            worst = max(self.failures.values())
            delay = min(self.retry_base_seconds * 2 ** (worst - 1), self.retry_max_seconds)
        self._schedule(delay)
        checked, self.checked = self.checked, defer.Deferred()
        checked.callback(None)

    async def check(self) -> None:
        """Obtain every due certificate, one name at a time; log and count failures."""
        due = self.due()
        if not due:
            return
        try:
            client = await self._thread(self._connect)
        except defer.CancelledError:
            raise
        except Exception as e:
            for domain in due:
                self._failed(domain, f"cannot use the ACME server {self.directory_url}: {e}")
            return
        for domain in due:
            try:
                await self._obtain(client, domain)
            except defer.CancelledError:
                raise
            except Exception as e:
                self._failed(domain, _reason(e))
            else:
                self.failures.pop(domain, None)

    def _failed(self, domain: str, reason: str) -> None:
        self.failures[domain] = self.failures.get(domain, 0) + 1
        current = self.certificates.get(domain)
        self._log.error(
            "ACME: could not obtain a certificate for {domain} (attempt {attempt}): {reason}; "
            "{serving}",
            domain=domain,
            attempt=self.failures[domain],
            reason=reason,
            serving=(
                f"still serving the certificate that expires {current.not_after.isoformat()}"
                if current is not None
                else "no certificate for it yet"
            ),
        )

    # -- one issuance --------------------------------------------------------------------------

    def _thread(self, f, *args, **kwargs):
        pool = self.reactor.getThreadPool()
        return threads.deferToThreadPool(self.reactor, pool, f, *args, **kwargs)

    def _sleep(self, seconds: float):
        return task.deferLater(self.reactor, seconds, lambda: None)

    def _connect(self) -> acme_client.ClientV2:
        """Fetch the directory and find or register the account (blocking)."""
        key = self.cache.account_key()
        jwk = jose.JWKEC(key=key) if isinstance(key, ec.EllipticCurvePrivateKey) else None
        if jwk is None:
            jwk, alg = jose.JWKRSA(key=key), jose.RS256
        else:
            alg = {256: jose.ES256, 384: jose.ES384, 521: jose.ES512}[key.curve.key_size]
        net = acme_client.ClientNetwork(
            jwk,
            alg=alg,
            verify_ssl=self.ca_file or True,
            user_agent=f"haitatsu/{__version__} acme-python",
            timeout=self.network_timeout_seconds,
        )
        directory = acme_client.ClientV2.get_directory(self.directory_url, net)
        client = acme_client.ClientV2(directory, net)
        if client.external_account_required():
            raise ACMEError("the CA requires external account binding, which is not supported")
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            account = client.new_account(registration)
            self._log.info(
                "ACME: registered account {uri} at {ca}", uri=account.uri, ca=self.directory_url
            )
        except errors.ConflictError as existing:
            account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
            net.account = account
        self.cache.save_account(account.uri)
        return client

    async def _obtain(self, client: acme_client.ClientV2, domain: str) -> None:
        self._log.info("ACME: ordering a certificate for {domain}", domain=domain)
        key_pem, csr_pem = await self._thread(_key_and_csr, domain)
        order = await self._thread(client.new_order, csr_pem)
        cleanup = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                await self._answer(client, domain, authz, cleanup)
            await self._wait_for_authorizations(client, domain, order)
        finally:
            for undo in cleanup:
                undo()
        try:
            order = await self._thread(client.begin_finalization, order)
        except messages.Error as e:
            if e.code != "orderNotReady":
                raise
        order, url = await self._wait_for_certificate(client, order)
        chain = order.fullchain_pem.encode("ascii")
        source = self.cache.certificate_paths(domain)[0]
        cert = certificate_from_pem(chain, key_pem, source=source)
        await self._thread(self.cache.save_certificate, domain, chain, key_pem, url)
        self._failed_types.pop(domain, None)
        self.certificates[domain] = cert
        self.install("obtained by ACME")

    def _choose(self, domain: str, authz) -> tuple[str, object]:
        offered = {_type(c): c for c in authz.body.challenges}
        usable = [t for t in self.challenge_types if t in offered]
        if not usable:
            raise ACMEError(
                f"the CA offers {', '.join(sorted(offered)) or 'no challenges'}, none of "
                f"which is enabled here ({', '.join(self.challenge_types)})"
            )
        failed = self._failed_types.get(domain, set())
        fresh = [t for t in usable if t not in failed] or usable
        if len(fresh) == len(usable) and failed:
            self._failed_types.pop(domain, None)
        return fresh[0], offered[fresh[0]]

    async def _answer(self, client, domain: str, authz, cleanup: list) -> None:
        kind, challb = self._choose(domain, authz)
        name = authz.body.identifier.value
        account_key = client.net.key
        key_authorization = challb.chall.key_authorization(account_key)
        if kind == HTTP01:
            token = challb.chall.encode("token")
            self.http01.add(token, key_authorization)
            cleanup.append(lambda: self.http01.remove(token))
        else:
            certificate, key = await self._thread(challenge_certificate, name, key_authorization)
            self.alpn.add(name, certificate, key)
            cleanup.append(lambda: self.alpn.remove(name))
        self._log.info("ACME: answering {kind} for {name}", kind=kind, name=name)
        await self._thread(client.answer_challenge, challb, challb.chall.response(account_key))

    async def _wait_for_authorizations(self, client, domain: str, order) -> None:
        deadline = self.reactor.seconds() + self.poll_deadline_seconds
        for authz in order.authorizations:
            while authz.body.status == messages.STATUS_PENDING:
                if self.reactor.seconds() > deadline:
                    raise ACMEError(f"the CA did not validate {domain} in time")
                await self._sleep(self.poll_interval_seconds)
                authz, _ = await self._thread(client.poll, authz)
            if authz.body.status != messages.STATUS_VALID:
                reasons = [
                    f"{_type(c)}: {_problem(c.error)}"
                    for c in authz.body.challenges
                    if c.error is not None
                ]
                for c in authz.body.challenges:
                    if c.error is not None:
                        self._failed_types.setdefault(domain, set()).add(_type(c))
                raise ACMEError(
                    f"validation of {authz.body.identifier.value} failed "
                    f"({authz.body.status.name}): {'; '.join(reasons) or 'no reason given'}"
                )

    async def _wait_for_certificate(self, client, order):
        deadline = self.reactor.seconds() + self.poll_deadline_seconds
        new_nonce = client.directory.newNonce
        while True:
            response = await self._thread(client.net.post, order.uri, None, new_nonce_url=new_nonce)
            body = messages.Order.from_json(response.json())
            if body.status == messages.STATUS_VALID and body.certificate:
                certificate = await self._thread(
                    client.net.post, body.certificate, None, new_nonce_url=new_nonce
                )
                return order.update(body=body, fullchain_pem=certificate.text), body.certificate
            if body.status == messages.STATUS_INVALID:
                raise ACMEError(f"the CA refused to issue: {_problem(body.error)}")
            if self.reactor.seconds() > deadline:
                raise ACMEError("the CA did not issue the certificate in time")
            await self._sleep(self.poll_interval_seconds)


def _type(challb) -> str:
    chall = challb.chall
    if isinstance(chall, challenges.UnrecognizedChallenge):
        return str(chall.jobj.get("type", "unknown"))
    return chall.typ


def _key_and_csr(domain: str) -> tuple[bytes, bytes]:
    key_pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
    return key_pem, acme_crypto.make_csr(key_pem, [domain])


def _problem(error) -> str:
    if error is None:
        return "no reason given"
    detail = getattr(error, "detail", None) or ""
    code = getattr(error, "code", None) or getattr(error, "typ", "")
    return f"{detail} ({code})" if detail else str(code or error)


def _reason(e: Exception) -> str:
    if isinstance(e, messages.Error):
        return _problem(e)
    if isinstance(e, (ACMEError, CertificateError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


__all__ = [
    "ACMECache",
    "ACMEManager",
    "HTTP01Responder",
    "TLSALPN01",
    "TLSALPN01Responder",
    "challenge_certificate",
    "issuer_key",
]
