"""``rspamd``: have an rspamd server scan each message (its HTTP ``/checkv2``).

At DATA the message is streamed from the spool to ``url`` + ``/checkv2`` with the envelope in
rspamd's request headers (``IP``, ``Helo``, ``Hostname``, ``From``, one ``Rcpt`` per
recipient, ``Queue-Id`` and ``Log-Tag`` with the trace id, ``User`` when authenticated,
``MTA-Name``), and rspamd's ``action`` becomes the verdict:

=================  ==============================================================
reject             ``reject``: 550 5.7.1 (rspamd's ``smtp_message``, or "message
                   rejected by policy")
soft reject        ``tempfail``: 451 4.7.1 (rspamd's ``smtp_message``, or "temporary
                   policy failure, try again later")
greylist           ``tempfail``: 451 4.7.1 greylisted, please try again later
rewrite subject    ``quarantine`` (Junk: the stored message is never rewritten)
add header         ``quarantine``
no action          ``continue``
=================  ==============================================================

Each mapping can be changed in ``actions`` (keys ``reject``, ``soft_reject``, ``greylist``,
``rewrite_subject``, ``add_header``, ``no_action``; values ``continue``, ``quarantine``,
``reject``, ``tempfail``, ``discard``). ``auth_results.rspamd`` records the action, score,
required score and symbols; the action (other than no action) goes into ``spam_reasons`` as
``rspamd:<action>``; ``score_weight`` times rspamd's score is added to the message's spam score
(default 0: recorded, not added). Header fields rspamd's ``milter.add_headers`` asks for are
added (``milter_headers = false`` turns that off). A message over ``max_bytes`` is not sent
(``auth_results.rspamd.action`` is ``skipped``). rspamd not answering within
``request_timeout_seconds``, or answering an error, is a failure: ``on_error`` applies.

Options: ``url`` (``http://127.0.0.1:11333``), ``password`` (sent as ``Password``, for a
controller or proxy that wants one), ``settings_id``, ``actions``, ``score_weight`` (0),
``max_bytes`` (20 MiB), ``request_timeout_seconds`` (20), ``milter_headers`` (true).
"""

from __future__ import annotations

import json

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.plugin import IPlugin
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    Verdict,
    continue_,
    discard,
    quarantine,
    reject,
    tempfail,
)

#: rspamd's actions, as our option keys.
ACTIONS = {
    "reject": "reject",
    "soft reject": "soft_reject",
    "greylist": "greylist",
    "rewrite subject": "rewrite_subject",
    "add header": "add_header",
    "no action": "no_action",
}
DEFAULT_MAPPING = {
    "reject": "reject",
    "soft_reject": "tempfail",
    "greylist": "tempfail",
    "rewrite_subject": "quarantine",
    "add_header": "quarantine",
    "no_action": "continue",
}
VERDICTS = ("continue", "quarantine", "reject", "tempfail", "discard")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class RspamdError(Exception):
    """rspamd failed: no answer in time, an HTTP error, or an answer we cannot read."""


def _cancelled(error: Exception) -> Exception:
    """``error``, or CancelledError when it is the request's cancellation (the chain's
    ``timeout_seconds`` ran out): the chain then treats it as the timeout it is."""
    reasons = getattr(error, "reasons", None) or []
    if any(getattr(r, "check", lambda *_: False)(defer.CancelledError) for r in reasons):
        return defer.CancelledError()
    return error


def _milter_headers(answer) -> list[tuple[str, str]]:
    """``milter.add_headers`` of an answer: ``{name: value | {"value": v} | [those]}``."""
    add = (answer.get("milter") or {}).get("add_headers") or {}
    out = []
    if not isinstance(add, dict):
        return out
    for name, spec in add.items():
        for item in spec if isinstance(spec, list) else [spec]:
            value = item.get("value") if isinstance(item, dict) else item
            if isinstance(name, str) and isinstance(value, str):
                out.append((name, value))
    return out


