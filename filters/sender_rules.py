"""``sender_rules``: the allow and block lists of the REST API (API.md 1.12) on inbound mail.

At DATA, the rules of scope ``global``, ``mailbox`` (a recipient's mailbox) and ``domain`` (a
recipient's domain) are checked oldest first; the first that matches decides:

- ``email`` matches any address in From, ``domain`` the domain of the first From address,
  ``ip`` and ``cidr`` the connecting client's address;
- ``allow``: 5 points off the spam score;
- ``block``: 10 points, ``blocklist`` among the spam reasons, and the message goes to Junk, or
  is refused with ``550 5.7.1`` when the rule's action is ``reject``.

``auth_results`` records ``list_kind`` and ``list_action``. The original never evaluated rules
of scope ``domain`` (API.md 1.12 ⚠); we do, unless ``domain_scope = false``.

Options: ``domain_scope`` (Boolean, default true).
"""

from __future__ import annotations

import ipaddress

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
)
from haitatsu.filtering.helpers import inbound_filter_data

ALLOW_SCORE = -5.0
BLOCK_SCORE = 10.0


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def matches(rule, from_addresses: list[str], remote_ip: str) -> bool:
    """Whether one stored rule matches the message (API.md 1.12)."""
    value = rule.value.lower()
    if rule.match_type == "email":
        return value in from_addresses
    if rule.match_type == "domain":
        return bool(from_addresses) and from_addresses[0].rpartition("@")[2] == value
    ip = _ip(remote_ip)
    if ip is None:
        return False
    if rule.match_type == "ip":
        return _ip(value) == ip
    if rule.match_type == "cidr":
        try:
            return ip in ipaddress.ip_network(value, strict=False)
        except (ValueError, TypeError):
            return False
    return False


@implementer(IFilter)
class SenderRulesFilter:
    name = "sender_rules"
    stages = (Stage.DATA,)

    def __init__(self, store, domain_scope: bool):
        self.store = store
        self.domain_scope = domain_scope

    async def check(self, stage, context):
        shared = inbound_filter_data(self.store, context)
        if shared is not None:
            # One read with the spam_score and sieve filters' (the recipients' domains are
            # always part of it: their rules are left out here unless ``domain_scope``).
            rules = (await shared).sender_rules
            if not self.domain_scope:
                rules = [r for r in rules if r.scope != "domain"]
        else:
            recipients = context.envelope.recipients
            mailbox_ids = sorted({m for r in recipients for m in r.mailbox_ids})
            domains = sorted({r.domain for r in recipients}) if self.domain_scope else []
            rules = await self.store.sender_rules_for(mailbox_ids, domains=domains)
        if not rules:
            return None
        from_addresses = context.message.addresses("From")
        for rule in rules:
            if matches(rule, from_addresses, context.session.remote_ip):
                break
        else:
            return None
        fields = {"list_kind": rule.kind, "list_action": rule.action}
        if rule.kind == "allow":
            return continue_(
                reason="sender_rule_allow",
                results=FilterResult(fields=fields, score=ALLOW_SCORE, comment=rule.id),
            )
        result = FilterResult(
            fields=fields, spam_reasons=("blocklist",), score=BLOCK_SCORE, comment=rule.id
        )
        if rule.action == "reject":
            return reject(reason="sender_rule_block", results=result)
        return quarantine(reason="sender_rule_block", results=result)


@implementer(IPlugin, IFilterFactory)
class SenderRulesFactory:
    name = "sender_rules"
    description = "allow and block lists from the REST API (/api/v1/rules/sender)"

    def build(self, options, environment):
        opts = Options(self.name, options)
        domain_scope = opts.boolean("domain_scope", default=True)
        opts.done()
        return SenderRulesFilter(environment.store, domain_scope)


sender_rules = SenderRulesFactory()
