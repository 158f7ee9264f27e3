"""Turning what the filters found into the ``Authentication-Results`` header (RFC 8601) and the
message's stored ``auth_results`` (API.md 2.1)."""

from __future__ import annotations

import re

from haitatsu.filtering.verdicts import FilterResult

# RFC 2045 token: no space, no control, no tspecials.
_TOKEN = re.compile(r'[^\x00-\x20\x7f-\uffff()<>@,;:\\"/\[\]?=]+\Z')
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_PTYPE_PROPERTY = re.compile(r"[A-Za-z0-9-]+\.[A-Za-z0-9_.-]+\Z")
_ADDRESS = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*@)?[A-Za-z0-9](?:[A-Za-z0-9.-]*)\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: The keys every stored ``auth_results`` of inbound mail has (API.md 2.1), zero when nothing
#: set them.
BASE_FIELDS = {
    "spf": "",
    "spf_domain": "",
    "spf_reason": "",
    "dkim": "",
    "dkim_domain": "",
    "dmarc": "",
    "dmarc_policy": "",
    "list_kind": "",
    "list_action": "",
    "dnsbl": "",
}


def _ascii(text: str) -> str:
    return _CONTROL.sub(" ", text).encode("ascii", "replace").decode("ascii")


def quote_value(text: str) -> str:
    """``text`` as an RFC 8601 ``value``: a token as is, anything else a quoted-string."""
    text = _ascii(text)
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(text: str) -> str:
    text = _ascii(text)
    return text if _ADDRESS.match(text) else quote_value(text)


def _comment(text: str) -> str:
    text = _ascii(text).replace("\\", "").replace("(", "[").replace(")", "]")
    return f"({text})"


def resinfo(result: FilterResult) -> str | None:
    """One ``method=result ...`` of the header, or None when ``result`` is not for it."""
    if not result.method or not result.result:
        return None
    if not _KEYWORD.match(result.method) or not _KEYWORD.match(result.result):
        return None
    parts = [f"{result.method.lower()}={result.result.lower()}"]
    if result.comment:
        parts.append(_comment(result.comment))
    if result.reason:
        parts.append(f"reason={quote_value(result.reason)}")
    for key, value in result.properties.items():
        if _PTYPE_PROPERTY.match(key) and value is not None and str(value) != "":
            parts.append(f"{key}={_pvalue(str(value))}")
    return " ".join(parts)


def authentication_results(hostname: str, results) -> bytes:
    """The ``Authentication-Results`` field (CRLF-terminated) for ``results``: one resinfo
    per result with a method, each on a line of its own, or ``none`` when there is none."""
    infos = [info for info in map(resinfo, results) if info]
    head = f"Authentication-Results: {quote_value(hostname)}"
    if not infos:
        return f"{head}; none\r\n".encode("ascii")
    return (head + ";\r\n\t" + ";\r\n\t".join(infos) + "\r\n").encode("ascii")


def authserv_id(value: str) -> str:
    """The authserv-id of an ``Authentication-Results`` value (comments and quotes removed),
    lower-cased: what decides whether a field claims to be ours."""
    value = re.sub(r"\([^()]*\)", " ", value).strip()
    head = value.split(";", 1)[0].strip()
    if head.startswith('"') and head.endswith('"') and len(head) >= 2:
        head = head[1:-1]
    return head.split()[0].lower() if head.split() else ""


def auth_results_json(context, *, junk_threshold: float = 5.0, mailboxes=()) -> dict:
    """The stored ``auth_results`` (API.md 2.1): the base keys, what every result's ``fields``
    set (in chain order, a later filter overriding an earlier one), every ``spam_reasons``,
    one ``mailboxes`` entry per ``(mailbox_id, folder)`` delivered, and, our additions, the
    verdicts other than continue (``filters``) and the ``score`` the results add up to."""
    out: dict = dict(BASE_FIELDS)
    session = context.session
    out["tls"] = bool(session.tls)
    out["remote_ip"] = session.remote_ip
    out["helo"] = session.helo or ""
    reasons: list[str] = []
    for result in context.results:
        for key, value in result.fields.items():
            out[key] = value
        for reason in result.spam_reasons:
            if reason not in reasons:
                reasons.append(reason)
    out["spam_reasons"] = reasons
    out["mailboxes"] = {
        mailbox_id: {
            "junk": folder == "Junk",
            "junk_threshold": junk_threshold,
            "spam_reasons": list(reasons),
        }
        for mailbox_id, folder in mailboxes
    }
    out["score"] = spam_score(context)
    out["filters"] = [
        {"name": v.filter, "stage": v.stage, "action": v.action, "reason": v.reason}
        for v in context.verdicts
    ]
    return out


def spam_score(context) -> float:
    """The message's spam score: the sum of the results' scores, never below 0 (API.md 2.1)."""
    return max(0.0, float(context.score))