@implementer(IFilter)
class RspamdFilter:
    name = "rspamd"
    stages = (Stage.DATA,)

    def __init__(self, http, pool, clock, settings: dict):
        self.http = http
        self.pool = pool
        self.clock = clock
        self.s = settings

    def request_headers(self, context) -> dict:
        session, envelope = context.session, context.envelope
        headers = {
            "IP": [session.remote_ip],
            "Helo": [session.helo or ""],
            "From": [envelope.mail_from or "<>"],
            "Rcpt": [r.address for r in envelope.recipients] or [""],
            "Queue-Id": [context.trace_id],
            "Log-Tag": [context.trace_id],
            "MTA-Name": [session.hostname],
            "Content-Type": ["message/rfc822"],
        }
        if session.remote_name:
            headers["Hostname"] = [session.remote_name]
        if session.authenticated:
            headers["User"] = [session.authenticated]
        if self.s["password"]:
            headers["Password"] = [self.s["password"]]
        if self.s["settings_id"]:
            headers["Settings-ID"] = [self.s["settings_id"]]
        return {k: [" ".join(v.split()) for v in vs] for k, vs in headers.items()}

    async def check(self, stage, context):
        message = context.message
        if message.size > self.s["max_bytes"]:
            return continue_(results=FilterResult(fields={"rspamd": {"action": "skipped"}}))
        answer = await self._scan(context)
        action = answer.get("action")
        if action not in ACTIONS:
            raise RspamdError(f"rspamd answered no known action: {action!r}")
        score = answer.get("score", 0.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RspamdError(f"rspamd answered a score that is no number: {score!r}")
        symbols = answer.get("symbols") or {}
        record = {
            "action": action,
            "score": float(score),
            "required_score": answer.get("required_score"),
            "symbols": sorted(symbols) if isinstance(symbols, dict) else [],
        }
        reasons = () if action == "no action" else (f"rspamd:{action.replace(' ', '_')}",)
        result = FilterResult(
            fields={"rspamd": record},
            spam_reasons=reasons,
            score=float(score) * self.s["score_weight"],
        )
        headers = _milter_headers(answer) if self.s["milter_headers"] else []
        smtp_message = (answer.get("messages") or {}).get("smtp_message")
        text = " ".join(smtp_message.split()) if isinstance(smtp_message, str) else ""
        return self._verdict(ACTIONS[action], text, result, headers)

    def _verdict(self, key: str, text: str, result, headers) -> Verdict:
        mapped = self.s["actions"][key]
        reason = f"rspamd:{key}"
        if mapped == "reject":
            return reject(text or "message rejected by policy", reason=reason, results=result)
        if mapped == "tempfail":
            if not text:
                text = (
                    "greylisted, please try again later"
                    if key == "greylist"
                    else "temporary policy failure, try again later"
                )
            return tempfail(text, reason=reason, results=result)
        if mapped == "discard":
            return discard(reason=reason, results=result)
        if mapped == "quarantine":
            return quarantine(reason=reason, results=result, headers=headers)
        return continue_(results=result, headers=headers)

    async def _scan(self, context) -> dict:
        url = self.s["url"] + "/checkv2"
        body = context.message.open()
        try:

            async def exchange():
                response = await self.http.post(
                    url,
                    data=FileBodyProducer(body),
                    headers=self.request_headers(context),
                )
                chunks, size = [], 0

                def collect(data):
                    nonlocal size
                    size += len(data)
                    if size <= MAX_RESPONSE_BYTES:
                        chunks.append(data)

                await treq.collect(response, collect)
                return response.code, b"".join(chunks), size

            d = defer.Deferred.fromCoroutine(exchange())
            timed_out = []
            timeout = self.s["timeout"]
            timer = self.clock.callLater(timeout, lambda: (timed_out.append(1), d.cancel()))
            try:
                code, raw, size = await d
            except Exception as e:
                if timed_out:
                    raise RspamdError(f"{url}: no answer within {timeout:g} s") from None
                raise _cancelled(e) from None
            finally:
                if timer.active():
                    timer.cancel()
        finally:
            body.close()
        if code != 200:
            raise RspamdError(f"{url} answered {code}: {raw[:200]!r}")
        if size > MAX_RESPONSE_BYTES:
            raise RspamdError(f"{url}: answer over {MAX_RESPONSE_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError as e:
            raise RspamdError(f"{url}: answer is not JSON ({e})") from None
        if not isinstance(answer, dict):
            raise RspamdError(f"{url}: answer is not an object")
        if answer.get("error"):
            raise RspamdError(f"{url}: {answer['error']}")
        return answer

    def close(self):
        return self.pool.closeCachedConnections()


@implementer(IPlugin, IFilterFactory)
class RspamdFactory:
    name = "rspamd"
    description = "scan messages with an rspamd server (/checkv2) and take its action"

    def build(self, options, environment):
        opts = Options(self.name, options)
        url = opts.string("url", default="http://127.0.0.1:11333").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise opts.error("url", f"expected an http:// or https:// URL, got {url!r}")
        block = opts.block("actions", default={})
        actions = {
            key: block.choice(key, VERDICTS, default=default)
            for key, default in DEFAULT_MAPPING.items()
        }
        block.done()
        settings = {
            "url": url,
            "password": opts.string("password", default=""),
            "settings_id": opts.string("settings_id", default=""),
            "actions": actions,
            "score_weight": opts.number("score_weight", default=0.0, minimum=0),
            "max_bytes": opts.integer("max_bytes", default=20 * 1024 * 1024, minimum=1),
            "timeout": opts.number("request_timeout_seconds", default=20.0, minimum=0.001),
            "milter_headers": opts.boolean("milter_headers", default=True),
        }
        opts.done()
        reactor = environment.reactor
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        return RspamdFilter(HTTPClient(Agent(reactor, pool=pool)), pool, reactor, settings)


rspamd = RspamdFactory()
