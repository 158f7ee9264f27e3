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


#: RFC 5322 2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998 (CRLF apart).
LINE_WIDTH = 78
LINE_LIMIT = 998


def _utf8_start(data: bytes, i: int) -> int:
    """``i``, moved back to the first byte of the UTF-8 character it falls in."""
    while 0 < i < len(data) and data[i] & 0xC0 == 0x80:
        i -= 1
    return i


def fold(line: bytes, width: int = LINE_WIDTH, limit: int = LINE_LIMIT) -> bytes:
    """A header field (``Name: value``, or a continuation line starting with white space),
    without its CRLF, folded to lines of at most ``width`` octets where it can be: CRLF is
    inserted before a space already there (RFC 5322 3.2.2), so unfolding gives back exactly
    ``line``, and relaxed canonicalisation (DKIM, ARC) sees no difference. A run without spaces
    longer than ``limit`` is split (a space inserted) so that no line exceeds ``limit``."""
    if len(line) <= width:
        return line
    words = line.split(b" ")
    lines: list[bytes] = []
    current, count = words[0], 1
    # The first line keeps its first word after the field name ("Name:" is never alone on it);
    # a line of white space alone is never made.
    first_minimum = 1 if line[:1] in (b" ", b"\t") else 2
    for word in words[1:]:
        minimum = first_minimum if not lines else 1
        if len(current) + 1 + len(word) > width and count >= minimum and current.strip():
            lines.append(current)
            current, count = b" " + word, 1
        else:
            current += b" " + word
            count += 1
    lines.append(current)
    out: list[bytes] = []
    for piece in lines:
        while len(piece) > limit:
            cut = _utf8_start(piece, limit)
            out.append(piece[:cut])
            piece = b" " + piece[cut:]
        out.append(piece)
    return b"\r\n".join(out)


def authentication_results(hostname: str, results) -> bytes:
    """The ``Authentication-Results`` field (CRLF-terminated) for ``results``: one resinfo
    per result with a method, each on a line of its own (folded when longer than a line
    should be), or ``none`` when there is none."""
    infos = [info for info in map(resinfo, results) if info]
    head = f"Authentication-Results: {quote_value(hostname)}"
    if not infos:
        return fold(f"{head}; none".encode("ascii")) + b"\r\n"
    lines = [f"{head};", *(f"\t{info};" for info in infos[:-1]), f"\t{infos[-1]}"]
    return b"\r\n".join(fold(line.encode("ascii")) for line in lines) + b"\r\n"


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
    one ``mailboxes`` entry per ``(mailbox_id, folder)`` or ``(mailbox_id, folder,
    junk_threshold)`` delivered (the mailbox's own threshold when a filter found one, else
    ``junk_threshold``), and, our additions, the
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
    out["mailboxes"] = {}
    for mailbox_id, folder, *threshold in mailboxes:
        own = threshold[0] if threshold and threshold[0] is not None else junk_threshold
        out["mailboxes"][mailbox_id] = {
            "junk": folder == "Junk",
            "junk_threshold": own,
            "spam_reasons": list(reasons),
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
