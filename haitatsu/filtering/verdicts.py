"""Verdicts and results: what a filter answers, and what it found.

A filter's ``check`` returns a ``Verdict`` (or None, which means ``CONTINUE``), directly or
through a Deferred or a coroutine. The verdict says what should happen to the connection,
transaction, recipient or message (``action``), how the client is answered when it is refused
(``code``, ``enhanced``, ``text``), why (``reason``, a short token such as ``dnsbl:zen.example``
that reaches the log, the metrics and the stored ``auth_results``), which header fields the
stored message gets, and what the filter found (``results``: the ``Authentication-Results``
header and the ``auth_results`` JSON are built from them).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

import attrs


class Stage(enum.StrEnum):
    """The points at which filters run. ``DELIVERY`` runs once per recipient mailbox, after
    ``DATA`` accepted the message and before it is stored."""

    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DELIVERY = "delivery"


STAGES = tuple(Stage)


class Action(enum.StrEnum):
    """What a verdict does (DESIGN.md, "Filters")."""

    #: No objection; the next filter runs. Results and headers are kept.
    CONTINUE = "continue"
    #: Stop this stage's chain: the connection, command or message is accepted as far as the
    #: filters go (the server's own checks still apply).
    ACCEPT = "accept"
    #: Refuse with a 5xx reply.
    REJECT = "reject"
    #: Refuse with a 4xx reply; the client tries again later.
    TEMPFAIL = "tempfail"
    #: Answer as if accepted, but store nothing (for the transaction, the recipient or the
    #: message, depending on the stage).
    DISCARD = "discard"
    #: Deliver to the Junk folder. Sticky for the rest of the transaction (at CONNECT and HELO,
    #: for the rest of the session), but the chain goes on and a later REJECT or TEMPFAIL wins.
    QUARANTINE = "quarantine"


#: Actions that end a stage's chain.
DECISIVE = frozenset({Action.ACCEPT, Action.REJECT, Action.TEMPFAIL, Action.DISCARD})

_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}\Z")
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
_TOKEN = re.compile(r"[^\x00-\x20\x7f]+\Z")


def _headers(value: Iterable) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        value = value.items()
    out = []
    for name, text in value:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header field name")
        if not isinstance(text, str):
            raise ValueError(f"header {name}: value must be a str")
        out.append((name, text))
    return tuple(out)


def _results(value: Iterable) -> tuple[FilterResult, ...]:
    if isinstance(value, FilterResult):
        return (value,)
    out = tuple(value)
    for result in out:
        if not isinstance(result, FilterResult):
            raise ValueError(f"{result!r} is not a FilterResult")
    return out


@attrs.frozen
class FilterResult:
    """What one check found, for ``Authentication-Results`` (RFC 8601) and ``auth_results``.

    ``method`` and ``result`` make a resinfo of the header (``spf=pass``): set them only for
    registered methods (``spf``, ``dkim``, ``dmarc``, ``arc``, ``iprev``, ``auth``, ...);
    a result without a method goes into the JSON only. ``properties`` are the header's
    ``ptype.property=value`` pairs (``{"smtp.mailfrom": "example.org"}``), ``comment`` its
    parenthesised comment and ``reason`` its ``reason="..."``. ``fields`` are merged into the
    top level of the stored ``auth_results`` (API.md 2.1: ``{"spf": "pass", "spf_domain":
    ...}``); ``spam_reasons`` are appended to its ``spam_reasons`` and ``score`` is added to
    the message's spam score (negative for good signs, API.md 2.1's table).
    """

    method: str = ""
    result: str = ""
    reason: str = ""
    comment: str = ""
    properties: Mapping[str, str] = attrs.field(factory=dict, converter=dict, hash=False)
    fields: Mapping[str, object] = attrs.field(factory=dict, converter=dict, hash=False)
    spam_reasons: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    score: float = attrs.field(default=0.0, converter=float)
    #: Filled in by the chain: which filter produced it, at which stage.
    filter: str = ""
    stage: str = ""


@attrs.frozen
class Verdict:
    """One filter's answer at one stage. Build it with the functions below (``reject(...)``)
    rather than directly: they fill in the reply codes the action needs.

    ``code`` and ``enhanced`` must match the action: 5xx and ``5.x.y`` for REJECT, 4xx and
    ``4.x.y`` for TEMPFAIL; for other actions they are ignored. ``reason`` is a short token
    without spaces (``greylisted``, ``sender_rule_block``, ``dnsbl:zone``).
    """

    action: Action = attrs.field(default=Action.CONTINUE, converter=Action)
    code: int = 0
    enhanced: str = ""
    text: str = ""
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    results: tuple[FilterResult, ...] = attrs.field(default=(), converter=_results)

    def __attrs_post_init__(self):
        if self.action is Action.REJECT:
            if not 500 <= self.code <= 599 or not self.enhanced.startswith("5."):
                raise ValueError(f"a reject needs a 5xx code and a 5.x.y status: {self!r}")
        elif self.action is Action.TEMPFAIL:
            if not 400 <= self.code <= 499 or not self.enhanced.startswith("4."):
                raise ValueError(f"a tempfail needs a 4xx code and a 4.x.y status: {self!r}")
        if self.enhanced and not _ENHANCED.match(self.enhanced):
            raise ValueError(f"{self.enhanced!r} is not an enhanced status code (RFC 3463)")
        if self.reason and not _TOKEN.match(self.reason):
            raise ValueError(f"reason {self.reason!r} must be a token without spaces")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError("reply text must be one line")

    @property
    def decisive(self) -> bool:
        """Whether this verdict ends its stage's chain."""
        return self.action in DECISIVE


def continue_(*, results=(), headers=(), reason: str = "") -> Verdict:
    """No objection; keep ``results`` and add ``headers`` to the stored message."""
    return Verdict(Action.CONTINUE, reason=reason, results=results, headers=headers)


#: The plain "no objection" (what a filter returning None means).
CONTINUE = Verdict()


def accept(*, reason: str = "", results=(), headers=()) -> Verdict:
    """End this stage's chain with no objection."""
    return Verdict(Action.ACCEPT, reason=reason, results=results, headers=headers)


def reject(
    text: str = "message rejected by policy",
    *,
    code: int = 550,
    enhanced: str = "5.7.1",
    reason: str = "",
    results=(),
) -> Verdict:
    """Refuse with a permanent error (``550 5.7.1 <text>`` unless told otherwise)."""
    return Verdict(Action.REJECT, code, enhanced, text, reason, results=results)


def tempfail(
    text: str = "temporary policy failure, try again later",
    *,
    code: int = 451,
    enhanced: str = "4.7.1",
    reason: str = "",
    results=(),
) -> Verdict:
    """Refuse with a temporary error (``451 4.7.1 <text>`` unless told otherwise)."""
    return Verdict(Action.TEMPFAIL, code, enhanced, text, reason, results=results)


def discard(*, reason: str = "", results=()) -> Verdict:
    """Answer as if accepted and store nothing."""
    return Verdict(Action.DISCARD, reason=reason, results=results)


def quarantine(*, reason: str = "", results=(), headers=()) -> Verdict:
    """Deliver to Junk (unless a later filter rejects or tempfails)."""
    return Verdict(Action.QUARANTINE, reason=reason, results=results, headers=headers)
