"""``spam_score``: the original's spam score and Junk/reject placement (API.md 2.1).

The score is what every filter's results add up to (``sender_rules``: block 10, allow -5;
``dnsbl``: the zone's score; ``header_validate``: no From 2, no Message-ID 1; ...) plus, for
the authentication results, API.md 2.1's table, read from ``auth_results`` by their documented
keys: ``spf`` fail 2 and softfail 1, ``dkim`` fail 2, ``dmarc`` fail 3 (``dmarc_policy``
quarantine 2 more, reject 10 more), and no HELO 1 when ``spam.require_helo`` is set. A result of
those methods that carries a score of its own is taken as it is, never counted twice.

At DATA: a score at or above the reject threshold (``spam.reject_threshold``, 10), or a DMARC
failure under ``p=reject``, refuses the message with ``550 5.7.1 message rejected by policy``
(API.md 5.2); a DMARC failure under ``p=quarantine`` sends it to Junk for everyone.

At DELIVERY, per recipient mailbox: a score at or above the mailbox's Junk threshold (its
``spam_thresholds.junk_threshold``, else ``spam.junk_threshold``, 5) files that mailbox's copy
in Junk (``auth_results.filters`` says ``spam_score_junk``); the threshold used is recorded in
``auth_results.mailboxes``. A filter after it at DELIVERY (a user's Sieve script) may file the
copy elsewhere.

Options: ``junk_threshold`` and ``reject_threshold`` (default: the ``spam`` block, read per
connection so a reload applies at once), ``mailbox_thresholds`` (true: honour the mailboxes'
own Junk thresholds), ``scores`` (change the table's points: ``spf_fail``, ``spf_softfail``,
``dkim_fail``, ``dmarc_fail``, ``dmarc_quarantine``, ``dmarc_reject``, ``missing_helo``).
"""

from __future__ import annotations

import math

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

#: API.md 2.1's points for what the authentication filters found.
SCORES = {
    "spf_fail": 2.0,
    "spf_softfail": 1.0,
    "dkim_fail": 2.0,
    "dmarc_fail": 3.0,
    "dmarc_quarantine": 2.0,
    "dmarc_reject": 10.0,
    "missing_helo": 1.0,
}

JUNK = "Junk"

DEFAULT_JUNK = 5.0
DEFAULT_REJECT = 10.0

_NOTE = "spam_score"


def _fields(results) -> dict:
    """``auth_results``' top-level keys as the results set them so far (later ones win)."""
    out: dict = {}
    for result in results:
        out.update(result.fields)
    return out


def _scored_itself(results, method: str) -> bool:
    """Whether a result of ``method`` (by its method or the key it set) has its own score."""
    return any(r.score and (r.method == method or method in r.fields) for r in results)


def auth_points(results, helo, require_helo: bool, scores=SCORES) -> list[tuple[str, float]]:
    """``(reason, points)`` the table gives what ``results`` found, leaving out the methods
    whose results scored themselves."""
    fields = _fields(results)
    out = []

    def value(key):
        return str(fields.get(key) or "").lower()

    if not _scored_itself(results, "spf"):
        if value("spf") == "fail":
            out.append(("spf_fail", scores["spf_fail"]))
        elif value("spf") == "softfail":
            out.append(("spf_softfail", scores["spf_softfail"]))
    if not _scored_itself(results, "dkim") and value("dkim") == "fail":
        out.append(("dkim_fail", scores["dkim_fail"]))
    if not _scored_itself(results, "dmarc") and value("dmarc") == "fail":
        out.append(("dmarc_fail", scores["dmarc_fail"]))
        policy = value("dmarc_policy")
        if policy == "quarantine":
            out.append(("dmarc_quarantine", scores["dmarc_quarantine"]))
        elif policy == "reject":
            out.append(("dmarc_reject", scores["dmarc_reject"]))
    if require_helo and not (helo or "").strip():
        out.append(("missing_helo", scores["missing_helo"]))
    return out


def _threshold(value, fallback: float) -> float:
    """A configured threshold: 0 (or nothing) means the default, as in the original."""
    try:
        value = float(value or 0)
    except (TypeError, ValueError):
        return fallback
    return value if value > 0 and math.isfinite(value) else fallback


