"""A throwaway certificate authority for TLS tests, made with ``cryptography``.

A root, an intermediate (so served chains are exercised: clients trust only the root), and
server certificates for any names, written as ``fullchain.pem`` (leaf + intermediate) and
``privkey.pem`` like certbot's. EC P-256 keys: fast to make, so every test class can afford
its own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from haitatsu.config.model import TLSCertificateConfig, TLSConfig

ONE_DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.UTC)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """Issues server certificates under ``directory``; ``ca_file`` is what clients trust."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        now = _now()
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._sign(
            _name("haitatsu test root"),
            self.root_key.public_key(),
            _name("haitatsu test root"),
            self.root_key,
            now - ONE_DAY,
            now + 3650 * ONE_DAY,
            ca=True,
        )
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._sign(
            _name("haitatsu test intermediate"),
            self.intermediate_key.public_key(),
            self.root.subject,
            self.root_key,
            now - ONE_DAY,
            now + 3650 * ONE_DAY,
            ca=True,
        )
        self.ca_file = os.path.join(directory, "ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(self.root.public_bytes(serialization.Encoding.PEM))

    def _sign(
        self, subject, public_key, issuer, issuer_key, not_before, not_after, *, ca=False, names=()
    ):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def issue(
        self,
        label: str,
        *names: str,
        expired: bool = False,
        valid_days: float = 90,
        age_days: float = 1,
    ) -> tuple[str, str, int]:
        """Write ``<label>/fullchain.pem`` and ``<label>/privkey.pem`` for ``names`` (the first
        is also the subject's CN; IP addresses become IP SANs), issued ``age_days`` ago and
        valid for ``valid_days`` more days, replacing what is there; return (cert path, key
        path, serial)."""
        now = _now()
        if expired:
            not_before, not_after = now - 30 * ONE_DAY, now - ONE_DAY
        else:
            not_before, not_after = now - age_days * ONE_DAY, now + valid_days * ONE_DAY
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(
            _name(names[0]),
            key.public_key(),
            self.intermediate.subject,
            self.intermediate_key,
            not_before,
            not_after,
            names=names,
        )
        folder = os.path.join(self.directory, label)
        os.makedirs(folder, exist_ok=True)
        cert_file = os.path.join(folder, "fullchain.pem")
        key_file = os.path.join(folder, "privkey.pem")
        # Write then rename, as certbot does, so a reader never sees half a file.
        for path, data in (
            (
                cert_file,
                cert.public_bytes(serialization.Encoding.PEM)
                + self.intermediate.public_bytes(serialization.Encoding.PEM),
            ),
            (
                key_file,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            ),
        ):
            with open(path + ".new", "wb") as f:
                f.write(data)
            os.replace(path + ".new", path)
        return cert_file, key_file, cert.serial_number

    def client_context(self, server_name: str | None = None, verify: bool = True):
        """A client ``SSLContext`` trusting this CA that connects to 127.0.0.1 but asks for
        (and checks) ``server_name``: the stdlib clients pass the host they connected to."""
        return _NamedContext.make(self.ca_file if verify else None, server_name)


class _NamedContext(ssl.SSLContext):
    server_name: str | None = None

    @classmethod
    def make(cls, ca_file: str | None, server_name: str | None):
        ctx = cls(ssl.PROTOCOL_TLS_CLIENT)
        if ca_file is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(ca_file)
        ctx.server_name = server_name
        return ctx

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=self.server_name, **kwargs)


def peer_certificate(sslsock) -> x509.Certificate:
    """The certificate the server presented on a client ``SSLSocket``."""
    return x509.load_der_x509_certificate(sslsock.getpeercert(binary_form=True))


def common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


class TLSFixture:
    """A CA with two server certificates: ``mail.example.test`` (the default) and
    ``mx.other.test`` (plus ``*.wild.test``), and the ``tls`` config block serving both."""

    DEFAULT_NAME = "mail.example.test"
    OTHER_NAME = "mx.other.test"

    def __init__(self, directory: str):
        self.ca = TestCA(directory)
        self.cert_file, self.key_file, self.default_serial = self.ca.issue(
            "default", self.DEFAULT_NAME
        )
        self.other_cert, self.other_key, self.other_serial = self.ca.issue(
            "other", self.OTHER_NAME, "*.wild.test"
        )

    def tls_config(self) -> TLSConfig:
        return TLSConfig(
            mode="manual",
            cert_file=self.cert_file,
            key_file=self.key_file,
            certificates=(
                TLSCertificateConfig(cert_file=self.other_cert, key_file=self.other_key),
            ),
        )

    def service(self, reactor):
        from haitatsu.config.model import Config
        from haitatsu.tls import TLSService

        return TLSService.from_config(Config(tls=self.tls_config()), reactor)
