"""TLS for every listener: certificates from files, chosen by the client's server name (SNI).

One ``TLSService`` serves every listener: STARTTLS on SMTP, IMAP and POP3 and the implicit-TLS
ports (993, 995, 465) all get their connections from it. It holds one ``CertificateSet`` at a
time: a default certificate plus any number of others, each with its own ready-made OpenSSL
context. A connection starts on the default context; the SNI callback moves it to the context
of the certificate whose names match what the client asked for (exact name first, then a
``*.`` wildcard one label deep), and keeps the default when nothing matches or the client sent
no name.

The set is immutable and replaced whole (``TLSService.swap``), so a connection uses one set from
start to end and a swap never needs a lock. ``tls.mode = "manual"`` builds the set from PEM files
(``load_manual``) at start and again on every configuration reload, so renewed files are served
to new connections without a restart; ``tls.mode = "acme"`` (``haitatsu.acme``) builds sets from
its cache and from each issuance and swaps them in the same way.

Settings are deliberately not configurable: TLS 1.2 and 1.3 only, no compression, no
renegotiation, the server's cipher order (ECDHE with AES-GCM or ChaCha20 for TLS 1.2; OpenSSL's
TLS 1.3 suites), and OpenSSL's default key-exchange groups (X25519, P-256, X448, P-521, P-384).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL
from twisted.application.service import MultiService
from twisted.internet import threads
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from haitatsu.config.model import ConfigError

#: TLS 1.2 suites, strongest first (Mozilla's "intermediate" list without DHE, which would need
#: our own DH parameters). TLS 1.3 suites are OpenSSL's, all of them AEAD.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

_OPTIONS = (
    SSL.OP_NO_COMPRESSION
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_SINGLE_ECDH_USE
    | SSL.OP_SINGLE_DH_USE
)


class CertificateError(ConfigError):
    """A certificate or key cannot be used; the message names the file and the problem. A
    ``ConfigError``, so a reload that meets one is refused and the running certificates stay."""


class TLSUnavailable(Exception):
    """TLS is configured but there is no certificate to serve yet (an ACME order pending)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.frozen
class Certificate:
    """One certificate with its chain and private key, and what the server needs to know of it.

    ``names`` are the DNS names it is valid for, lowercased (the subject alternative names, or
    the subject's common name when there are none, as old self-signed certificates have).
    """

    names: tuple[str, ...]
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    #: Where it came from (the certificate file), for log lines and error messages.
    source: str
    leaf: x509.Certificate = attrs.field(repr=False)
    chain: tuple[x509.Certificate, ...] = attrs.field(repr=False)
    key: object = attrs.field(repr=False)

    def valid_at(self, when: datetime.datetime) -> bool:
        return self.not_before <= when <= self.not_after

    def matches(self, server_name: str) -> bool:
        return _match(self.names, server_name) is not None


def _match(names: Sequence[str], server_name: str) -> int | None:
    """2 for an exact match, 1 for a wildcard match (``*.example.com`` matches one label), None."""
    best = None
    for name in names:
        if name == server_name:
            return 2
        if name.startswith("*.") and "." in server_name:
            if server_name.split(".", 1)[1] == name[2:]:
                best = 1
    return best


def certificate_from_pem(cert_pem: bytes, key_pem: bytes, source: str = "<memory>") -> Certificate:
    """Parse a PEM certificate chain (leaf first) and its PEM private key.

    Raises ``CertificateError`` when either does not parse or the key does not belong to the
    certificate. Used for files (``load_pem_files``) and, later, for certificates from ACME.
    """
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise CertificateError(f"{source}: no PEM certificate could be read ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(
            f"{source}: the private key could not be read (encrypted keys are not supported): {e}"
        ) from None
    leaf = certs[0]
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(f"{source}: the private key does not belong to the certificate")
    return Certificate(
        names=_names(leaf),
        serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        source=source,
        leaf=leaf,
        chain=tuple(certs[1:]),
        key=key,
    )


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            a.value
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if isinstance(a.value, str)
        ]
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))


def load_pem_files(cert_file: str, key_file: str) -> Certificate:
    """Read a certificate (chain) file and its key file. Blocking: call it from a thread."""
    contents = []
    for key, path in (("cert_file", cert_file), ("key_file", key_file)):
        try:
            with open(path, "rb") as f:
                contents.append(f.read())
        except OSError as e:
            raise CertificateError(f"tls.{key}: cannot read {path}: {e.strerror}") from None
    return certificate_from_pem(contents[0], contents[1], source=cert_file)


