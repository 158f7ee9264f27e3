"""SPF (RFC 7208) through pyspf, with every DNS answer from our resolver.

pyspf asks DNS through one module-level function, ``spf.DNSLookup``. This module replaces it
once, on import, with a function that answers from the ``haitatsu.dns.BlockingResolver`` of
the ``check_host`` call running in the current thread (a thread-local), so pyspf never uses a
resolver of its own and two checks in two threads never see each other's resolver. Called
outside ``check_host`` (some other code using pyspf directly) it hands over to pyspf's own
lookup, as before.

``check_host`` blocks (pyspf waits for each answer): run it in a thread.
"""

from __future__ import annotations

import socket
import threading

import attrs
import spf
from twisted.names import dns

from haitatsu.dns import NameNotFound, TemporaryDNSError

#: The results RFC 7208 section 2.6 defines (pyspf's older names are mapped onto them).
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
_OLD_NAMES = {"unknown": "permerror", "error": "temperror", "ambiguous": "permerror"}

#: Longest time (seconds) all the DNS lookups of one check may take together.
DEFAULT_QUERY_SECONDS = 20.0

_TYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "PTR": dns.PTR,
    "TXT": dns.TXT,
    "SPF": dns.SPF,
    "CNAME": dns.CNAME,
}

_local = threading.local()
_library_lookup = spf.DNSLookup


@attrs.frozen
class SPFCheck:
    """The outcome of ``check_host``: ``result`` (one of ``RESULTS``), pyspf's
    ``explanation`` (the domain's ``exp=`` text on a fail, else a description), which
    ``identity`` was checked (``"mailfrom"``, or ``"helo"`` for the null sender) and its
    ``domain``."""

    result: str
    explanation: str
    identity: str
    domain: str


def _valid_name(name: str) -> bool:
    try:
        encoded = name.encode("ascii")
    except UnicodeEncodeError:
        return False
    labels = encoded.split(b".")
    return len(encoded) <= 253 and all(0 < len(label) < 64 for label in labels)


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's ``DNSLookup``: ``[((name, type), value), ...]`` from our resolver."""
    resolver = getattr(_local, "resolver", None)
    if resolver is None:
        return _library_lookup(name, qtype, strict, timeout)
    name = str(name).rstrip(".")
    rtype = _TYPES.get(qtype)
    if rtype is None or not _valid_name(name):
        return []
    try:
        records = resolver.query(name, rtype)
    except NameNotFound:
        return []
    except TemporaryDNSError as e:
        raise spf.TempError(f"DNS {e}") from None
    key = (name, qtype)
    out = []
    for record in records:
        if rtype == dns.A:
            value = record.dottedQuad()
        elif rtype == dns.AAAA:
            value = socket.inet_ntop(socket.AF_INET6, record.address)
        elif rtype == dns.MX:
            value = (record.preference, str(record.name).rstrip("."))
        elif rtype in (dns.PTR, dns.CNAME):
            value = str(record.name).rstrip(".")
        else:
            value = tuple(record.data)
        out.append((key, value))
    return out


spf.DNSLookup = _lookup


def check_host(
    resolver,
    ip: str,
    sender: str,
    helo: str,
    *,
    receiver: str = "",
    query_seconds: float = DEFAULT_QUERY_SECONDS,
    strict=True,
    default_explanation: str | None = None,
) -> SPFCheck:
    """RFC 7208 ``check_host()`` for the client ``ip``, the MAIL FROM ``sender`` ("" for the
    null sender, which checks ``postmaster@<helo>``) and the ``helo`` name, asking DNS through
    ``resolver`` (a ``BlockingResolver``). ``receiver`` is our host name (the ``%{r}``
    macro). Blocks: call it in a thread."""
    if spf.DNSLookup is not _lookup:
        raise RuntimeError(
            "spf.DNSLookup was replaced by someone else: refusing to let pyspf use another resolver"
        )
    identity = "mailfrom" if sender else "helo"
    domain = (sender.rpartition("@")[2] if sender else helo).strip().rstrip(".").lower()
    if not sender and (not helo or helo.startswith("[") or _is_address(helo)):
        return SPFCheck("none", "no HELO domain to check", identity, domain)
    _local.resolver = resolver
    try:
        query = spf.query(
            i=ip,
            s=sender,
            h=helo,
            receiver=receiver or None,
            strict=strict,
            querytime=query_seconds,
        )
        if default_explanation is not None:
            query.set_default_explanation(default_explanation)
        result, _code, explanation = query.check()
    except spf.PermError as e:  # an address pyspf cannot parse
        result, explanation = "permerror", str(e)
    except spf.TempError as e:
        result, explanation = "temperror", str(e)
    finally:
        _local.resolver = None
    result = _OLD_NAMES.get(result, result)
    if result not in RESULTS:
        result = "permerror"
    return SPFCheck(result, str(explanation or ""), identity, domain)


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
