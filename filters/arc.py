"""``arc``: validate the message's ARC chain and, when configured, seal it (RFC 8617), at DATA.

Validation (dkimpy, in a thread, keys from the server's resolver, the body hashed as it
streams) gives ``arc=pass``, ``fail`` or ``none`` (no ARC sets) in Authentication-Results,
with ``smtp.remote-ip`` and, for a chain whose older message signatures no longer validate,
``header.oldest-pass``; ``auth_results`` gets ``arc``, ``arc_instance``, ``arc_sealers`` (the
``d=`` of each ARC-Seal, newest first) and ``arc_reason``. The ``dmarc`` filter may let a
valid chain sealed by a domain you trust override a DMARC fail (its ``arc_trusted_sealers``).

Sealing adds the next ARC set (``ARC-Seal``, ``ARC-Message-Signature``,
``ARC-Authentication-Results``) to the stored copy, signed rsa-sha256 with the configured key:
for mail this server forwards on (routes to other hosts), so the next hop can see what we
found. The ARC-Authentication-Results carries the results of the filters before this one and
this one's: put the sealing entry last. A filter may appear twice: an ``arc`` entry before
``dmarc`` to validate, and one with ``verify = false`` and ``seal`` after it, which seals with
the first one's result.

Options: ``verify`` (default true; false uses the result of an ``arc`` entry before this one,
and validates only if there is none), ``seal`` (``{ domain, selector, key_file }``: the RSA
private key in PEM, published as ``<selector>._domainkey.<domain>``; default: no sealing),
``min_key_bits`` (1024).
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger
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
from haitatsu.filtering.results import resinfo
from haitatsu.mailauth import pool
from haitatsu.mailauth.dkim import load_sealing_key, seal_arc, verify_arc


@implementer(IFilter)
class ARCFilter:
    name = "arc"
    stages = (Stage.DATA,)
    _log = Logger()

    def __init__(self, reactor, verify: bool, key=None, min_key_bits: int = 1024):
        self.reactor = reactor
        self.verify = verify
        self.key = key
        self.min_key_bits = min_key_bits

    def _thread(self, f, *args, **kwargs):
        return pool.run(self.reactor, f, *args, **kwargs)

    async def check(self, stage, context):
        found = []
        earlier = [r for r in context.results if r.method == "arc"]
        if self.verify or not earlier:
            blocking = BlockingResolver(context.resolver, self.reactor)
            chain = await self._thread(
                verify_arc, context.message.path, blocking, min_key_bits=self.min_key_bits
            )
            properties = {"smtp.remote-ip": context.session.remote_ip}
            if chain.result == "pass" and chain.oldest_pass:
                properties["header.oldest-pass"] = str(chain.oldest_pass)
            found.append(
                FilterResult(
                    method="arc",
                    result=chain.result,
                    comment=f"i={chain.instance}" if chain.instance else "",
                    reason=chain.reason[:200] if chain.result == "fail" else "",
                    properties=properties,
                    fields={
                        "arc": chain.result,
                        "arc_instance": chain.instance,
                        "arc_sealers": [domain for _, domain in chain.sealers],
                        "arc_reason": chain.reason,
                    },
                )
            )
            cv = chain.result
        else:
            cv = earlier[-1].result
        headers = []
        if self.key is not None:
            # Without comments: the ARC-Authentication-Results is one line in the stored copy.
            infos = [
                info
                for info in (resinfo(attrs.evolve(r, comment="")) for r in context.results + found)
                if info
            ]
            try:
                headers = await self._thread(
                    seal_arc,
                    context.message.path,
                    self.key,
                    context.session.hostname,
                    infos,
                    cv if cv in ("pass", "fail", "none") else "fail",
                    int(context.clock.seconds()),
                )
            except Exception as e:
                # A message we cannot seal (no From, 50 sets already) is delivered unsealed.
                self._log.warn(
                    "arc: not sealing {trace_id}: {error}",
                    trace_id=context.trace_id,
                    error=f"{type(e).__name__}: {e}",
                )
                found.append(FilterResult(fields={"arc_sealed": False, "arc_seal_error": str(e)}))
            else:
                found.append(FilterResult(fields={"arc_sealed": True}))
        return continue_(results=found, headers=headers)


@implementer(IPlugin, IFilterFactory)
class ARCFactory:
    name = "arc"
    description = "ARC (RFC 8617): validate the chain, and seal with a configured key"

    def build(self, options, environment):
        opts = Options(self.name, options)
        verify = opts.boolean("verify", default=True)
        min_key_bits = opts.integer("min_key_bits", default=1024, minimum=512, maximum=16384)
        key = None
        if opts.has("seal"):
            seal = opts.block("seal")
            domain = seal.string("domain").strip().rstrip(".").lower()
            selector = seal.string("selector").strip()
            key_file = seal.string("key_file")
            seal.done()
            if not domain or not selector:
                raise opts.error("seal", "domain and selector must not be empty")
            try:
                with open(key_file, "rb") as f:
                    pem = f.read(1024 * 1024)
            except OSError as e:
                raise seal.error("key_file", f"cannot read {key_file}: {e.strerror}") from None
            try:
                key = load_sealing_key(domain, selector, pem)
            except ValueError as e:
                raise seal.error("key_file", f"{key_file}: {e}") from None
        opts.done()
        return ARCFilter(environment.reactor, verify, key, min_key_bits)


arc = ARCFactory()
