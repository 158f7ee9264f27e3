"""Delivery status notifications (RFC 3464) for the sender of a message that failed.

The bounce is a ``multipart/report; report-type=delivery-status`` in three parts: the text a
person reads (API.md 3's built-in fallback: "A message could not be delivered." with each
recipient's status and the relay's response), the ``message/delivery-status`` part a program
reads (one block per failed recipient: ``Final-Recipient``, ``Action: failed``, ``Status``,
``Remote-MTA``, ``Diagnostic-Code``), and the original message's header (``text/rfc822-headers``),
so the sender sees which message it was without the bounce carrying the whole of it again.
"""

from __future__ import annotations

import email.utils
import re

import ulid

SUBJECT = "Message delivery failed"
INTRO = "A message could not be delivered."

_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _ascii(text: str) -> str:
    """A header-safe single line: control and non-ASCII characters become "?"."""
    return _UNSAFE.sub("?", " ".join(str(text).split()))


def _status(answer) -> str:
    """The RFC 3463 status of a failure: the relay's enhanced code, else one derived from
    the reply code's class (5.0.0 / 4.0.0), else 4.4.7 (delivery time expired)."""
    if answer.enhanced:
        return answer.enhanced
    if 500 <= answer.code < 600:
        return "5.0.0"
    if 400 <= answer.code < 500:
        return "4.0.0"
    return "4.4.7"


def build_dsn(
    *,
    reporting_mta: str,
    from_address: str,
    to_address: str,
    failures,
    original_headers: bytes,
    envelope_id: str,
    arrival: float,
    now: float,
    expired: bool = False,
) -> bytes:
    """The bytes of the bounce. ``failures`` are ``(rcpt, Answer, remote_mta)`` triples;
    ``arrival`` and ``now`` are Unix times; ``expired`` says the retries ran out."""
    boundary = f"haitatsu-report-{ulid.ULID()}"
    lines = [INTRO, ""]
    if expired:
        lines += ["Delivery was retried until the retry period ran out.", ""]
    for rcpt, answer, _ in failures:
        lines.append(f"Recipient: {rcpt}")
        lines.append(f"Status: {_status(answer)}")
        lines.append(f"Response: {answer.response or 'no response'}")
        lines.append("")
    text = "\r\n".join(lines).encode("utf-8")
    text_cte = "7bit" if text.isascii() else "8bit"

    report = [
        f"Reporting-MTA: dns; {_ascii(reporting_mta)}",
        f"Original-Envelope-Id: {_ascii(envelope_id)}",
        f"Arrival-Date: {email.utils.formatdate(arrival)}",
    ]
    for rcpt, answer, remote_mta in failures:
        report.append("")
        report.append(f"Final-Recipient: rfc822; {_ascii(rcpt)}")
        report.append("Action: failed")
        report.append(f"Status: {_status(answer)}")
        if remote_mta:
            report.append(f"Remote-MTA: dns; {_ascii(remote_mta)}")
        if answer.code:
            report.append(f"Diagnostic-Code: smtp; {_ascii(answer.response)}")
        elif answer.response:
            report.append(f"Diagnostic-Code: X-Haitatsu; {_ascii(answer.response)}")
        report.append(f"Last-Attempt-Date: {email.utils.formatdate(now)}")

    headers = original_headers.rstrip(b"\r\n") + b"\r\n"
    headers_cte = "7bit" if headers.isascii() else "8bit"
    host = _ascii(reporting_mta) or "localhost"
    out = [
        f'From: "Haitatsu" <{_ascii(from_address)}>',
        f"To: <{_ascii(to_address)}>",
        f"Subject: {SUBJECT}",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{ulid.ULID()}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-formatted delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {text_cte}",
        "",
    ]
    parts = [
        "\r\n".join(out).encode("ascii") + b"\r\n",
        text,
        (
            f"\r\n--{boundary}\r\n"
            "Content-Type: message/delivery-status\r\n"
            "\r\n" + "\r\n".join(report) + "\r\n"
            f"\r\n--{boundary}\r\n"
            "Content-Type: text/rfc822-headers\r\n"
            f"Content-Transfer-Encoding: {headers_cte}\r\n"
            "\r\n"
        ).encode("ascii"),
        headers,
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    ]
    return b"".join(parts)
