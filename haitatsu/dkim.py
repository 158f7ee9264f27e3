"""DKIM keys and signatures (RFC 6376; Ed25519 per RFC 8463).

Keys are generated here with ``cryptography`` (RSA 2048 as the original does, Ed25519 as our
option) and published as a TXT record whose value ``dns_record`` writes. Signatures are made by
dkimpy, with one difference from ``dkim.sign``: dkimpy hashes the body from a bytes object, which
would put the whole message in memory. ``RelaxedBodyHash`` computes the same relaxed body hash
from the message as it streams past, and ``signature`` hands dkimpy only the header section and
that hash. The RSA signature itself is made by OpenSSL through ``cryptography`` (RSASSA-PKCS1
v1.5 is deterministic: the same bytes dkimpy's pure-Python RSA gives, in a fraction of the
time). Everything here blocks (key generation, RSA signing): call it in a thread.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

import attrs
import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

ALGORITHMS = ("rsa", "ed25519")

#: API.md 1.8 step 6: the header fields every signature covers, in this order. A field the
#: message does not have is signed as absent, so nobody can add it later without breaking the
#: signature (RFC 6376 8.15).
SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "X-Haitatsu-Trace-ID",
    "X-Haitatsu-Node",
)

#: The selector when a create request names none (API.md 1.11).
DEFAULT_SELECTOR = "zpr1"

RSA_BITS = 2048


@attrs.frozen
class KeyPair:
    algorithm: str
    private_pem: str
    public_pem: str


def generate_key(algorithm: str = "rsa") -> KeyPair:
    """A new key pair. RSA: PKCS#1 private PEM (the original's format), PKIX public PEM.
    Ed25519: PKCS#8 private PEM (PKCS#1 is RSA only), PKIX public PEM. Blocks for a while
    (RSA prime search): run it in a thread."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        private_format = serialization.PrivateFormat.PKCS8
    else:
        raise ValueError(f"unknown DKIM key algorithm {algorithm!r}")
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(algorithm, private_pem.decode("ascii"), public_pem.decode("ascii"))


def dns_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dns_record(algorithm: str, public_pem: str) -> str:
    """The TXT record value to publish. RSA: ``p=`` is the base64 of the public key's DER
    (SubjectPublicKeyInfo), as API.md 1.11 says. Ed25519: RFC 8463 3.1 wants the raw 32-byte
    key, not DER."""
    public = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if algorithm == "ed25519":
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


_WSP_RUN = re.compile(rb"[ \t]+")


class RelaxedBodyHash:
    """SHA-256 over the relaxed canonical form of a body (RFC 6376 3.4.4), fed line by line.

    Each line is given with its CRLF (the last may lack one). Trailing whitespace is removed,
    runs of whitespace become one space, and empty lines are held back until a line with
    content follows, since empty lines at the end do not count. Memory: one line.
    """

    def __init__(self):
        self._hash = hashlib.sha256()
        self._held_empty = 0

    def update_line(self, line: bytes) -> None:
        content = line[:-2] if line.endswith(b"\r\n") else line
        content = _WSP_RUN.sub(b" ", content).rstrip(b" ")
        if not content:
            self._held_empty += 1
            return
        if self._held_empty:
            self._hash.update(b"\r\n" * self._held_empty)
            self._held_empty = 0
        self._hash.update(content + b"\r\n")

    def digest(self) -> bytes:
        return self._hash.digest()


class _HeaderSigner(dkim.DKIM):
    """dkimpy's signer for a message of which it sees only the header section; the body hash
    comes from ``RelaxedBodyHash``. The rest (header canonicalisation, which instance of a
    repeated field is signed, folding, Ed25519 signing) is dkimpy's own; RSA signing is
    OpenSSL's (``gen_header``)."""

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):
        """dkimpy's ``gen_header`` (its folding, ``b=`` handling and header hashing, through its
        own helpers), with the RSA signature made by OpenSSL when ``pk`` is a ``cryptography``
        key: dkimpy's pure-Python modular exponentiation took some 20 ms per message."""
        if not isinstance(pk, rsa.RSAPrivateKey) or standardize:
            return super().gen_header(
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(header_name))
        value = dkim.RE_BTAG.sub(b"\\1", value)
        digest = dkim.HashThrough(self.hasher(), self.debug_content)
        self.signed_headers = dkim.hash_headers(
            digest,
            canon_policy,
            canon_policy.canonicalize_headers(self.headers),
            include_headers,
            (header_name, b" " + value),
            dict(fields),
        )
        signed = pk.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields = [(k, base64.b64encode(signed) if k == b"b" else v) for k, v in fields]
        value = b"; ".join(b"=".join(f) for f in fields) + self.linesep
        return dkim.fold(value, namelen=len(header_name), linesep=self.linesep)

    def sign_with_body_hash(
        self, selector: bytes, domain: bytes, private_key, body_hash: bytes, timestamp: int
    ) -> bytes:
        self.hasher = hashlib.sha256
        policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        include = tuple(h.lower().encode("ascii") for h in SIGNED_HEADERS)
        self.include_headers = include
        fields = [
            (b"v", b"1"),
            (b"a", self.signature_algorithm),
            (b"c", policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(timestamp)).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            # As dkimpy does: b= folds onto its own line, so the folding of the other tags does
            # not change once the signature is filled in.
            (b"b", b"0" * 60),
        ]
        value = self.gen_header(fields, include, policy, b"DKIM-Signature", private_key)
        return b"DKIM-Signature: " + value


@attrs.frozen
class SigningKey:
    """What a signature needs: the key row's domain, selector, algorithm and private PEM."""

    domain: str
    selector: str
    algorithm: str
    private_pem: str


def _dkimpy_key(key: SigningKey):
    if key.algorithm == "ed25519":
        import nacl.signing

        private = serialization.load_pem_private_key(key.private_pem.encode("ascii"), None)
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return nacl.signing.SigningKey(seed)
    return _rsa_key(key.private_pem)


@functools.lru_cache(maxsize=64)
def _rsa_key(private_pem: str):
    """The ``cryptography`` RSA key of a PEM (parsed once per key, not per message)."""
    return serialization.load_pem_private_key(private_pem.encode("ascii"), None)


def signature(header_section: bytes, body_hash: bytes, key: SigningKey, timestamp: int) -> bytes:
    """The ``DKIM-Signature`` field (CRLF-terminated, folded) for a message whose header section
    (fields with their CRLFs, without the blank line) is ``header_section`` and whose relaxed
    body hash is ``body_hash``. Blocks: call it in a thread."""
    algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
    signer = _HeaderSigner(header_section + b"\r\n", signature_algorithm=algorithm)
    return signer.sign_with_body_hash(
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        _dkimpy_key(key),
        body_hash,
        timestamp,
    )
