"""Plain values the stores hand out. Protocol code reads these; only the stores write rows.

Times are integers of nanoseconds since the epoch (UTC) in the database and here; ``rfc3339``
formats them the way the REST API shows them.
"""

from __future__ import annotations

import datetime
import functools
import time
from typing import NamedTuple

import attrs

#: The system folders every mailbox has, with their SPECIAL-USE attributes (RFC 6154).
SYSTEM_FOLDERS = (
    ("INBOX", ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

#: IMAP system flags and the mailbox_message columns that hold them.
FLAG_COLUMNS = {
    "\\Seen": "read",
    "\\Answered": "answered",
    "\\Flagged": "flagged",
    "\\Deleted": "imap_deleted",
    "\\Draft": "draft",
}

APP_PASSWORD_SCOPES = ("imap", "smtp", "pop3", "sieve")


def now_ns() -> int:
    return time.time_ns()


@functools.lru_cache(maxsize=4096)
def _rfc3339_seconds(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(ns: int | None) -> str | None:
    """Format nanoseconds since the epoch as RFC 3339 with nanoseconds, like Go's default.

    The second is formatted once and cached: a page of message views has 250 times, most of
    them in a few seconds (delivered together), and ``strftime`` is most of the cost."""
    if ns is None:
        return None
    seconds, frac = divmod(ns, 1_000_000_000)
    base = _rfc3339_seconds(seconds)
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


@attrs.frozen
class Mailbox:
    id: str
    primary_address: str
    status: str
    quota_bytes: int
    used_bytes: int
    outbound_limits: dict
    spam_thresholds: dict | None
    created_at: int
    updated_at: int
    deleted_at: int | None

    @property
    def active(self) -> bool:
        return self.status == "active" and self.deleted_at is None


@attrs.frozen
class AppPassword:
    id: str
    mailbox_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: int
    updated_at: int
    last_used_at: int | None
    revoked_at: int | None
    deleted_at: int | None


@attrs.frozen
class Folder:
    id: str
    mailbox_id: str
    name: str
    system: bool
    special_use: str
    uid_validity: int
    uid_next: int
    highest_modseq: int
    subscribed: bool
    created_at: int
    updated_at: int


@attrs.frozen
class Recipient:
    """A recipient address resolved to its mailboxes (API.md 5.2).

    A route may resolve to several mailboxes: ``mailbox_ids`` lists those that receive the
    message (active, with room), ``mailbox_id`` is the first of them. ``route_id`` names the
    route that resolved the address ("" for a mailbox's own address).
    """

    mailbox_id: str
    original_rcpt: str
    base_rcpt: str
    plus_tag: str
    route_id: str = ""
    #: Which quota is already full, if any: "" (none), "mailbox" or "domain". Set only when
    #: every mailbox the address resolves to is full: SMTP answers 452 4.2.2 at RCPT (API.md
    #: 5.2 step 8) instead of accepting it. Full mailboxes among others are just left out.
    over_quota: str = ""
    mailbox_ids: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda self: (self.mailbox_id,), takes_self=True),
        converter=tuple,
    )


@attrs.frozen
class Route:
    """An alias, pattern or catch-all address delivering to ``destinations`` (API.md 1.4)."""

    id: str
    source_address: str
    type: str
    destinations: tuple[str, ...]
    status: str
    created_at: int
    updated_at: int
    deleted_at: int | None


@attrs.frozen
class RoutingRule:
    """Conditions and actions applied to inbound mail at delivery (API.md 1.5)."""

    id: str
    scope: str
    scope_ref: str
    priority: int
    name: str
    enabled: bool
    conditions: dict
    actions: list
    created_at: int
    updated_at: int


@attrs.frozen
class Label:
    """A label of a mailbox: a second view of messages with UIDs of its own (API.md 1.6)."""

    id: str
    mailbox_id: str
    name: str
    uid_validity: int
    uid_next: int
    created_at: int
    updated_at: int
    #: Whether IMAP lists ``Labels/<name>`` as subscribed (not part of the REST object).
    subscribed: bool = True


@attrs.frozen
class MessageLabel:
    """One mailbox_message carrying one label, with its UID in the label's view."""

    id: str
    mailbox_message_id: str
    label_id: str
    uid: int
    created_at: int


@attrs.frozen
class AuditEvent:
    """One row of the audit log (API.md 1.9)."""

    id: str
    event_type: str
    actor_type: str
    actor_id: str
    entity_type: str
    entity_id: str
    mailbox_id: str
    trace_id: str
    details: dict
    created_at: int


@attrs.frozen
class Domain:
    """A mail domain with a quota (our addition): ``quota_bytes`` caps the sum of
    ``used_bytes`` over the mailboxes whose primary address is in the domain (0: unlimited).
    ``used_bytes`` is that sum, computed when the record is read, never stored."""

    name: str
    quota_bytes: int
    used_bytes: int
    mailbox_count: int
    created_at: int
    updated_at: int

    @property
    def id(self) -> str:
        """The name: what the list cursor encodes after ``created_at``."""
        return self.name


def address_domain(address: str) -> str:
    """The domain of an address as quotas group mailboxes: the lowercased part after the
    last "@" (the whole address if it has none)."""
    return address.strip().lower().rpartition("@")[2]


@attrs.frozen
class DkimKey:
    """A DKIM signing key (API.md 1.11): ``algorithm`` is "rsa" or "ed25519"; the private key
    never leaves the server (the REST shape shows the DNS record only)."""

    id: str
    domain: str
    selector: str
    algorithm: str
    private_key: str
    public_key: str
    active: bool
    created_at: int
    updated_at: int


@attrs.frozen
class Submitted:
    """What ``store.submit`` stored for one outgoing message: the message row, its copy in the
    sender's Sent folder, the placements in local recipients' INBOXes, the outbound job (None
    when no recipient is remote) and the local recipients that went into the job instead,
    because their mailbox could not take the message now (docs/submission.md)."""

    message: MessageInfo
    sent: MailboxMessage
    delivered: tuple
    job_id: str | None
    requeued: tuple[str, ...] = ()


@attrs.frozen
class Delivery:
    """One placement of a message being stored: which mailbox, which folder, which flags."""

    mailbox_id: str
    folder: str = "INBOX"
    flags: tuple[str, ...] = ()
    original_rcpt: str = ""
    base_rcpt: str = ""
    plus_tag: str = ""
    route_id: str = ""
    #: Run the routing rules (API.md 1.5) on this placement inside the delivery transaction:
    #: inbound SMTP mail does, IMAP APPEND and the Sent copy of submitted mail do not.
    apply_rules: bool = False
    #: Label ids to attach to the placement in the delivery transaction (IMAP APPEND into
    #: ``Labels/<name>``); a label that is gone refuses the delivery like a missing folder.
    labels: tuple[str, ...] = ()


@attrs.frozen
class MessageInfo:
    """The per-message row shared by every mailbox the message was delivered to."""

    id: str
    trace_id: str
    rfc_message_id: str
    blob_key: str
    sha256: str
    size_bytes: int
    headers: dict
    from_addresses: list
    to_addresses: list
    cc_addresses: list
    bcc_addresses: list
    subject: str
    date: int | None
    text_body_extract: str
    html_body_extract: str
    attachments: list
    spam_score: float
    auth_results: dict
    envelope: str
    body: str
    bodystructure: str
    header_size: int
    parts: dict
    created_at: int
    updated_at: int
    deleted_at: int | None
    #: None when the whole message is the blob ``blob_key``; otherwise the segments
    #: ``[blob_key, offset, length]`` whose concatenation is the message (docs/storage.md).
    layout: list | None = None

    @property
    def segments(self) -> list[tuple[str, int, int]]:
        """Where the message's bytes are, in order: ``(blob_key, offset, length)`` triples.

        ``blob_key``, ``sha256`` and ``size_bytes`` always describe the whole message as
        received; for a message stored as a skeleton plus parts, ``blob_key`` names the skeleton.
        Read through ``IMailStore.open_message``/``read_message``, never the blob store directly.
        """
        return message_segments(self.blob_key, self.size_bytes, self.layout)


def message_segments(blob_key: str, size_bytes: int, layout) -> list[tuple[str, int, int]]:
    """``(blob_key, offset, length)`` triples whose concatenation is the message."""
    if not layout:
        return [(blob_key, 0, size_bytes)]
    return [(key, offset, length) for key, offset, length in layout]


class MessageSummary(NamedTuple):
    """A placement as IMAP's bulk commands read it (``IMailStore.message_summaries``): UID,
    MODSEQ, flags, internal date and size, plus the message fields the command asked for
    (None when not asked). A tuple, because FETCH 1:* makes one per message."""

    uid: int
    modseq: int
    flags: tuple[str, ...]
    internal_date: int
    size_bytes: int
    envelope: str | None = None
    body: str | None = None
    bodystructure: str | None = None
    header_size: int = 0
    subject: str | None = None
    text_body_extract: str | None = None
    html_body_extract: str | None = None
    blob_key: str = ""
    layout: list | None = None
    parts: dict | None = None
    header_fields: bytes | None = None

    @property
    def read(self) -> bool:
        return "\\Seen" in self.flags

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags if not f.startswith("\\"))

    @property
    def segments(self) -> list[tuple[str, int, int]]:
        """As ``MessageInfo.segments`` (needs ``blob_key`` and ``layout`` asked for)."""
        return message_segments(self.blob_key, self.size_bytes, self.layout)


