"""VERP bounces coming back to the MX (API.md 5.2 step 1).

Every message the queue relays has the return path ``bounces+<message id>@<sender domain>``, so
a bounce another server sends later (after our relay accepted the message) names the message it
is about. At RCPT such an address at one of our domains is accepted, the report is parsed (status,
recipient, diagnostic) and recorded in ``bounce_events``, and nothing reaches a mailbox. A
recipient the report says ``failed`` that the relay had taken becomes ``bounced`` in the job's
per-recipient outcome (the outbound job API shows it). A bare
``bounces@`` or a malformed VERP address at our domains is ``550 5.1.1 invalid bounce
recipient``; at other domains these are ordinary (unknown) recipients.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: A ULID: 26 characters of Crockford base32, the first at most 7 (128 bits).
_VERP = re.compile(r"bounces\+([0-7][0-9A-HJKMNP-TV-Z]{25})", re.IGNORECASE)

#: How much of a bounce is parsed: the report comes first; the returned message after it may be
#: large and is not needed.
PARSE_LIMIT = 1024 * 1024
EXCERPT_CHARS = 4000


@attrs.frozen
class VerpAddress:
    """A recipient address of the VERP form (``message_id`` is None when it is malformed or
    a bare ``bounces@``)."""

    address: str
    domain: str
    message_id: str | None

    @property
    def valid(self) -> bool:
        return self.message_id is not None


def verp_address(message_id: str, domain: str) -> str:
    """The return path of a message: ``bounces+<message id>@<domain>``."""
    return f"bounces+{message_id}@{domain}"


def parse_verp(address: str) -> VerpAddress | None:
    """Recognise a bounce address; None for any other address."""
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        return None
    if local.lower() != "bounces" and not local.lower().startswith("bounces+"):
        return None
    m = _VERP.fullmatch(local)
    return VerpAddress(address, domain.lower(), m.group(1).upper() if m else None)


def _field(block, name: str) -> str:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _typed(value: str) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com`` (RFC 3464's address-type prefix)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep else value.strip()


def parse_report(path: str) -> dict:
    """Parse a bounce file (in a thread): its SHA-256 and size, the per-recipient reports of
    its ``message/delivery-status`` part (``recipient``, ``original_recipient``, ``action``,
    ``status``, ``diagnostic``, ``remote_mta``, ``reporting_mta``) and an excerpt of its human
    text."""
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    with open(path, "rb") as f:
        while chunk := f.read(65536):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < PARSE_LIMIT:
                head += chunk[: PARSE_LIMIT - len(head)]
    message = email.message_from_bytes(bytes(head), policy=email.policy.compat32)
    reports, excerpt = [], ""
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list) or not blocks:
                continue
            reporting = _typed(_field(blocks[0], "Reporting-MTA"))
            for block in blocks[1:]:
                if not hasattr(block, "get"):
                    continue
                original = _typed(_field(block, "Original-Recipient"))
                reports.append(
                    {
                        "recipient": _typed(_field(block, "Final-Recipient")) or original,
                        "original_recipient": original,
                        "action": _field(block, "Action").lower(),
                        "status": _field(block, "Status"),
                        "diagnostic": _typed(_field(block, "Diagnostic-Code")),
                        "remote_mta": _typed(_field(block, "Remote-MTA")),
                        "reporting_mta": reporting,
                    }
                )
        elif ctype == "text/plain" and not excerpt and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                excerpt = payload.decode(charset, "replace")
            except LookupError:
                excerpt = payload.decode("utf-8", "replace")
    if not excerpt:
        excerpt = bytes(head[:EXCERPT_CHARS]).decode("utf-8", "replace")
    return {
        "sha256": digest.hexdigest(),
        "size": size,
        "reports": reports,
        "excerpt": excerpt[:EXCERPT_CHARS],
        "subject": _field(message, "Subject"),
    }


class BounceHandler:
    """What the MX asks about bounce addresses: ``check(address)`` at RCPT, ``record(...)``
    after DATA. Parsing runs in the reactor's thread pool."""

    _log = Logger()

    def __init__(self, store, reactor):
        self.store = store
        self.reactor = reactor

    async def check(self, address: str):
        """At RCPT: None when ``address`` is no bounce address of ours (resolve it as usual);
        else the ``VerpAddress``, which is refused when not ``valid``."""
        verp = parse_verp(address)
        if verp is None:
            return None
        if not await self.store.is_hosted_domain(verp.domain):
            return None
        return verp

    async def record(self, path: str, verps, envelope_from="", remote_ip="", trace_id=""):
        """Parse the bounce at ``path`` and record it for each VERP address it came to."""
        parsed = await deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), parse_report, path
        )
        events = []
        for verp in verps:
            events += await self.store.record_bounce(
                verp.message_id,
                verp.address,
                parsed["reports"],
                envelope_from=envelope_from,
                remote_ip=remote_ip,
                trace_id=trace_id,
                sha256=parsed["sha256"],
                size_bytes=parsed["size"],
                excerpt=parsed["excerpt"],
            )
        for event in events:
            self._log.info(
                "bounce for message {message_id} job {job_id}: {recipient} {action} {status}",
                message_id=event.message_id,
                job_id=event.job_id,
                recipient=event.recipient,
                action=event.action,
                status=event.status,
                trace_id=trace_id,
            )
        return events
