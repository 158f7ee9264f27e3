"""``dkim``: verify every DKIM signature of the message (RFC 6376), at DATA.

dkimpy checks each signature in a thread, with the keys from the server's resolver. dkimpy
wants the message as one bytes object; we give it the header section only and hash the body
ourselves while reading the spool file once in chunks (``haitatsu.mailauth.bodyhash``), so the
memory a check takes does not grow with the message.

Each signature is one ``dkim=`` resinfo of ``Authentication-Results`` (``dkim=pass
header.d=example.org header.s=sel header.a=rsa-sha256 header.b=AbCdEfGh``) and one entry of
``auth_results.dkim_signatures`` (``{"result", "d", "s", "a", "i", "reason"}``);
``auth_results.dkim`` is the message's summary (``pass`` when any signature passes, else
``temperror``, ``fail``, ``policy``, ``permerror``, ``neutral`` in that order, ``none`` when
it has none) and ``dkim_domain`` the ``d=`` of the passing signature (the one aligned with
the From domain, if any). No pass and a fail scores 2 (``dkim_fail``, API.md 2.1).

A failing signature alone is no reason to refuse a message (RFC 6376 6.3): DMARC decides.

Options: ``min_key_bits`` (RSA keys shorter than this give ``policy``; default 1024),
``max_signatures`` (signatures checked, the topmost first; default 10).
"""

from __future__ import annotations

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
)
from haitatsu.mailauth import pool
from haitatsu.mailauth.dkim import verify_dkim

#: The summary result when no signature passes: the first found in this order.
_PRECEDENCE = ("temperror", "fail", "policy", "permerror", "neutral")


def summary(results) -> str:
    found = {r.result for r in results}
    if not found:
        return "none"
    if "pass" in found:
        return "pass"
    for result in _PRECEDENCE:
        if result in found:
            return result
    return "neutral"


@implementer(IFilter)
class DKIMFilter:
    name = "dkim"
    stages = (Stage.DATA,)

    def __init__(self, reactor, min_key_bits: int, max_signatures: int):
        self.reactor = reactor
        self.min_key_bits = min_key_bits
        self.max_signatures = max_signatures

    async def check(self, stage, context):
        blocking = BlockingResolver(context.resolver, self.reactor)
        signatures = await pool.run(
            self.reactor,
            verify_dkim,
            context.message.path,
            blocking,
            min_key_bits=self.min_key_bits,
            max_signatures=self.max_signatures,
        )
        overall = summary(signatures)
        from_domains = {a.rpartition("@")[2] for a in context.message.addresses("From")}
        passing = [s for s in signatures if s.result == "pass"]
        chosen = [s for s in passing if s.domain in from_domains] or passing or signatures
        found = [
            FilterResult(
                fields={
                    "dkim": overall,
                    "dkim_domain": chosen[0].domain if chosen else "",
                    "dkim_signatures": [s.as_json() for s in signatures],
                },
                spam_reasons=("dkim_fail",) if overall == "fail" else (),
                score=2.0 if overall == "fail" else 0.0,
            )
        ]
        if not signatures:
            found.append(FilterResult(method="dkim", result="none"))
        for s in signatures:
            found.append(
                FilterResult(
                    method="dkim",
                    result=s.result,
                    reason="" if s.result == "pass" else s.reason[:200],
                    properties={
                        "header.d": s.domain,
                        "header.i": s.identity,
                        "header.s": s.selector,
                        "header.a": s.algorithm,
                        "header.b": s.b,
                    },
                )
            )
        return continue_(results=found)


@implementer(IPlugin, IFilterFactory)
class DKIMFactory:
    name = "dkim"
    description = "verify every DKIM signature (RFC 6376), via dkimpy"

    def build(self, options, environment):
        opts = Options(self.name, options)
        min_key_bits = opts.integer("min_key_bits", default=1024, minimum=512, maximum=16384)
        max_signatures = opts.integer("max_signatures", default=10, minimum=1, maximum=50)
        opts.done()
        return DKIMFilter(environment.reactor, min_key_bits, max_signatures)


dkim = DKIMFactory()
