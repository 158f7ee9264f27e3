"""DKIM verification (RFC 6376) of every signature, and ARC (RFC 8617) verification and
sealing, through dkimpy.

dkimpy is given the header section only; the body hashes come from ``bodyhash`` (the message
streams past once), and the subclasses here check a signature's ``bh=`` against them before
dkimpy checks the rest (header canonicalization, which field instances are signed, the RSA or
Ed25519 signature, the key record). Keys are fetched through our resolver (a
``BlockingResolver``), never dkimpy's own DNS.

Everything here blocks: call it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time

import attrs
import dkim
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
)
from dkim.crypto import ARC_HASH_ALGORITHMS, HASH_ALGORITHMS, parse_pem_private_key
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.names import dns

from haitatsu.dns import NameNotFound, TemporaryDNSError
from haitatsu.mailauth.bodyhash import (
    HEADER_LIMIT,
    BodySpec,
    HeaderTooLarge,
    read_signed_message,
)

#: RFC 8617 5.1.1.1: at most 50 ARC sets.
ARC_INSTANCE_LIMIT = 50

#: The header fields an ARC-Message-Signature of ours covers (each instance the message has,
#: From once more so none can be added). A short fixed list keeps the field within a line.
AMS_HEADERS = frozenset(
    {
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"in-reply-to",
        b"references",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"list-id",
    }
)

_WSP = re.compile(rb"\s+")
_quiet = logging.getLogger("haitatsu.mailauth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def body_spec(sig: dict, arc: bool = False) -> BodySpec | None:
    """The ``BodySpec`` a parsed signature (dkimpy's tag dict) needs; None when its ``c=`` or
    ``a=`` is not one we can compute (verification then fails on its own)."""
    try:
        default = b"relaxed/relaxed" if arc else b"simple/simple"
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", default))
    except InvalidCanonicalizationPolicyError:
        return None
    algorithms = ARC_HASH_ALGORITHMS if arc else HASH_ALGORITHMS
    hasher = algorithms.get(sig.get(b"a", b""))
    if hasher is None:
        return None
    limit = None
    if b"l" in sig:
        if not re.fullmatch(rb"\d{1,76}", sig[b"l"]):
            return None
        limit = int(sig[b"l"])
    return BodySpec(policy.body_algorithm.name.decode("ascii"), hasher().name, limit)


def _signature_fields(header: bytes, names: tuple[bytes, ...]) -> list[dict]:
    """The parsed tag lists of every field called one of ``names`` (lower case) in the header
    section; fields that do not parse are skipped."""
    out = []
    try:
        fields, _ = dkim.rfc822_parse(header + b"\r\n")
    except dkim.MessageFormatError:
        return out
    for name, value in fields:
        if name.lower() in names:
            try:
                out.append(parse_tag_value(_WSP.sub(b" ", value).strip()))
            except InvalidTagValueList:
                continue
    return out


class _StreamedBody:
    """Checks ``bh=`` against ``body_hashes`` (from ``bodyhash``), then lets dkimpy check the
    signature of a message it holds the header section of."""

    body_hashes: dict = {}
    arc = False

    def verify_sig_process(self, sig, include_headers, sig_header, dnsfunc):
        if b"bh" in sig:
            spec = body_spec(sig, arc=self.arc)
            if spec is None:
                raise dkim.MessageFormatError("unsupported c= or a=")
            try:
                expected = base64.b64decode(_WSP.sub(b"", sig[b"bh"]), validate=True)
            except (binascii.Error, ValueError):
                raise dkim.MessageFormatError("bh= is not base64") from None
            if self.body_hashes.get(spec) != expected:
                raise dkim.ValidationError("body hash mismatch")
            sig = {k: v for k, v in sig.items() if k != b"bh"}
        return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)


class _DKIMVerifier(_StreamedBody, dkim.DKIM):
    pass


class _ARCVerifier(_StreamedBody, dkim.ARC):
    arc = True


class KeyLookup:
    """dkimpy's ``dnsfunc`` on a ``BlockingResolver`` that remembers what the last lookup
    found, so a failed verification can say why: ``status`` is ``"ok"``, ``"nokey"`` (no such
    name, or no TXT record), ``"temp"`` (DNS failed for now) or ``"badname"``."""

    def __init__(self, resolver, deadline: float | None = None):
        self.resolver = resolver
        #: ``time.monotonic()`` after which no more lookups are made (each is a temperror).
        self.deadline = deadline
        self.status = ""
        self.record = b""
        self.name = ""

    def __call__(self, name, timeout=5):
        self.status, self.record = "", b""
        try:
            self.name = _text(name).rstrip(".")
            self.name.encode("ascii")
        except UnicodeError:
            self.status = "badname"
            return b""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.status = "temp"
            raise dkim.DnsTimeoutError("out of time for key lookups")
        try:
            records = self.resolver.query(self.name, dns.TXT)
        except NameNotFound:
            self.status = "nokey"
            return b""
        except TemporaryDNSError as e:
            self.status = "temp"
            raise dkim.DnsTimeoutError(str(e)) from None
        if not records:
            self.status = "nokey"
            return b""
        self.status = "ok"
        self.record = b"".join(records[0].data)
        return self.record


# -- DKIM ------------------------------------------------------------------------------------


@attrs.frozen
class SignatureResult:
    """One DKIM-Signature's result (RFC 8601 2.7.1): ``pass``, ``fail`` (it does not verify),
    ``neutral`` (it is malformed), ``policy`` (a key shorter than the minimum),
    ``temperror`` (the key could not be fetched now) or ``permerror`` (no key, or a broken
    key record); with the signature's ``d=``, ``s=``, ``a=``, ``i=``, the first 8
    characters of ``b=`` and why."""

    result: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    b: str = ""
    reason: str = ""

    def as_json(self) -> dict:
        return {
            "result": self.result,
            "d": self.domain,
            "s": self.selector,
            "a": self.algorithm,
            "i": self.identity,
            "reason": self.reason,
        }


_BYTES_REPR = re.compile(r"\bb'([^']*)'")


def _clean(reason: str) -> str:
    """dkimpy's messages show bytes as ``b'...'``; drop the quoting."""
    return _BYTES_REPR.sub(r"\1", reason)


def _signature_result(result: str, sig: dict, reason: str = "") -> SignatureResult:
    reason = _clean(reason)
    return SignatureResult(
        result=result,
        domain=_text(sig.get(b"d")).lower(),
        selector=_text(sig.get(b"s")),
        algorithm=_text(sig.get(b"a")),
        identity=_text(sig.get(b"i")),
        b=_text(_WSP.sub(b"", sig.get(b"b", b"")))[:8],
        reason=reason,
    )


def _failed_lookup(lookup: KeyLookup, sig: dict) -> SignatureResult:
    if lookup.status == "temp":
        return _signature_result("temperror", sig, f"key lookup failed for now: {lookup.name}")
    if lookup.status in ("nokey", "badname"):
        return _signature_result("permerror", sig, f"no key at {lookup.name}")
    if lookup.status == "ok":
        try:
            dkim.evaluate_pk(lookup.name, lookup.record)
        except (dkim.KeyFormatError, binascii.Error, ValueError) as e:
            return _signature_result("permerror", sig, f"bad key record: {e}")
    return _signature_result("fail", sig, "signature did not verify")


def verify_dkim(
    path: str,
    resolver,
    *,
    min_key_bits: int = 1024,
    max_signatures: int = 10,
    header_limit: int = HEADER_LIMIT,
    lookup_seconds: float = 20.0,
) -> list[SignatureResult]:
    """Every DKIM-Signature of the message at ``path`` (the first ``max_signatures``, top
    down), each with its result; keys through ``resolver`` (a ``BlockingResolver``). Key
    lookups stop after ``lookup_seconds`` in all (the signatures left get ``temperror``), so
    that many signatures from domains whose DNS does not answer cannot hold the check past
    the filter's timeout. An empty list when the message has none. Blocks."""
    deadline = time.monotonic() + lookup_seconds

    def specs(header):
        sigs = _signature_fields(header, (b"dkim-signature",))[:max_signatures]
        return [s for s in map(body_spec, sigs) if s is not None]

    try:
        message = read_signed_message(path, specs, header_limit)
    except HeaderTooLarge as e:
        return [SignatureResult("permerror", reason=str(e))]
    try:
        verifier = _DKIMVerifier(message.header + b"\r\n", logger=_quiet, minkey=min_key_bits)
    except dkim.DKIMException as e:
        if b"dkim-signature" not in message.header.lower():
            return []
        return [SignatureResult("permerror", reason=f"header section unparsable: {e}")]
    verifier.body_hashes = message.body_hashes
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for idx in range(min(count, max_signatures)):
        lookup = KeyLookup(resolver, deadline)
        verifier.signature_fields = {}
        try:
            ok = verifier.verify(idx=idx, dnsfunc=lookup)
        except dkim.KeyFormatError as e:
            sig = verifier.signature_fields
            if "too small" in str(e):
                results.append(_signature_result("policy", sig, str(e)))
            else:
                results.append(_signature_result("permerror", sig, str(e)))
            continue
        except dkim.ValidationError as e:
            sig = verifier.signature_fields
            verdict = "fail" if "body hash mismatch" in str(e) else "neutral"
            results.append(_signature_result(verdict, sig, str(e)))
            continue
        except dkim.DKIMException as e:
            results.append(_signature_result("neutral", verifier.signature_fields, str(e)))
            continue
        sig = verifier.signature_fields
        if ok:
            results.append(_signature_result("pass", sig))
        else:
            results.append(_failed_lookup(lookup, sig))
    return results


# -- ARC -------------------------------------------------------------------------------------


@attrs.frozen
class ARCResult:
    """The ARC chain's validation (RFC 8617 5.2): ``result`` ``pass``, ``fail`` or ``none`` (no
    ARC sets), why, the highest ``instance``, each set's sealer (``(instance, d=)`` of its
    ARC-Seal, newest first) and ``oldest_pass`` (the lowest instance from which every
    ARC-Message-Signature validates; 0 when all do)."""

    result: str
    reason: str = ""
    instance: int = 0
    sealers: tuple = ()
    oldest_pass: int | None = None


def verify_arc(
    path: str,
    resolver,
    *,
    min_key_bits: int = 1024,
    header_limit: int = HEADER_LIMIT,
    lookup_seconds: float = 20.0,
) -> ARCResult:
    """Validate the ARC chain of the message at ``path``; keys through ``resolver``, for at
    most ``lookup_seconds`` in all. Blocks."""
    deadline = time.monotonic() + lookup_seconds

    def specs(header):
        sigs = _signature_fields(header, (b"arc-message-signature",))[:ARC_INSTANCE_LIMIT]
        return [s for s in (body_spec(sig, arc=True) for sig in sigs) if s is not None]

    try:
        message = read_signed_message(path, specs, header_limit)
    except HeaderTooLarge as e:
        return ARCResult("fail", str(e))
    try:
        verifier = _ARCVerifier(message.header + b"\r\n", logger=_quiet, minkey=min_key_bits)
    except dkim.DKIMException as e:
        if b"arc-seal" not in message.header.lower():
            return ARCResult("none")
        return ARCResult("fail", f"header section unparsable: {e}")
    verifier.body_hashes = message.body_hashes
    max_instance, _ = verifier.sorted_arc_headers()
    if max_instance == 0:
        return ARCResult("none", "no ARC sets")
    if max_instance > ARC_INSTANCE_LIMIT:
        return ARCResult("fail", f"more than {ARC_INSTANCE_LIMIT} ARC sets", max_instance)
    lookup = KeyLookup(resolver, deadline)
    try:
        cv, data, reason = verifier.verify(dnsfunc=lookup)
    except (dkim.DKIMException, IndexError, KeyError, ValueError) as e:
        return ARCResult("fail", _clean(f"{type(e).__name__}: {e}"), max_instance)
    sealers = tuple(
        (int(d["instance"]), _text(d.get("as-domain")).lower()) for d in data if "instance" in d
    )
    if cv != dkim.CV_Pass:
        return ARCResult("fail", _clean(_text(reason)), max_instance, sealers)
    oldest = 0
    for d in sorted(data, key=lambda d: d["instance"], reverse=True):
        if not d.get("ams-valid"):
            oldest = d["instance"] + 1
            break
    return ARCResult("pass", "", max_instance, sealers, oldest)


@attrs.frozen
class SealingKey:
    """What sealing needs: the signing ``domain`` and ``selector`` and the RSA private key (PEM
    bytes; dkimpy seals with rsa-sha256 only)."""

    domain: str
    selector: str
    private_pem: bytes


def load_sealing_key(domain: str, selector: str, private_pem: bytes) -> SealingKey:
    """A ``SealingKey``, its PEM checked: ``ValueError`` when it is no RSA private key."""
    try:
        parse_pem_private_key(private_pem)
    except Exception as e:
        raise ValueError(f"not an RSA private key in PEM: {e}") from None
    return SealingKey(domain.lower().rstrip("."), selector, private_pem)


class _Sealer(dkim.ARC):
    """dkimpy's ARC signer for a message of which it holds the header section: the AMS body
    hash is given (relaxed/sha256, streamed), and the ARC-Authentication-Results is written
    from our results rather than parsed back out of an Authentication-Results field."""

    def seal(self, key, authserv_id: str, results: list, cv: bytes, body_hash, timestamp: int):
        private = parse_pem_private_key(key.private_pem)
        include = tuple(h.lower() for h in self.default_sign_headers() if h.lower() in AMS_HEADERS)
        if b"from" not in include:
            raise dkim.ParameterError("the message has no From to sign")
        max_instance, arc_headers_w_instance = self.sorted_arc_headers()
        instance = max_instance + 1
        if instance > ARC_INSTANCE_LIMIT:
            raise dkim.ParameterError("Maximum instance tag value exceeded")
        if instance == 1:
            cv = dkim.CV_None
        elif cv == dkim.CV_None:
            cv = dkim.CV_Fail
        arc_headers = [] if cv == dkim.CV_Fail else [y for _, y in arc_headers_w_instance]
        policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        infos = "; ".join(results) if results else "none"
        aar = f"i={instance}; {authserv_id}; {infos}".encode("utf-8", "replace") + b"\r\n"
        arc_headers.insert(0, (b"ARC-Authentication-Results", aar))
        self.headers = policy.canonicalize_headers(arc_headers[:1]) + self.headers

        self.hasher = HASH_ALGORITHMS[b"rsa-sha256"]
        stamp = str(int(timestamp)).encode("ascii")
        domain = key.domain.encode("ascii")
        selector = key.selector.encode("ascii")
        ams_fields = [
            (b"i", str(instance).encode("ascii")),
            (b"a", b"rsa-sha256"),
            (b"c", b"relaxed/relaxed"),
            (b"d", domain),
            (b"s", selector),
            (b"t", stamp),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            (b"b", b"0" * 60),
        ]
        ams = self.gen_header(ams_fields, include, policy, b"ARC-Message-Signature", private)
        arc_headers.insert(0, (b"ARC-Message-Signature", ams))
        self.headers = policy.canonicalize_headers(arc_headers[:1]) + self.headers

        as_fields = [
            (b"i", str(instance).encode("ascii")),
            (b"cv", cv),
            (b"a", b"rsa-sha256"),
            (b"d", domain),
            (b"s", selector),
            (b"t", stamp),
            (b"b", b"0" * 60),
        ]
        as_include = [name.lower() for name, _ in arc_headers]
        as_include.reverse()
        if cv == dkim.CV_Fail:
            self.headers.reverse()
        seal = self.gen_header(as_fields, as_include, policy, b"ARC-Seal", private)
        return [
            ("ARC-Seal", seal),
            ("ARC-Message-Signature", ams),
            ("ARC-Authentication-Results", aar),
        ]


def seal_arc(
    path: str,
    key: SealingKey,
    authserv_id: str,
    results: list[str],
    cv: str,
    timestamp: int,
    header_limit: int = HEADER_LIMIT,
) -> list[tuple[str, str]]:
    """The next ARC set for the message at ``path``: ``[("ARC-Seal", value),
    ("ARC-Message-Signature", value), ("ARC-Authentication-Results", value)]``, values
    unfolded. ``results`` are the resinfos (``spf=pass smtp.mailfrom=...``) our
    Authentication-Results carries, ``cv`` the chain validation (``pass``, ``fail``,
    ``none``). ``dkim.DKIMException`` or ``HeaderTooLarge`` when the message cannot be sealed
    (no From, 50 sets already). Blocks."""
    relaxed = BodySpec("relaxed", "sha256")
    message = read_signed_message(path, lambda header: [relaxed], header_limit)
    sealer = _Sealer(message.header + b"\r\n", logger=_quiet)
    fields = sealer.seal(
        key,
        authserv_id,
        results,
        cv.encode("ascii"),
        message.body_hashes[relaxed],
        timestamp,
    )
    return [(name, _unfold(value)) for name, value in fields]


def _unfold(value: bytes) -> str:
    return " ".join(value.decode("utf-8", "replace").split())