@attrs.frozen
class MailboxMessage:
    """One message placed in one folder of one mailbox (the IMAP view of a message)."""

    id: str
    mailbox_id: str
    message_id: str
    folder_id: str
    uid: int
    modseq: int
    original_rcpt: str
    base_rcpt: str
    plus_tag: str
    resolved_route_id: str
    read: bool
    flagged: bool
    answered: bool
    draft: bool
    imap_deleted: bool
    keywords: tuple[str, ...]
    internal_date: int
    size_bytes: int
    created_at: int
    updated_at: int
    deleted_at: int | None

    @property
    def flags(self) -> tuple[str, ...]:
        """The IMAP flags: system flags first, then keywords."""
        system = tuple(flag for flag, column in FLAG_COLUMNS.items() if getattr(self, column))
        return system + tuple(self.keywords)


@attrs.frozen
class CopyResult:
    """What COPY or MOVE did: the target's UIDVALIDITY and the UIDs, pairwise in UID order
    (``source_uids[i]`` became ``target_uids[i]``), which is what UIDPLUS's COPYUID reports."""

    target_folder_id: str
    uid_validity: int
    source_uids: tuple[int, ...] = ()
    target_uids: tuple[int, ...] = ()

    def __bool__(self):
        return bool(self.source_uids)


