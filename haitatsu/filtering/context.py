"""What a filter sees: the session, the transaction, the message, the recipient being delivered.

One ``FilterContext`` lives as long as its SMTP connection. Session-level facts (peer, HELO, TLS,
what CONNECT and HELO filters found) stay for the whole connection; the transaction part
(envelope, message, per-transaction ``notes``, results of MAIL/RCPT/DATA filters) starts afresh
with every MAIL command.

The message is never loaded into memory behind a filter's back: ``context.message`` reads the
spool file on request, the header section up to a bound, the whole message only through an
explicit ``read(limit)`` or ``open()``.
"""

from __future__ import annotations

import email.utils
import io
import os
from collections.abc import Iterator

import attrs

from haitatsu.filtering.verdicts import FilterResult, Stage

#: How much of the message ``headers()`` reads: a header section longer than this is cut here.
HEADER_LIMIT = 256 * 1024


class MessageTooLarge(Exception):
    """``MessageAccess.read(limit)`` on a message larger than ``limit``."""


@attrs.define
class SessionInfo:
    """The connection: who is talking to us and how."""

    remote_ip: str = ""
    remote_port: int = 0
    #: Reverse DNS name of the client, once something looked it up (None until then).
    remote_name: str | None = None
    #: The HELO/EHLO name, None before the client sent one.
    helo: str | None = None
    #: Whether the session is encrypted (STARTTLS done, or an implicit-TLS listener).
    tls: bool = False
    #: The authenticated user (submission), None on the MX.
    authenticated: str | None = None
    #: Our host name (``server.public_hostname``): the authserv-id of Authentication-Results.
    hostname: str = ""
    #: Notes kept for the whole connection, for filters to share state (keys: your filter's
    #: name, or ``name.something``).
    notes: dict = attrs.field(factory=dict)


@attrs.frozen
class Recipient:
    """An accepted recipient: the address the client gave and where it resolved."""

    address: str
    mailbox_ids: tuple[str, ...] = ()
    #: The address without ``+tag`` (``bob@example.com`` for ``bob+news@example.com``).
    base_address: str = ""
    plus_tag: str = ""
    route_id: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@attrs.define
class Envelope:
    """The transaction's envelope."""

    #: The MAIL FROM address; "" is the null sender (bounces).
    mail_from: str = ""
    #: MAIL FROM parameters, keyword upper-cased (``{"SIZE": "1234", "BODY": "8BITMIME"}``).
    mail_params: dict = attrs.field(factory=dict)
    #: Recipients accepted so far (at RCPT, the one being checked is ``context.recipient``).
    recipients: list[Recipient] = attrs.field(factory=list)

    @property
    def mail_from_domain(self) -> str:
        return self.mail_from.rpartition("@")[2].lower() if "@" in self.mail_from else ""


class MessageAccess:
    """The received message, as the client sent it (without the headers we prepend), in the
    spool file. Reads are small and bounded unless the filter asks for more."""

    def __init__(self, path: str, size: int, spool=None):
        self._path = path
        #: Size in bytes of the message as received.
        self.size = size
        #: The MX's ``SpoolFile`` while the message is only in its buffer (a small message):
        #: reads come from memory, and asking for ``path`` writes the file out first.
        self._spool = spool if spool is not None and spool.in_memory else None
        self._headers: list[tuple[str, str]] | None = None
        self._header_bytes: bytes | None = None

    @property
    def path(self) -> str:
        """The file of the whole message (written out first when it was still in memory)."""
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.flush()
        return self._path

    def open(self):
        """A binary file of the whole message (the caller closes it). Read it in a thread
        (``deferToThread``) when the message may be large."""
        if self._spool is not None and self._spool.in_memory:
            return io.BytesIO(self._spool.buffered())
        return open(self.path, "rb")

    def read(self, limit: int) -> bytes:
        """The whole message, if it is at most ``limit`` bytes; ``MessageTooLarge`` otherwise.
        Synchronous: keep ``limit`` small in the reactor thread, or call it in a thread."""
        if self.size > limit:
            raise MessageTooLarge(f"message is {self.size} bytes, over the limit of {limit}")
        with self.open() as f:
            return f.read(limit + 1)[:limit]

    def header_bytes(self) -> bytes:
        """The header section up to and including the blank line that ends it (at most
        ``HEADER_LIMIT`` bytes; the whole message when it has no body)."""
        if self._header_bytes is None:
            with self.open() as f:
                head = f.read(HEADER_LIMIT)
            if head.startswith(b"\r\n"):
                end = 2
            else:
                end = head.find(b"\r\n\r\n")
                end = end + 4 if end >= 0 else len(head)
            self._header_bytes = head[:end]
        return self._header_bytes

    def headers(self) -> list[tuple[str, str]]:
        """Header fields in order as ``(name, value)``: folding removed, value stripped, bytes
        decoded as UTF-8 (invalid bytes replaced). Encoded words (RFC 2047) are left as they
        are. Lines that are not fields (no colon) are skipped."""
        if self._headers is None:
            self._headers = list(_split_fields(self.header_bytes()))
        return self._headers

    def header(self, name: str) -> list[str]:
        """The values of every field called ``name`` (case-insensitive), in order."""
        name = name.lower()
        return [value for field, value in self.headers() if field.lower() == name]

    def addresses(self, name: str) -> list[str]:
        """Bare addresses in every ``name`` field (``From``, ``To``...), lower-cased."""
        out = []
        for _, address in email.utils.getaddresses(self.header(name)):
            if address and "@" in address:
                out.append(address.lower())
        return out