class CertificateSet:
    """The certificates a server offers at one moment: a default and others chosen by SNI.

    Immutable: each certificate's OpenSSL context is built once, here, and the SNI callback of
    every context looks only in this set. ``alpn`` is an ALPN select callback for every context
    (ACME's TLS-ALPN-01 responder, ``haitatsu.acme``); without one, ALPN is ignored.
    """

    def __init__(
        self,
        default: Certificate,
        others: Sequence[Certificate] = (),
        alpn: Callable[[SSL.Connection, list[bytes]], bytes] | None = None,
    ):
        self.default = default
        self.certificates: tuple[Certificate, ...] = (default, *others)
        self._contexts = [_make_context(c, self._on_server_name, alpn) for c in self.certificates]

    @property
    def default_context(self) -> SSL.Context:
        return self._contexts[0]

    def choose(self, server_name: str | None) -> Certificate:
        """The certificate for a server name: exact name first, then wildcard, in the order of
        the set (the default first); the default when nothing matches."""
        return self.certificates[self._index(server_name)]

    def _index(self, server_name: str | None) -> int:
        if not server_name:
            return 0
        name = server_name.lower().rstrip(".")
        wildcard = None
        for i, cert in enumerate(self.certificates):
            quality = _match(cert.names, name)
            if quality == 2:
                return i
            if quality == 1 and wildcard is None:
                wildcard = i
        return wildcard if wildcard is not None else 0

    def _on_server_name(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        if not raw:
            return
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            return
        index = self._index(name)
        if index:
            connection.set_context(self._contexts[index])

    def expiring(self, when: datetime.datetime) -> list[Certificate]:
        """Certificates not valid at ``when``."""
        return [c for c in self.certificates if not c.valid_at(when)]


def server_context() -> SSL.Context:
    """A server context with our settings (protocol versions, options, ciphers) and no
    certificate yet."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(_OPTIONS)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(TLS12_CIPHERS.encode("ascii"))
    # Needed for server-side session resumption; any stable value will do.
    ctx.set_session_id(b"haitatsu")
    return ctx


def _make_context(cert: Certificate, on_server_name, on_alpn=None) -> SSL.Context:
    ctx = server_context()
    ctx.use_certificate(cert.leaf)
    for extra in cert.chain:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(cert.key)
    ctx.check_privatekey()
    ctx.set_tlsext_servername_callback(on_server_name)
    if on_alpn is not None:
        ctx.set_alpn_select_callback(on_alpn)
    return ctx


def load_manual(tls_config) -> CertificateSet:
    """The ``CertificateSet`` of ``tls.mode = "manual"``: ``cert_file``/``key_file`` as the
    default, then ``tls.certificates`` in order. Blocking (reads files)."""
    default = load_pem_files(tls_config.cert_file, tls_config.key_file)
    others = []
    for i, entry in enumerate(tls_config.certificates):
        try:
            others.append(load_pem_files(entry.cert_file, entry.key_file))
        except CertificateError as e:
            raise CertificateError(f"tls.certificates[{i}]: {e}") from None
    return CertificateSet(default, others)


@implementer(IStreamServerEndpoint)
@attrs.frozen
class TLSServerEndpoint:
    """A server endpoint that speaks TLS (from ``tls``) over another server endpoint."""

    tls: TLSService
    wrapped: IStreamServerEndpoint

    def listen(self, factory):
        return self.wrapped.listen(self.tls.wrap_factory(factory))


@implementer(IOpenSSLServerConnectionCreator)
class TLSService(MultiService):
    """The one source of TLS connections; a twisted service in the tree.

    It is itself what ``transport.startTLS`` and ``TLSMemoryBIOFactory`` take (an
    ``IOpenSSLServerConnectionCreator``): every new TLS connection starts on the certificate set
    current at that moment. In ACME mode its child is the ``ACMEManager`` (``acme``) that
    obtains and renews the certificates and swaps them in.
    """

    name = "tls"
    _log = Logger()

    def __init__(
        self,
        reactor,
        certificates: CertificateSet | None = None,
        loader: Callable[[object], CertificateSet] | None = None,
        no_certificate_context: SSL.Context | None = None,
    ):
        super().__init__()
        self.reactor = reactor
        self._certificates = certificates
        #: Builds a set from the ``tls`` block (blocking; run in a thread on reload). None: the
        #: set only changes through ``swap`` (ACME).
        self._loader = loader
        #: Where connections start while there is no set at all (ACME before its first
        #: certificate: the context answers TLS-ALPN-01 validations). None: such connections
        #: fail with ``TLSUnavailable``.
        self._no_certificate_context = no_certificate_context
        #: The ``haitatsu.acme.ACMEManager`` in ACME mode, else None.
        self.acme = None

    @classmethod
    def from_config(cls, config, reactor) -> TLSService | None:
        """The service for ``config.tls``, with its certificates loaded; None when TLS is off.

        Raises ``CertificateError`` when the files are unusable (the server does not start) and
        ``ConfigError`` for a mode not built yet. An expired certificate is logged and served:
        a client that does not verify (most MTAs) still gets encryption. In ACME mode the
        cached certificates are loaded here and the rest happens once the service starts.
        """
        tls = config.tls
        if not tls.enabled:
            return None
        if tls.mode == "acme":
            from haitatsu.acme import ACMEManager

            return ACMEManager.tls_service(config, reactor)
        if tls.mode != "manual":
            raise ConfigError(
                f'tls.mode: "{tls.mode}" is not supported yet; use "manual" (docs/tls.md)'
            )
        service = cls(reactor, load_manual(tls), loader=load_manual)
        service.report(service.certificates, "loaded")
        return service

    # -- the certificate store ---------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether there is a certificate to serve (always, in manual mode)."""
        return self._certificates is not None

    @property
    def certificates(self) -> CertificateSet | None:
        return self._certificates

    def swap(self, certificates: CertificateSet) -> None:
        """Serve ``certificates`` to every connection from now on; connections already
        running keep theirs. The hook for reloads and for ACME renewals."""
        self._certificates = certificates

    async def prepare_reload(self, config) -> Callable[[], None] | None:
        """A ``ConfigWatcher`` reload check: re-read the certificate files of ``config.tls``
        (the same paths re-read, or new ones) and return the swap to run once the reload is
        accepted.

        Raises ``CertificateError`` (so the reload is refused and the running certificates stay)
        when a file is unreadable, a key does not match, or a certificate that is valid now
        would be replaced by one that is not (an expired or not yet valid file).
        """
        if self._loader is None or not config.tls.enabled:
            return None
        new = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._loader, config.tls
        )
        now = _now()
        current = self._certificates
        running = {c.source: c for c in current.certificates} if current is not None else {}
        for cert in new.certificates:
            old = running.get(cert.source)
            if not cert.valid_at(now) and (old is None or old.valid_at(now)):
                raise CertificateError(
                    f"{cert.source}: certificate is not valid now (valid "
                    f"{cert.not_before:%Y-%m-%d %H:%M} to {cert.not_after:%Y-%m-%d %H:%M} UTC); "
                    "keeping the running certificate"
                )

        def commit():
            self.swap(new)
            self.report(new, "reloaded")

        return commit

    def report(self, certificates: CertificateSet, verb: str) -> None:
        """Log each certificate of a set (names, serial, expiry) and any that is not valid."""
        now = _now()
        for cert in certificates.certificates:
            self._log.info(
                "TLS certificate {verb} from {source}: {names} (serial {serial}, expires "
                "{not_after})",
                verb=verb,
                source=cert.source,
                names=" ".join(cert.names),
                serial=format(cert.serial, "x"),
                not_after=cert.not_after.isoformat(),
            )
            if not cert.valid_at(now):
                self._log.error(
                    "TLS certificate from {source} is not valid now (valid {not_before} to "
                    "{not_after}); serving it anyway",
                    source=cert.source,
                    not_before=cert.not_before.isoformat(),
                    not_after=cert.not_after.isoformat(),
                )

    # -- connections -------------------------------------------------------------------------

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        """A new server-side OpenSSL connection on the current set's default context (the SNI
        callback may move it to another certificate of the same set)."""
        certificates = self._certificates
        if certificates is None:
            if self._no_certificate_context is not None:
                return SSL.Connection(self._no_certificate_context, None)
            raise TLSUnavailable("no TLS certificate loaded")
        return SSL.Connection(certificates.default_context, None)

    def wrap_factory(self, factory) -> TLSMemoryBIOFactory:
        """Wrap a protocol factory so its connections speak TLS from the first byte (implicit
        TLS, ports 465, 993, 995). The protocol's ``transport`` then provides ``ISSLTransport``."""
        return TLSMemoryBIOFactory(self, False, factory)

    def server_endpoint(self, reactor, description: str) -> TLSServerEndpoint:
        """A server endpoint for a Twisted endpoint string (``tcp:993:interface=::``) whose
        connections speak TLS with this service's certificates."""
        from twisted.internet.endpoints import serverFromString

        return TLSServerEndpoint(self, serverFromString(reactor, description))


def is_secure(transport) -> bool:
    """Whether a protocol's transport is encrypted: an implicit-TLS listener, or after
    STARTTLS (Twisted marks the transport ``ISSLTransport`` in both cases)."""
    from twisted.internet.interfaces import ISSLTransport

    return ISSLTransport.providedBy(transport)


__all__ = [
    "Certificate",
    "CertificateError",
    "CertificateSet",
    "TLSServerEndpoint",
    "TLSService",
    "TLSUnavailable",
    "certificate_from_pem",
    "is_secure",
    "load_manual",
    "load_pem_files",
    "server_context",
]
