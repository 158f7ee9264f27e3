"""``header_validate``: RFC 5322 sanity of the header section (section 3.6), at DATA.

Checks, each named in ``checks`` (all by default):

- ``from``: exactly one From field, with at least one address (``missing_from``,
  ``multiple_from``, ``bad_from``);
- ``date``: exactly one Date field that parses (``missing_date``, ``multiple_date``,
  ``bad_date``);
- ``message_id``: one Message-ID of the form ``<left@right>`` (``missing_message_id``,
  ``multiple_message_id``, ``bad_message_id``); RFC 5322 only says SHOULD, so its absence
  is recorded but never refused unless ``message_id_required`` is true;
- ``singletons``: no second Sender, Reply-To, To, Cc, Bcc, In-Reply-To, References or Subject
  (``duplicate_<field>``).

Problems go into ``spam_reasons`` and ``auth_results.header_problems``; a missing From scores
2 and a missing Message-ID 1 (API.md 2.1). ``action`` decides what else happens: ``record``
(the default), ``quarantine`` (Junk) or ``reject`` (``550 5.6.0``).
"""

from __future__ import annotations

import email.utils
import re

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

CHECKS = ("from", "date", "message_id", "singletons")
SINGLETONS = ("sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "references", "subject")
SCORES = {"missing_from": 2.0, "missing_message_id": 1.0}

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_MSG_ID = re.compile(rf"\s*<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[\x21-\x5a\x5e-\x7e]*\])>\s*\Z")


def problems(fields: list[tuple[str, str]], checks=CHECKS) -> list[str]:
    """The problems of a header section given as ``(name, value)`` pairs."""
    by_name: dict[str, list[str]] = {}
    for name, value in fields:
        by_name.setdefault(name.lower(), []).append(value)
    found = []
    if "from" in checks:
        values = by_name.get("from", [])
        if not values:
            found.append("missing_from")
        elif len(values) > 1:
            found.append("multiple_from")
        elif not any("@" in a for _, a in email.utils.getaddresses(values)):
            found.append("bad_from")
    if "date" in checks:
        values = by_name.get("date", [])
        if not values:
            found.append("missing_date")
        elif len(values) > 1:
            found.append("multiple_date")
        else:
            try:
                if email.utils.parsedate_to_datetime(values[0]) is None:
                    raise ValueError
            except (TypeError, ValueError, IndexError, OverflowError):
                found.append("bad_date")
    if "message_id" in checks:
        values = by_name.get("message-id", [])
        if not values:
            found.append("missing_message_id")
        elif len(values) > 1:
            found.append("multiple_message_id")
        elif not _MSG_ID.match(values[0]):
            found.append("bad_message_id")
    if "singletons" in checks:
        for name in SINGLETONS:
            if len(by_name.get(name, ())) > 1:
                found.append(f"duplicate_{name.replace('-', '_')}")
    return found


@implementer(IFilter)
class HeaderValidateFilter:
    name = "header_validate"
    stages = (Stage.DATA,)

    def __init__(self, checks, action: str, message_id_required: bool):
        self.checks = tuple(checks)
        self.action = action
        self.message_id_required = message_id_required

    def check(self, stage, context):
        found = problems(context.message.headers(), self.checks)
        if not found:
            return None
        result = FilterResult(
            fields={"header_problems": found},
            spam_reasons=tuple(found),
            score=sum(SCORES.get(p, 0.0) for p in found),
        )
        serious = [p for p in found if p != "missing_message_id" or self.message_id_required]
        reason = f"header_{found[0]}"
        if serious and self.action == "reject":
            return reject(
                f"message header violates RFC 5322: {', '.join(serious)}",
                enhanced="5.6.0",
                reason=reason,
                results=result,
            )
        if serious and self.action == "quarantine":
            return quarantine(reason=reason, results=result)
        return continue_(results=result)


@implementer(IPlugin, IFilterFactory)
class HeaderValidateFactory:
    name = "header_validate"
    description = "RFC 5322 header sanity: one From, a parseable Date, a Message-ID"

    def build(self, options, environment):
        opts = Options(self.name, options)
        checks = opts.strings("checks", default=CHECKS)
        for check in checks:
            if check not in CHECKS:
                raise opts.error("checks", f"unknown check {check!r} (checks: {', '.join(CHECKS)})")
        action = opts.choice("action", ["record", "quarantine", "reject"], default="record")
        required = opts.boolean("message_id_required", default=False)
        opts.done()
        return HeaderValidateFilter(checks, action, required)


header_validate = HeaderValidateFactory()