def _split_fields(raw: bytes) -> Iterator[tuple[str, str]]:
    name = None
    value: list[bytes] = []
    for line in raw.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            yield name, b" ".join(v.strip() for v in value).decode("utf-8", "replace").strip()
            name = None
        if not line:
            continue
        head, colon, rest = line.partition(b":")
        if not colon or not head or head != head.rstrip() or b" " in head:
            continue
        name = head.decode("ascii", "replace")
        value = [rest]
    if name is not None:
        yield name, b" ".join(v.strip() for v in value).decode("utf-8", "replace").strip()


@attrs.define
class DeliveryTarget:
    """One recipient mailbox at ``Stage.DELIVERY``. A filter may change where the message is
    filed: ``folder`` (by name, ``/`` between levels), more folders for copies in
    ``extra_folders`` (names, or ``(name, flags)`` pairs for copies with flags of their own),
    and IMAP ``flags`` (``\\Seen``, keywords)."""

    mailbox_id: str
    #: The address the client gave for it (``bob+news@example.com``).
    recipient: str
    base_recipient: str = ""
    plus_tag: str = ""
    route_id: str = ""
    folder: str = "INBOX"
    extra_folders: list[str] = attrs.field(factory=list)
    flags: set[str] = attrs.field(factory=set)
    #: The Junk threshold that applies to this mailbox, once a filter looked it up (the
    #: ``spam_score`` filter: the mailbox's ``spam_thresholds.junk_threshold`` or
    #: ``spam.junk_threshold``); recorded in ``auth_results.mailboxes``. None: not looked up.
    junk_threshold: float | None = None


class FilterContext:
    """Everything a filter may look at; see docs/plugins.md.

    ``session`` (``SessionInfo``), ``envelope`` (``Envelope``), ``message`` (``MessageAccess``,
    None before DATA), ``recipient`` (the ``Recipient`` at RCPT), ``target`` (the
    ``DeliveryTarget`` at DELIVERY), ``results`` (what filters found so far), ``notes`` (a dict
    for this transaction), ``resolver`` (``haitatsu.dns.Resolver``), ``config`` (the
    connection's ``Config``), ``clock`` (the reactor), ``trace_id`` (set at DATA).
    """

    def __init__(self, session: SessionInfo, resolver, config, clock):
        self.session = session
        self.resolver = resolver
        self.config = config
        self.clock = clock
        self.stage: Stage | None = None
        self._session_results: list[FilterResult] = []
        self._session_verdicts: list = []
        #: The reason of a QUARANTINE verdict at CONNECT or HELO (sticky for the session).
        self._session_quarantine = ""
        self.new_transaction()

    def new_transaction(self) -> None:
        """Forget the transaction (called at MAIL): envelope, message, notes and results of the
        transaction stages."""
        self.envelope = Envelope()
        self.message: MessageAccess | None = None
        self.recipient: Recipient | None = None
        self.target: DeliveryTarget | None = None
        self.trace_id = ""
        self.notes: dict = {}
        self._transaction_results: list[FilterResult] = []
        self._transaction_verdicts: list = []
        self._transaction_quarantine = ""

    @property
    def results(self) -> list[FilterResult]:
        """Every result so far: the session's (CONNECT, HELO), then the transaction's."""
        return self._session_results + self._transaction_results

    @property
    def verdicts(self) -> list:
        """The verdicts other than a plain continue so far (``VerdictRecord``), session's first."""
        return self._session_verdicts + self._transaction_verdicts

    def results_of(self, filter_name: str) -> list[FilterResult]:
        return [r for r in self.results if r.filter == filter_name]

    @property
    def score(self) -> float:
        """The sum of every result's score so far (may be negative; stored clamped at 0)."""
        return sum(r.score for r in self.results)

    @property
    def quarantined(self) -> str:
        """The reason token of the QUARANTINE in force, or "" when none is."""
        return self._transaction_quarantine or self._session_quarantine

    # -- used by the chain ---------------------------------------------------------------

    def _record(self, stage: Stage, results) -> None:
        if stage in (Stage.CONNECT, Stage.HELO):
            self._session_results.extend(results)
        else:
            self._transaction_results.extend(results)

    def _remember(self, stage: Stage, record) -> None:
        if stage in (Stage.CONNECT, Stage.HELO):
            self._session_verdicts.append(record)
        else:
            self._transaction_verdicts.append(record)

    def _forget_stage(self, stage: Stage) -> None:
        """A repeated HELO/EHLO replaces what the previous one's filters found."""
        self._session_results = [r for r in self._session_results if r.stage != stage]
        self._session_verdicts = [v for v in self._session_verdicts if v.stage != stage]

    def _quarantine(self, stage: Stage, reason: str) -> None:
        if stage in (Stage.CONNECT, Stage.HELO):
            self._session_quarantine = self._session_quarantine or reason or "quarantine"
        else:
            self._transaction_quarantine = self._transaction_quarantine or reason or "quarantine"


def spool_message(path: str) -> MessageAccess:
    """A ``MessageAccess`` for a finished file (tests and tools)."""
    return MessageAccess(path, os.path.getsize(path))
