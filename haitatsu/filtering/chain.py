"""The chain: configured filters in order, run stage by stage.

At each stage the filters that declare it run in config order. Each verdict's results and
headers are kept. QUARANTINE marks the transaction (or the recipient, at DELIVERY) for Junk and
the chain goes on; the first ACCEPT, REJECT, TEMPFAIL or DISCARD ends the stage. A filter that
raises or does not answer within its timeout is handled by its ``on_error`` policy: a temporary
failure unless the config says otherwise, so mail never passes a broken filter by accident.
"""

from __future__ import annotations

import inspect
import time

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from haitatsu.filtering.verdicts import (
    CONTINUE,
    Action,
    FilterResult,
    Stage,
    Verdict,
    reject,
    tempfail,
)
from haitatsu.metrics import METRICS

#: Seconds a filter may take at one stage before ``on_error`` applies, unless configured.
DEFAULT_TIMEOUT_SECONDS = 30.0

#: What ``on_error`` may say.
ERROR_POLICIES = ("tempfail", "continue", "reject", "quarantine")


@attrs.frozen
class FilterEnvironment:
    """What a factory's ``build`` gets besides the options: the store (``IMailStore``), the
    reactor, the DNS resolver (``haitatsu.dns.Resolver``) and the whole ``Config``."""

    store: object
    reactor: object
    resolver: object
    config: object


@attrs.frozen
class ChainEntry:
    """One filter in the chain, with the chain's settings for it."""

    name: str
    filter: object
    stages: frozenset
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    on_error: str = "tempfail"


@attrs.frozen
class VerdictRecord:
    """A verdict other than a plain continue, as ``auth_results["filters"]`` lists it."""

    filter: str
    stage: str
    action: str
    reason: str


@attrs.frozen
class StageResult:
    """How a stage ended: ``action`` is CONTINUE, or the decisive verdict's action (whose
    verdict is ``verdict``, from filter ``filter``). ``headers`` are every verdict's headers;
    ``quarantine`` the reason of a QUARANTINE at this stage ("" when none)."""

    action: Action = Action.CONTINUE
    verdict: Verdict | None = None
    filter: str = ""
    headers: tuple = ()
    quarantine: str = ""


