"""The message metadata filters hand to deciders outside the server (the ``webhook`` filter's
HTTP endpoint, the ``javascript`` filter's script), and the verdict they answer with.

Both see the same JSON object (docs/plugins.md, "webhook"): the stage, the connection, the
envelope, the recipient or delivery target of the stage, the message's size and header fields
(from DATA on), and every result so far with the score. Their answer is a JSON object with an
``action`` and, as they need, ``code``, ``enhanced``, ``text``, ``reason``, ``headers``,
``score``, ``spam_reasons`` and ``fields``; ``verdict_from_answer`` turns it into a ``Verdict``
and refuses (``ValueError``) anything that is not one, so the filter's ``on_error`` applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from haitatsu.filtering.verdicts import (
    Action,
    FilterResult,
    Stage,
    Verdict,
    reject,
    tempfail,
)

#: Longest reply text taken from an answer.
MAX_TEXT = 512


def _recipient(r) -> dict:
    return {
        "address": r.address,
        "base_address": r.base_address,
        "plus_tag": r.plus_tag,
        "mailbox_ids": list(r.mailbox_ids),
        "route_id": r.route_id,
    }


def _result(r: FilterResult) -> dict:
    return {
        "filter": r.filter,
        "stage": r.stage,
        "method": r.method,
        "result": r.result,
        "reason": r.reason,
        "comment": r.comment,
        "properties": dict(r.properties),
        "fields": dict(r.fields),
        "spam_reasons": list(r.spam_reasons),
        "score": r.score,
    }


def _plain(value):
    """``value`` with anything JSON cannot say (sets, tuples, other objects) made plain."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def context_metadata(stage: Stage, context, *, headers: bool = True) -> dict:
    """The JSON-able description of ``context`` at ``stage`` (docs/plugins.md)."""
    session = context.session
    envelope = context.envelope
    out: dict = {
        "stage": stage.value,
        "trace_id": context.trace_id,
        "session": {
            "remote_ip": session.remote_ip,
            "remote_port": session.remote_port,
            "remote_name": session.remote_name,
            "helo": session.helo,
            "tls": bool(session.tls),
            "authenticated": session.authenticated,
            "hostname": session.hostname,
        },
        "envelope": {
            "mail_from": envelope.mail_from,
            "mail_params": dict(envelope.mail_params),
            "recipients": [_recipient(r) for r in envelope.recipients],
        },
        "results": [_result(r) for r in context.results],
        "score": context.score,
        "quarantined": context.quarantined,
    }
    if context.recipient is not None:
        out["recipient"] = _recipient(context.recipient)
    target = context.target
    if target is not None:
        out["target"] = {
            "mailbox_id": target.mailbox_id,
            "recipient": target.recipient,
            "folder": target.folder,
            "flags": sorted(target.flags),
        }
    message = context.message
    if message is not None:
        out["message"] = {"size": message.size}
        if headers:
            out["message"]["headers"] = [[name, value] for name, value in message.headers()]
    return _plain(out)


def _headers(value) -> list:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = list(value.items())
    if not isinstance(value, list):
        raise ValueError(f"headers: expected an object or a list of [name, value], got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"headers: {item!r} is not a [name, value] pair")
        out.append((item[0], item[1]))
    return out


def verdict_from_answer(answer, *, default_reason: str) -> Verdict:
    """The ``Verdict`` an answer (a JSON object, already decoded) asks for.

    ``None`` or ``{}`` is a plain continue. A reject without ``code``/``enhanced``/``text`` is
    ``550 5.7.1 message rejected by policy``, a tempfail ``451 4.7.1 temporary policy failure,
    try again later``; ``message`` is taken as ``text`` too. ``ValueError`` when the answer is
    not an object, names an unknown action, or its codes do not match the action.
    """
    if answer is None:
        return Verdict()
    if not isinstance(answer, Mapping):
        raise ValueError(f"the answer must be an object, got {type(answer).__name__}")
    action = answer.get("action", "continue")
    try:
        action = Action(str(action).lower())
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise ValueError(f"unknown action {action!r} (actions: {known})") from None
    score = answer.get("score", 0) or 0
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"score: expected a number, got {score!r}")
    reasons = answer.get("spam_reasons", []) or []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ValueError(f"spam_reasons: expected a list of strings, got {reasons!r}")
    fields = answer.get("fields", {}) or {}
    if not isinstance(fields, Mapping):
        raise ValueError(f"fields: expected an object, got {fields!r}")
    reason = answer.get("reason") or (default_reason if action is not Action.CONTINUE else "")
    if not isinstance(reason, str):
        raise ValueError(f"reason: expected a string, got {reason!r}")
    reason = "_".join(reason.split())
    results = ()
    if score or reasons or fields:
        results = (FilterResult(fields=_plain(fields), spam_reasons=reasons, score=score),)
    text = answer.get("text", answer.get("message"))
    if text is not None and not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {text!r}")
    if text is not None:
        text = " ".join(text.split())[:MAX_TEXT]
    headers = _headers(answer.get("headers"))
    if action in (Action.REJECT, Action.TEMPFAIL):
        make, code, enhanced = (
            (reject, 550, "5.7.1") if action is Action.REJECT else (tempfail, 451, "4.7.1")
        )
        code = answer.get("code", code)
        enhanced = answer.get("enhanced", answer.get("enhanced_code", enhanced))
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError(f"code: expected an integer, got {code!r}")
        if not isinstance(enhanced, str):
            raise ValueError(f"enhanced: expected a string like 5.7.1, got {enhanced!r}")
        kwargs = {"code": code, "enhanced": enhanced, "reason": reason, "results": results}
        if text:
            kwargs["text"] = text
        return make(**kwargs)  # a refused message gets no header fields
    return Verdict(action, reason=reason, results=results, headers=headers)
