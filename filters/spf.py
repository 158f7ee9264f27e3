"""``spf``: check the client against the sender domain's SPF policy (RFC 7208), at MAIL.

pyspf evaluates the policy in a thread; every DNS answer it gets comes from the server's
resolver (``haitatsu.mailauth.spf``). The identity checked is the MAIL FROM domain, or for the
null sender the HELO name (``postmaster@<helo>``, RFC 7208 2.4). The result (``pass``,
``fail``, ``softfail``, ``neutral``, ``none``, ``temperror``, ``permerror``) goes into
``Authentication-Results`` (``spf=fail smtp.mailfrom=example.org``) and ``auth_results``
(``spf``, ``spf_domain``, ``spf_reason``); a fail scores 2 (``spf_fail``), a softfail 1
(``spf_softfail``), as API.md 2.1 says.

By default SPF only records: DMARC (the ``dmarc`` filter) is the policy layer, and a message
whose SPF fails (forwarded mail does) may still pass DMARC through its DKIM signature (RFC 7489
10.1). Each result can be made to act:

Options: ``fail`` (``"record"``, ``"quarantine"`` or ``"reject"``: ``550 5.7.23``),
``softfail`` (``"record"`` or ``"quarantine"``), ``permerror`` (``"record"`` or ``"reject"``:
``550 5.7.24``), ``temperror`` (``"record"`` or ``"tempfail"``: ``451 4.7.24``), all
``"record"`` by default; ``skip_networks`` (CIDRs not checked, such as your own relays;
default none); ``query_seconds`` (how long all the lookups of one check may take, 20).
"""

from __future__ import annotations

import ipaddress
import re

from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.dns import BlockingResolver
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
from haitatsu.mailauth import pool
from haitatsu.mailauth.spf import DEFAULT_QUERY_SECONDS, check_host

#: Options per result, the first being the default.
ACTIONS = {
    "fail": ("record", "quarantine", "reject"),
    "softfail": ("record", "quarantine"),
    "permerror": ("record", "reject"),
    "temperror": ("record", "tempfail"),
}

#: API.md 2.1.
SCORES = {"fail": 2.0, "softfail": 1.0}

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def _reply_text(text: str, limit: int = 200) -> str:
    """Text from DNS (an ``exp=`` explanation) made safe for an SMTP reply line."""
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _comment(result: str, who: str, ip: str, explanation: str) -> str:
    return {
        "pass": f"domain of {who} designates {ip} as permitted sender",
        "fail": f"domain of {who} does not designate {ip} as permitted sender",
        "softfail": f"transitioning domain of {who} does not designate {ip} as permitted sender",
        "neutral": f"{ip} is neither permitted nor denied by domain of {who}",
        "none": f"domain of {who} does not designate permitted sender hosts",
        "temperror": f"error in processing during lookup of {who}: {explanation}",
        "permerror": f"permanent error in processing domain of {who}: {explanation}",
    }[result]


@implementer(IFilter)
class SPFFilter:
    name = "spf"
    stages = (Stage.MAIL,)

    def __init__(self, reactor, actions: dict, skip_networks=(), query_seconds=20.0):
        self.reactor = reactor
        self.actions = actions
        self.skip_networks = tuple(skip_networks)
        self.query_seconds = query_seconds

    async def check(self, stage, context):
        session = context.session
        if session.authenticated:
            return None
        ip = session.remote_ip
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is not None and any(address in net for net in self.skip_networks):
            return None
        sender = context.envelope.mail_from
        helo = session.helo or ""
        blocking = BlockingResolver(context.resolver, self.reactor)
        outcome = await pool.run(
            self.reactor,
            check_host,
            blocking,
            ip,
            sender,
            helo,
            receiver=session.hostname,
            query_seconds=self.query_seconds,
        )
        result = outcome.result
        who = sender or f"postmaster@{helo}"
        if outcome.identity == "mailfrom":
            properties = {"smtp.mailfrom": outcome.domain}
        else:
            properties = {"smtp.helo": helo}
        found = FilterResult(
            method="spf",
            result=result,
            comment=f"{session.hostname}: {_comment(result, who, ip, outcome.explanation)}",
            properties=properties,
            fields={
                "spf": result,
                "spf_domain": outcome.domain,
                "spf_reason": outcome.explanation,
            },
            spam_reasons=(f"spf_{result}",) if result in SCORES else (),
            score=SCORES.get(result, 0.0),
        )
        action = self.actions.get(result, "record")
        explanation = _reply_text(outcome.explanation)
        if action == "reject" and result == "fail":
            return reject(
                f"SPF check failed for {outcome.domain}: {explanation}",
                enhanced="5.7.23",
                reason="spf_fail",
                results=found,
            )
        if action == "reject" and result == "permerror":
            return reject(
                f"SPF record of {outcome.domain} is broken: {explanation}",
                enhanced="5.7.24",
                reason="spf_permerror",
                results=found,
            )
        if action == "tempfail":
            return tempfail(
                f"SPF check of {outcome.domain} failed for now, try again later",
                enhanced="4.7.24",
                reason="spf_temperror",
                results=found,
            )
        if action == "quarantine":
            return quarantine(reason=f"spf_{result}", results=found)
        return continue_(results=found)


@implementer(IPlugin, IFilterFactory)
class SPFFactory:
    name = "spf"
    description = "SPF (RFC 7208) of the MAIL FROM (or HELO) domain, via pyspf"

    def build(self, options, environment):
        opts = Options(self.name, options)
        actions = {
            result: opts.choice(result, choices, default=choices[0])
            for result, choices in ACTIONS.items()
        }
        networks = []
        for cidr in opts.strings("skip_networks", default=()):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise opts.error("skip_networks", f"{cidr!r} is not a network") from None
        query_seconds = opts.number(
            "query_seconds", default=DEFAULT_QUERY_SECONDS, minimum=1, maximum=300
        )
        opts.done()
        return SPFFilter(environment.reactor, actions, networks, query_seconds)


spf = SPFFactory()