@attrs.frozen
class OutboundRecipient:
    """One recipient of an outbound job: ``pending`` until an attempt settles it as ``sent`` or
    ``failed``; ``code``, ``enhanced_status_code`` and ``response`` are the last answer heard
    for it (a 4xx leaves it pending with that answer). A ``sent`` recipient becomes
    ``bounced`` when a bounce to the job's VERP address reports it failed later (the report's
    code, status and diagnostic then)."""

    id: str
    job_id: str
    rcpt: str
    status: str
    code: int
    enhanced_status_code: str
    response: str
    updated_at: int


@attrs.frozen
class OutboundAttempt:
    """One delivery attempt: which node, when, and its ``result`` (``code``,
    ``enhanced_status_code``, ``classification``, ``response``, per-recipient answers).
    ``finished_at`` is None while it runs (or if its node died; the next claim closes it)."""

    id: str
    job_id: str
    attempt: int
    node: str
    result: dict
    started_at: int
    finished_at: int | None


@attrs.frozen
class OutboundJob:
    """A queued message (API.md 5.4). ``status``: ``queued``, ``processing``, ``retry``,
    ``sent`` or ``failed``. ``attempts`` counts claims, so it is also the fencing token of the
    current lease: a worker whose job was taken over finds a higher number and writes nothing."""

    id: str
    message_id: str
    mailbox_id: str
    trace_id: str
    mail_from: str
    route: str
    status: str
    attempts: int
    next_attempt_at: int
    locked_by: str
    locked_until: int | None
    last_error: dict
    created_at: int
    updated_at: int
    dsn_message_id: str = ""
    recipients: tuple[OutboundRecipient, ...] = ()
    attempt_log: tuple[OutboundAttempt, ...] = ()
    #: Set on a claimed job: the message to send (read through ``IMailStore.open_message``).
    message: MessageInfo | None = None

    @property
    def pending(self) -> list[str]:
        """The recipients still to be delivered, in the order they were queued."""
        return [r.rcpt for r in self.recipients if r.status == "pending"]


@attrs.frozen
class BounceEvent:
    """A delivery status notification received on a VERP return path (API.md 5.2 step 1)."""

    id: str
    message_id: str
    job_id: str
    mailbox_id: str
    verp_address: str
    envelope_from: str
    recipient: str
    action: str
    status: str
    diagnostic: str
    remote_mta: str
    reporting_mta: str
    remote_ip: str
    trace_id: str
    sha256: str
    size_bytes: int
    excerpt: str
    created_at: int
