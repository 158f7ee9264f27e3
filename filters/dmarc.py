"""``dmarc``: apply the From domain's DMARC policy (RFC 7489), at DATA.

The policy is looked up at ``_dmarc.<From domain>``, then at its organizational domain (Public
Suffix List). DMARC passes when SPF or a DKIM signature passed for a domain aligned with the
From domain (the same organizational domain, or the same domain under ``aspf=s``/
``adkim=s``); it reads the SPF and DKIM results the filters before it in the chain found (the
``spf=`` and ``dkim=`` results, with ``smtp.mailfrom``/``smtp.helo`` and ``header.d``), so put
``spf`` and ``dkim`` before ``dmarc``.

A failing message gets what the policy (``p=``, or ``sp=`` for a subdomain under its
organizational domain's record) asks, after ``pct=`` sampling: ``reject`` refuses it with
``550 5.7.1``, ``quarantine`` puts it in Junk, ``none`` records. The results: ``dmarc=fail
(p=reject sp=none dis=reject) header.from=example.org`` in Authentication-Results;
``auth_results.dmarc``, ``dmarc_policy``, ``dmarc_domain``, ``dmarc_disposition``,
``dmarc_alignment``; a fail scores 3 (``dmarc_fail``), plus 2 when the disposition is
quarantine (``dmarc_quarantine``) and 10 when it is reject (``dmarc_reject``), API.md 2.1.

Options: ``action`` (``"policy"``: do what the domain asks, the default; ``"quarantine"``:
never refuse, Junk instead; ``"record"``: only record), ``temperror`` (``"tempfail"``, the
default: when a DNS failure leaves the result open, ``451 4.7.1`` so the client retries;
``"record"``), ``arc_trusted_sealers`` (domains whose ARC seal, when the ``arc`` filter before
this one found a valid chain whose newest set they sealed, overrides a fail: local policy per
RFC 7489 7.2 and RFC 8617 7.2; default none).
"""

from __future__ import annotations

import random

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    continue_,
    quarantine,
    reject,
    tempfail,
)
from haitatsu.mailauth import dmarc, pool

ACTIONS = ("policy", "quarantine", "record")
TEMPERROR_ACTIONS = ("tempfail", "record")

_log = Logger()


def _from_domain(message) -> tuple[str, str]:
    """``(domain, "")`` of the message's single From domain, or ``("", why not)``."""
    fields = message.header("From")
    if len(fields) != 1:
        return "", "no From field" if not fields else "more than one From field"
    domains = {a.rpartition("@")[2].rstrip(".") for a in message.addresses("From")}
    if len(domains) != 1:
        return "", "no From address" if not domains else "From addresses in several domains"
    domain = domains.pop()
    try:
        domain.encode("ascii")
    except UnicodeEncodeError:
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return "", "From domain is not a valid domain name"
    if "." not in domain or not all(domain.split(".")):
        return "", "From domain is not a valid domain name"
    return domain, ""


def _spf(results) -> tuple[str, str]:
    for result in reversed(results):
        if result.method == "spf":
            props = result.properties
            return result.result, props.get("smtp.mailfrom") or props.get("smtp.helo") or ""
    return "none", ""


def _dkim(results) -> list[tuple[str, str]]:
    return [(r.result, r.properties.get("header.d", "")) for r in results if r.method == "dkim"]


def _arc_sealer(results) -> str:
    """The sealer of the newest ARC set of a chain the ``arc`` filter found valid, or ""."""
    for result in reversed(results):
        if result.method == "arc":
            if result.result != "pass":
                return ""
            sealers = result.fields.get("arc_sealers") or []
            return sealers[0] if sealers else ""
    return ""