class FilterChain:
    """An immutable, ordered list of ``ChainEntry``; ``run(stage, context)`` runs one stage.

    ``runs_at(stage)`` is a dictionary lookup, so the SMTP session asks it before doing any
    work for a stage: a stage no filter declares costs nothing.
    """

    _log = Logger()

    def __init__(self, entries=(), clock=None, resolver=None):
        self.entries = tuple(entries)
        self.clock = clock
        self.resolver = resolver
        self._by_stage = {
            stage: tuple(e for e in self.entries if stage in e.stages) for stage in Stage
        }
        #: Whether any filter runs at all (the empty chain leaves the SMTP path untouched).
        self.active = bool(self.entries)
        self._users = 0
        self._retired = False

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def runs_at(self, stage: Stage) -> bool:
        return bool(self._by_stage[stage])

    async def run(self, stage: Stage, context) -> StageResult:
        """Run the filters of ``stage`` in order on ``context``; fire with the ``StageResult``."""
        context.stage = stage
        headers: list = []
        quarantined = ""
        for entry in self._by_stage[stage]:
            verdict = await self._call(entry, stage, context)
            if verdict.results:
                context._record(
                    stage,
                    [
                        attrs.evolve(r, filter=entry.name, stage=stage.value)
                        for r in verdict.results
                    ],
                )
            headers.extend(verdict.headers)
            if verdict.action is Action.CONTINUE and not verdict.reason:
                continue
            self._note(entry, stage, verdict, context)
            if verdict.action is Action.QUARANTINE:
                quarantined = quarantined or verdict.reason or "quarantine"
                if stage is not Stage.DELIVERY:
                    context._quarantine(stage, verdict.reason)
                continue
            if verdict.decisive:
                return StageResult(verdict.action, verdict, entry.name, tuple(headers), quarantined)
        return StageResult(Action.CONTINUE, None, "", tuple(headers), quarantined)

    def _note(self, entry, stage, verdict, context):
        """Log, count and remember a verdict other than a plain continue."""
        METRICS.filter_verdicts.labels(entry.name, stage.value, verdict.action.value).inc()
        context._remember(
            stage, VerdictRecord(entry.name, stage.value, verdict.action.value, verdict.reason)
        )
        self._log.info(
            "filter {filter} at {stage}: {action} ({reason}) for {remote_ip}",
            filter=entry.name,
            stage=stage.value,
            action=verdict.action.value,
            reason=verdict.reason or "-",
            remote_ip=context.session.remote_ip,
            trace_id=context.trace_id,
        )

    async def _call(self, entry: ChainEntry, stage: Stage, context) -> Verdict:
        started = time.monotonic()
        try:
            answer = entry.filter.check(stage, context)
            if inspect.isawaitable(answer):
                d = defer.ensureDeferred(answer)
                if entry.timeout > 0 and self.clock is not None and not d.called:
                    # (A filter that answered at once needs no timer set and cancelled.)
                    d.addTimeout(entry.timeout, self.clock)
                answer = await d
            if answer is None:
                return CONTINUE
            if not isinstance(answer, Verdict):
                raise TypeError(f"check() returned {answer!r}, not a Verdict or None")
            return answer
        except defer.TimeoutError:
            return self._failed(entry, stage, context, "timeout", started)
        except Exception:
            return self._failed(entry, stage, context, "error", started)

    def _failed(self, entry, stage, context, kind, started) -> Verdict:
        METRICS.filter_errors.labels(entry.name, stage.value, kind).inc()
        fields = dict(
            filter=entry.name,
            stage=stage.value,
            policy=entry.on_error,
            remote_ip=context.session.remote_ip,
            trace_id=context.trace_id,
        )
        if kind == "timeout":
            self._log.warn(
                "filter {filter} at {stage} gave no answer in {seconds:.1f} s; {policy}",
                seconds=time.monotonic() - started,
                **fields,
            )
        else:
            self._log.failure("filter {filter} at {stage} failed; {policy}", **fields)
        reason = f"filter_{kind}:{entry.name}"
        result = FilterResult(result="temperror", reason=kind)
        if entry.on_error == "continue":
            return Verdict(Action.CONTINUE, reason=reason, results=(result,))
        if entry.on_error == "reject":
            return reject(reason=reason, results=(result,))
        if entry.on_error == "quarantine":
            return Verdict(Action.QUARANTINE, reason=reason, results=(result,))
        return tempfail(
            "temporary local problem", enhanced="4.3.0", reason=reason, results=(result,)
        )

    def session(self, config, clock):
        """The hooks of one SMTP connection: ``NULL_FILTERS`` for the empty chain."""
        if not self.active:
            from haitatsu.filtering.null import NULL_FILTERS

            return NULL_FILTERS
        from haitatsu.filtering.session import SessionFilters

        self._users += 1
        return SessionFilters(self, config, clock)

    def _release(self):
        self._users -= 1
        if self._retired and self._users == 0:
            self.close()

    def retire(self):
        """A reload replaced this chain: close its filters once no connection uses it."""
        self._retired = True
        if self._users == 0:
            self.close()

    def close(self):
        """Tell every filter that has a ``close()`` that this chain is retired; fire when all
        are done (failures are logged)."""
        waits = []
        for entry in self.entries:
            close = getattr(entry.filter, "close", None)
            if close is None:
                continue
            d = defer.maybeDeferred(close)
            d.addErrback(
                lambda f, name=entry.name: self._log.failure("closing filter {name}", f, name=name)
            )
            waits.append(d)
        return defer.gatherResults(waits).addCallback(lambda _: None)


#: The chain with no filters.
EMPTY_CHAIN = FilterChain()
