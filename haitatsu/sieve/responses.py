"""What a Sieve script sends: vacation responses (RFC 5230) and rejection notices (RFC 5429).

``vacation_refusal`` applies RFC 5230 section 4's rules on whether to answer at all (never to
the null sender, to list or bulk mail, to auto-submitted mail, to the robots of section 4.6,
to mail that does not name the user in To, Cc or Bcc, or to the user's own mail);
``vacation_handle`` is the default ``:handle`` (section 4.2); ``build_vacation`` and
``build_rejection`` make the messages. All pure functions of their arguments.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import hashlib
import re

import ulid

from haitatsu.sieve.interpreter import Vacation

_ROBOT_LOCALPARTS = ("mailer-daemon", "listserv", "majordomo")
_LIST_HEADERS = (
    "list-id",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
_RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _bare(address: str) -> str:
    """Lower case, without a ``+detail``."""
    local, at, domain = address.lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if at else address.lower()


def vacation_refusal(message, sender: str, own_addresses) -> str:
    """Why no vacation response goes to ``sender`` for ``message`` (a ``SieveMessage``): a
    reason token, or "" when one may. ``own_addresses`` are the user's: the recipient's
    address, the mailbox's primary address and the script's ``:addresses``."""
    if not sender:
        return "null_sender"
    local = sender.rpartition("@")[0].lower()
    if local in _ROBOT_LOCALPARTS or local.startswith("owner-") or local.endswith("-request"):
        return "robot_sender"
    for value in message.raw_values("auto-submitted"):
        if value.split(";", 1)[0].strip().lower() != "no":
            return "auto_submitted"
    if any(message.raw_values(h) for h in _LIST_HEADERS):
        return "mailing_list"
    for value in message.raw_values("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return "precedence"
    own = {_bare(a) for a in own_addresses if a}
    if _bare(sender) in own:
        return "own_message"
    named = {_bare(a) for h in _RECIPIENT_HEADERS for a in message.addresses(h) if a}
    if not own & named:
        return "not_addressed"
    return ""


def vacation_handle(vacation: Vacation) -> str:
    """The ``:handle``, or one made of the reason, subject, from and :mime (RFC 5230 4.2)."""
    if vacation.handle:
        return vacation.handle
    source = "\x00".join(
        [vacation.reason, vacation.subject, vacation.from_address, str(vacation.mime)]
    )
    return "auto:" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def _message_id(hostname: str) -> str:
    return f"<{ulid.ULID()}@{_UNSAFE.sub('', hostname) or 'localhost'}>"


def build_vacation(
    vacation: Vacation,
    message,
    *,
    sender: str,
    from_address: str,
    hostname: str,
    now: float,
) -> bytes:
    """The response to ``sender`` (RFC 5230 section 5): from ``from_address`` (or the
    script's ``:from``), ``Auto-Submitted: auto-replied``, in reply to the message's
    Message-ID, subject ``:subject`` or "Auto: " and the original one."""
    policy = email.policy.SMTP
    if vacation.mime:
        reply = email.message_from_string(
            vacation.reason.replace("\r\n", "\n"),
            _class=email.message.EmailMessage,
            policy=policy,
        )
    else:
        reply = email.message.EmailMessage(policy=policy)
        reply.set_content(vacation.reason.replace("\r\n", "\n"), charset="utf-8")
    subject = vacation.subject
    if not subject:
        original = message.header_values("subject")
        subject = "Auto: " + (original[0] if original else "")
    headers = [
        ("From", vacation.from_address or from_address),
        ("To", sender),
        ("Subject", " ".join(subject.split())),
        ("Date", email.utils.formatdate(now)),
        ("Message-ID", _message_id(hostname)),
        ("Auto-Submitted", "auto-replied (vacation)"),
    ]
    original_id = message.raw_values("message-id")
    if original_id:
        headers.append(("In-Reply-To", original_id[0]))
        references = message.raw_values("references")
        refs = (references[0] + " " if references else "") + original_id[0]
        headers.append(("References", " ".join(refs.split())))
    if "MIME-Version" not in reply:
        headers.append(("MIME-Version", "1.0"))
    # Our fields first, then the body part's own (Content-Type and so on).
    own = list(reply.items())
    for name in list(reply.keys()):
        del reply[name]
    for name, value in headers:
        reply[name] = value
    for name, value in own:
        if name.lower() not in {n.lower() for n, _ in headers}:
            reply[name] = value
    return reply.as_bytes(policy=policy)


def build_rejection(
    text: str,
    message,
    *,
    sender: str,
    recipient: str,
    hostname: str,
    postmaster: str,
    now: float,
) -> bytes:
    """An MDN (RFC 8098) with disposition ``deleted`` telling ``sender`` that ``recipient``
    refused the message, with the script's ``text`` (RFC 5429 section 2.1): the notice the
    ``reject`` action sends when it cannot refuse the message in the SMTP session."""
    boundary = f"haitatsu-mdn-{ulid.ULID()}"
    host = _UNSAFE.sub("", hostname) or "localhost"
    original_id = message.raw_values("message-id")
    subject = message.header_values("subject")
    body = text.replace("\r\n", "\n").rstrip("\n").replace("\n", "\r\n") + "\r\n"
    report = [
        f"Reporting-UA: {host}; haitatsu Sieve",
        f"Final-Recipient: rfc822; {_UNSAFE.sub('?', recipient)}",
    ]
    if original_id:
        report.append(f"Original-Message-ID: {_UNSAFE.sub('?', original_id[0])}")
    report.append("Disposition: automatic-action/MDN-sent-automatically; deleted")
    header_section = b"".join(
        f"{name}: {value}\r\n".encode("utf-8", "replace") for name, value in message.fields
    )
    fields = [
        ("From", postmaster),
        ("To", sender),
        ("Subject", "Rejected: " + (" ".join(subject[0].split()) if subject else "")),
        ("Date", email.utils.formatdate(now)),
        ("Message-ID", _message_id(hostname)),
        ("Auto-Submitted", "auto-replied (rejected)"),
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            f'multipart/report; report-type=disposition-notification; boundary="{boundary}"',
        ),
    ]
    policy = email.policy.SMTP
    out = (
        b"".join(
            policy.header_factory(name, value).fold(policy=policy).encode("ascii")
            for name, value in fields
        )
        + b"\r\n"
    )
    cte = "7bit" if body.isascii() else "8bit"
    headers_cte = "7bit" if header_section.isascii() else "8bit"
    out += (
        "This is a MIME-formatted message disposition notification.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
        f"Your message to {_UNSAFE.sub('?', recipient)} was rejected by the recipient:\r\n\r\n"
    ).encode() + body.encode("utf-8")
    out += (
        f"\r\n--{boundary}\r\n"
        "Content-Type: message/disposition-notification\r\n\r\n" + "\r\n".join(report) + "\r\n"
        f"\r\n--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        f"Content-Transfer-Encoding: {headers_cte}\r\n\r\n"
    ).encode("ascii")
    out += header_section + f"\r\n--{boundary}--\r\n".encode("ascii")
    return out