@implementer(IFilter)
class DMARCFilter:
    name = "dmarc"
    stages = (Stage.DATA,)

    def __init__(self, reactor, action: str, temperror: str, trusted_sealers=(), rng=random):
        self.reactor = reactor
        self.action = action
        self.temperror = temperror
        self.trusted_sealers = frozenset(trusted_sealers)
        self.rng = rng

    async def check(self, stage, context):
        if not dmarc.public_suffix_list_loaded():
            await pool.run(self.reactor, dmarc.public_suffix_list)
        domain, problem = _from_domain(context.message)
        if problem:
            return continue_(results=self._result("permerror", "", reason=problem))
        discovery = await dmarc.discover(context.resolver, domain)
        if discovery.error:
            found = self._result(discovery.error, domain, reason=discovery.reason)
            if discovery.error == "temperror" and self.temperror == "tempfail":
                return self._tempfail(domain, found)
            return continue_(results=found)
        if discovery.record is None:
            return continue_(results=self._result("none", domain))
        results = context.results
        evaluation = dmarc.evaluate(discovery, _spf(results), _dkim(results), self.rng)
        override = ""
        if evaluation.result != "pass":
            sealer = _arc_sealer(results)
            if sealer and sealer in self.trusted_sealers:
                override = f"arc:{sealer}"
            elif evaluation.sampled_out:
                override = "sampled_out"
        found = self._result(evaluation.result, domain, evaluation, override)
        if evaluation.result == "pass" or override.startswith("arc:"):
            return continue_(results=found)
        if evaluation.result == "temperror":
            if self.temperror == "tempfail" and evaluation.policy != "none":
                return self._tempfail(domain, found)
            return continue_(results=found)
        disposition = evaluation.disposition
        if self.action == "record" or disposition == "none":
            return continue_(results=found)
        if disposition == "reject" and self.action == "policy":
            return reject(
                f"rejected by the DMARC policy of {domain}",
                code=550,
                enhanced="5.7.1",
                reason="dmarc_reject",
                results=found,
            )
        return quarantine(reason=f"dmarc_{disposition}", results=found)

    def _tempfail(self, domain, found):
        return tempfail(
            f"DMARC check of {domain} failed for now, try again later",
            enhanced="4.7.1",
            reason="dmarc_temperror",
            results=found,
        )

    def _result(self, result, domain, evaluation=None, override="", reason=""):
        fields = {
            "dmarc": result,
            "dmarc_policy": evaluation.policy if evaluation else "",
            "dmarc_domain": domain,
            "dmarc_disposition": evaluation.disposition if evaluation else "",
            "dmarc_alignment": {
                "spf": bool(evaluation and evaluation.spf_aligned),
                "dkim": bool(evaluation and evaluation.dkim_aligned),
            },
        }
        if override:
            fields["dmarc_override"] = override
        if reason:
            fields["dmarc_reason"] = reason
        comment = ""
        score = 0.0
        spam_reasons: tuple = ()
        if evaluation is not None:
            record_sp = evaluation.policy
            comment = f"p={record_sp.upper()} dis={evaluation.disposition.upper()}"
            if override:
                comment += f" override={override}"
        if result == "fail":
            score = 3.0
            spam_reasons = ("dmarc_fail",)
            disposition = evaluation.disposition if evaluation else "none"
            if override.startswith("arc:"):
                disposition = "none"
            if disposition == "quarantine":
                score += 2.0
                spam_reasons += ("dmarc_quarantine",)
            elif disposition == "reject":
                score += 10.0
                spam_reasons += ("dmarc_reject",)
        return FilterResult(
            method="dmarc",
            result=result,
            comment=comment,
            reason=reason,
            properties={"header.from": domain} if domain else {},
            fields=fields,
            spam_reasons=spam_reasons,
            score=score,
        )


@implementer(IPlugin, IFilterFactory)
class DMARCFactory:
    name = "dmarc"
    description = "DMARC (RFC 7489): alignment of SPF and DKIM with From, and the domain's policy"

    def build(self, options, environment):
        opts = Options(self.name, options)
        action = opts.choice("action", ACTIONS, default="policy")
        temperror = opts.choice("temperror", TEMPERROR_ACTIONS, default="tempfail")
        sealers = [
            s.strip().rstrip(".").lower()
            for s in opts.strings("arc_trusted_sealers", default=())
            if s.strip()
        ]
        opts.done()
        names = [getattr(spec, "name", "") for spec in getattr(environment.config, "filters", ())]
        if "spf" not in names and "dkim" not in names:
            _log.warn(
                "filter dmarc: neither spf nor dkim is in the chain; every message with a "
                "DMARC policy will fail it"
            )
        return DMARCFilter(environment.reactor, action, temperror, sealers)


dmarc_factory = DMARCFactory()