def mailbox_junk_threshold(thresholds, default: float) -> float:
    """A mailbox's own ``junk_threshold`` (API.md 1.2: finite, >= 0; 0 sends everything to
    Junk), else ``default``."""
    value = (thresholds or {}).get("junk_threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    value = float(value)
    return value if value >= 0 and math.isfinite(value) else default


@implementer(IFilter)
class SpamScoreFilter:
    name = "spam_score"
    stages = (Stage.DATA, Stage.DELIVERY)

    def __init__(self, store, junk, reject, mailbox_thresholds: bool, scores: dict):
        self.store = store
        self.junk = junk
        self.reject = reject
        self.mailbox_thresholds = mailbox_thresholds
        self.scores = scores

    def thresholds(self, config) -> tuple[float, float]:
        """``(junk, reject)`` for a connection with ``config``."""
        spam = getattr(config, "spam", None)
        junk = (
            self.junk
            if self.junk is not None
            else _threshold(getattr(spam, "junk_threshold", 0), DEFAULT_JUNK)
        )
        rejected = (
            self.reject
            if self.reject is not None
            else _threshold(getattr(spam, "reject_threshold", 0), DEFAULT_REJECT)
        )
        return junk, rejected

    def check(self, stage, context):
        if stage is Stage.DATA:
            return self._data(context)
        return self._delivery(context)

    def _data(self, context):
        spam = getattr(context.config, "spam", None)
        points = auth_points(
            context.results,
            context.session.helo,
            bool(getattr(spam, "require_helo", False)),
            self.scores,
        )
        added = sum(p for _, p in points)
        total = max(0.0, context.score + added)
        _, reject_at = self.thresholds(context.config)
        result = (
            FilterResult(spam_reasons=tuple(r for r, _ in points), score=added) if points else ()
        )
        fields = _fields(context.results)
        dmarc_failed = str(fields.get("dmarc") or "").lower() == "fail"
        policy = str(fields.get("dmarc_policy") or "").lower()
        if dmarc_failed and policy == "reject":
            return reject(reason="dmarc_reject", results=result)
        if total >= reject_at:
            return reject(reason="spam_score", results=result)
        if dmarc_failed and policy == "quarantine":
            return quarantine(reason="dmarc_quarantine", results=result)
        return continue_(results=result)

    async def _delivery(self, context):
        target = context.target
        junk, _ = self.thresholds(context.config)
        if self.mailbox_thresholds:
            cache = context.notes.get(_NOTE)
            if cache is None:
                shared = inbound_filter_data(self.store, context)
                if shared is not None:
                    cache = (await shared).spam_thresholds  # one read with sender_rules'
                else:
                    ids = [m for r in context.envelope.recipients for m in r.mailbox_ids]
                    cache = await self.store.mailbox_spam_thresholds(ids)
                context.notes[_NOTE] = cache
            junk = mailbox_junk_threshold(cache.get(target.mailbox_id), junk)
        target.junk_threshold = junk
        if max(0.0, context.score) >= junk:
            # Filed here rather than by a quarantine verdict (which the chain applies after
            # every filter): a Sieve script later in the chain sees Junk as the folder its
            # ``keep`` uses, and the user's own ``fileinto`` has the last word.
            target.folder = JUNK
            target.extra_folders[:] = [f for f in target.extra_folders if f != JUNK]
            return continue_(reason="spam_score_junk")
        return None


@implementer(IPlugin, IFilterFactory)
class SpamScoreFactory:
    name = "spam_score"
    description = "the spam score of API.md 2.1: Junk per mailbox threshold, reject above it"

    def build(self, options, environment):
        opts = Options(self.name, options)
        junk = opts.number("junk_threshold", default=None, minimum=0)
        rejected = opts.number("reject_threshold", default=None, minimum=0)
        mailbox_thresholds = opts.boolean("mailbox_thresholds", default=True)
        block = opts.block("scores", default={})
        scores = {
            key: block.number(key, default=default, minimum=-1000, maximum=1000)
            for key, default in SCORES.items()
        }
        block.done()
        opts.done()
        if junk is not None and rejected is not None and rejected < junk:
            raise opts.error("reject_threshold", "must not be below junk_threshold")
        return SpamScoreFilter(environment.store, junk, rejected, mailbox_thresholds, scores)


spam_score = SpamScoreFactory()
