"""DMARC (RFC 7489): policy records, organizational domains, identifier alignment, the result.

``discover`` finds the policy (``_dmarc.<From domain>``, else ``_dmarc.<organizational
domain>``) through our asynchronous resolver; ``evaluate`` aligns the SPF and DKIM results
with the From domain and says what the policy asks for. The organizational domain comes from
the Public Suffix List bundled with ``publicsuffixlist`` (ICANN and private sections, as
RFC 7489 3.2 and most implementations use it); loading it takes a moment, so the first call
of ``public_suffix_list`` belongs in a thread.
"""

from __future__ import annotations

import random
import re
import threading

import attrs

from haitatsu.dns import NameNotFound, TemporaryDNSError

POLICIES = ("none", "quarantine", "reject")
#: What a policy becomes for a message left out by ``pct`` (RFC 7489 6.3).
_SAMPLED_OUT = {"reject": "quarantine", "quarantine": "none", "none": "none"}

_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|\Z)")
_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_psl = None
_psl_lock = threading.Lock()


def public_suffix_list():
    """The bundled Public Suffix List, loaded on first use (blocks for a moment)."""
    global _psl
    if _psl is None:
        with _psl_lock:
            if _psl is None:
                from publicsuffixlist import PublicSuffixList

                _psl = PublicSuffixList()
    return _psl


def public_suffix_list_loaded() -> bool:
    return _psl is not None


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (``example.co.uk`` for
    ``mail.example.co.uk``); a name that is itself a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return public_suffix_list().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """Whether an authenticated domain is aligned with the From domain: equal (``s``trict) or
    with the same organizational domain (``r``elaxed)."""
    identifier = identifier.lower().rstrip(".")
    from_domain = from_domain.lower().rstrip(".")
    if not identifier or not from_domain:
        return False
    if identifier == from_domain:
        return True
    if mode == "s":
        return False
    return organizational_domain(identifier) == organizational_domain(from_domain)


class RecordError(ValueError):
    """A DMARC record that cannot be used."""


@attrs.frozen
class DMARCRecord:
    """A parsed record (RFC 7489 6.3). Tags with invalid values fall back to their defaults,
    as section 6.3 asks; reporting tags are kept as given but not acted on."""

    policy: str
    subdomain_policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: str = ""
    ruf: str = ""
    #: Tags that were ignored because their values are invalid.
    ignored: tuple = ()


def is_dmarc_record(text: str) -> bool:
    return bool(_VERSION.match(text))


def parse_record(text: str) -> DMARCRecord:
    """Parse a ``v=DMARC1; p=...`` record; ``RecordError`` when it is not one or cannot be
    used (RFC 7489 6.6.3: a missing or invalid ``p=`` is ``none`` when ``rua=`` names a
    report address, and makes the record unusable otherwise)."""
    if not is_dmarc_record(text):
        raise RecordError("not a DMARC1 record")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not eq or not _TAG.match(name):
            raise RecordError(f"malformed tag {part[:40]!r}")
        tags.setdefault(name, value.strip())
    ignored = []

    def choice(tag, allowed, default):
        value = tags.get(tag)
        if value is None:
            return default
        value = value.lower()
        if value not in allowed:
            ignored.append(tag)
            return default
        return value

    policy = choice("p", POLICIES, None)
    rua = tags.get("rua", "")
    if policy is None:
        if "mailto:" not in rua.lower():
            raise RecordError("no valid p= (and no rua=)")
        policy = "none"
    subdomain = choice("sp", POLICIES, None)
    pct_text = tags.get("pct")
    pct = 100
    if pct_text is not None:
        if re.fullmatch(r"\d{1,3}", pct_text) and int(pct_text) <= 100:
            pct = int(pct_text)
        else:
            ignored.append("pct")
    return DMARCRecord(
        policy=policy,
        subdomain_policy=subdomain,
        adkim=choice("adkim", ("r", "s"), "r"),
        aspf=choice("aspf", ("r", "s"), "r"),
        pct=pct,
        rua=rua,
        ruf=tags.get("ruf", ""),
        ignored=tuple(sorted(ignored)),
    )


@attrs.frozen
class Discovery:
    """Where the policy was found (``domain``: the From domain or its organizational domain)
    and the ``record``; ``error`` is ``"temperror"`` or ``"permerror"`` with a ``reason`` when
    discovery failed; no record and no error: the domain has no DMARC policy."""

    from_domain: str
    org_domain: str
    domain: str = ""
    record: DMARCRecord | None = None
    error: str = ""
    reason: str = ""


async def _records_at(resolver, name: str) -> list[str]:
    try:
        texts = await resolver.txt(name)
    except NameNotFound:
        return []
    return [t for t in texts if is_dmarc_record(t)]


async def discover(resolver, from_domain: str) -> Discovery:
    """RFC 7489 6.6.3: the record at ``_dmarc.<from_domain>``, else at the organizational
    domain's. Needs ``public_suffix_list()`` loaded."""
    from_domain = from_domain.lower().rstrip(".")
    org = organizational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, org)):
        try:
            texts = await _records_at(resolver, f"_dmarc.{domain}")
        except TemporaryDNSError as e:
            return Discovery(from_domain, org, domain, error="temperror", reason=str(e))
        if not texts:
            continue
        if len(texts) > 1:
            return Discovery(
                from_domain, org, domain, error="permerror", reason="more than one DMARC record"
            )
        try:
            record = parse_record(texts[0])
        except RecordError as e:
            return Discovery(from_domain, org, domain, error="permerror", reason=str(e))
        return Discovery(from_domain, org, domain, record)
    return Discovery(from_domain, org)


@attrs.frozen
class Evaluation:
    """The DMARC result for one message: ``result`` (``pass``, ``fail``, ``temperror``), the
    ``policy`` that applies to the From domain (``p=`` or ``sp=``), the ``disposition``
    (what the policy asks for this message, after ``pct``), the alignments found, and
    ``sampled_out`` when ``pct`` spared the message."""

    result: str
    policy: str
    disposition: str
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False


def evaluate(discovery: Discovery, spf, dkim, rng=random) -> Evaluation:
    """Align ``spf`` (``(result, domain)``: the SPF result and the domain it authenticated,
    the MAIL FROM's or, for the null sender, the HELO's) and ``dkim`` (``[(result, d=)]``)
    with the From domain, under ``discovery.record``."""
    record = discovery.record
    from_domain = discovery.from_domain
    if discovery.domain == from_domain:
        policy = record.policy
    else:
        policy = record.subdomain_policy or record.policy
    spf_result, spf_domain = spf
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(r == "pass" and aligned(d, from_domain, record.adkim) for r, d in dkim)
    if spf_ok or dkim_ok:
        return Evaluation("pass", policy, "none", spf_ok, dkim_ok)
    spf_temporary = spf_result == "temperror" and aligned(spf_domain, from_domain, record.aspf)
    dkim_temporary = any(
        r == "temperror" and aligned(d, from_domain, record.adkim) for r, d in dkim
    )
    temporary = spf_temporary or dkim_temporary
    sampled_out = record.pct < 100 and rng.random() * 100 >= record.pct
    disposition = _SAMPLED_OUT[policy] if sampled_out else policy
    return Evaluation(
        "temperror" if temporary else "fail", policy, disposition, sampled_out=sampled_out
    )
