"""The chain as one SMTP session sees it: one hook per stage, each turning the stage's outcome
into what the session does (an SMTP reply, a closed connection, a Junk placement).

The session calls ``connect``, ``helo``, ``mail`` and ``rcpt``; each returns None when no filter
runs at that stage (the session carries on synchronously, exactly as without filters), or a
Deferred of an ``Outcome``. At the final dot it awaits ``data`` and then ``delivery``. The MX
(``haitatsu.smtp.server``) is the only caller; everything about verdicts lives here.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer, threads
from twisted.logger import Logger

from haitatsu.filtering.context import (
    HEADER_LIMIT,
    DeliveryTarget,
    FilterContext,
    MessageAccess,
    Recipient,
    SessionInfo,
)
from haitatsu.filtering.results import (
    auth_results_json,
    authentication_results,
    authserv_id,
    fold,
    spam_score,
)
from haitatsu.filtering.verdicts import Action, Stage
from haitatsu.smtp.envelope import Reply
from haitatsu.smtp.spool import SpoolFile

#: Messages at least this large are re-spooled (our headers prepended) in a thread.
THREAD_COPY_BYTES = 1024 * 1024

_CHUNK = 1024 * 1024

JUNK = "Junk"


@attrs.frozen
class Outcome:
    """What the session does after a stage: ``reply`` None means "carry on as without
    filters"; otherwise answer it, and close the connection if ``disconnect``. ``refuse``
    (a rejected connection) makes the session answer 503 to everything but QUIT."""

    reply: Reply | None = None
    disconnect: bool = False
    refuse: bool = False


PROCEED = Outcome()


@attrs.frozen
class DataDecision:
    """After the DATA stage: ``reply`` when the message is refused or discarded (the session
    answers it and stores nothing), else ``spool``, the file to store (our headers and the
    filters' prepended)."""

    reply: Reply | None = None
    spool: SpoolFile | None = None


@attrs.frozen
class DeliveryPlan:
    """After the DELIVERY stage: ``reply`` when nothing is to be stored (every recipient
    refused or discarded), else the ``deliveries`` to store, with the message's
    ``auth_results`` and ``spam_score``."""

    reply: Reply | None = None
    deliveries: tuple = ()
    auth_results: dict = attrs.field(factory=dict, hash=False)
    spam_score: float = 0.0


def _refusal(result) -> Reply:
    verdict = result.verdict
    return Reply(verdict.code, verdict.enhanced, verdict.text)


class SessionFilters:
    """The chain bound to one SMTP connection (built by ``FilterChain.session``)."""

    active = True
    _log = Logger()

    def __init__(self, chain, config, clock):
        self.chain = chain
        self.config = config
        self.clock = clock
        self.protocol = None
        self.context: FilterContext | None = None
        #: The reason of a DISCARD at CONNECT or HELO: every message of the session is dropped.
        self._session_discard = ""
        self._transaction_discard = ""
        #: Header fields verdicts asked for: at CONNECT and HELO (kept for the session), and in
        #: the transaction (MAIL, RCPT, DATA).
        self._headers = {Stage.CONNECT: (), Stage.HELO: ()}
        self._transaction_headers: list = []
        self._discarded_rcpts: set[str] = set()
        self._released = False

    def release(self):
        """The connection is gone."""
        if not self._released:
            self._released = True
            self.chain._release()

    # -- the stages ------------------------------------------------------------------------

    def connect(self, protocol):
        self.protocol = protocol
        peer = protocol.transport.getPeer()
        session = SessionInfo(
            remote_ip=protocol.remote_ip,
            remote_port=getattr(peer, "port", 0) or 0,
            remote_name=protocol.remote_name,
            tls=protocol.secure,
            hostname=self.config.server.public_hostname,
        )
        self.context = FilterContext(session, self.chain.resolver, self.config, self.clock)
        if not self.chain.runs_at(Stage.CONNECT):
            return None
        return defer.Deferred.fromCoroutine(self._connect())

    async def _connect(self) -> Outcome:
        result = await self.chain.run(Stage.CONNECT, self.context)
        self._headers[Stage.CONNECT] = result.headers
        if result.action is Action.REJECT:
            verdict = result.verdict
            return Outcome(Reply(554, verdict.enhanced, verdict.text), refuse=True)
        if result.action is Action.TEMPFAIL:
            verdict = result.verdict
            return Outcome(Reply(421, verdict.enhanced, verdict.text), disconnect=True)
        if result.action is Action.DISCARD:
            self._session_discard = result.verdict.reason or "discard"
        return PROCEED

    def helo(self, name: str):
        session = self.context.session
        session.helo = name
        session.tls = self.protocol.secure
        self.context._forget_stage(Stage.HELO)
        if not self.chain.runs_at(Stage.HELO):
            return None
        return defer.Deferred.fromCoroutine(self._command(Stage.HELO))

    def mail(self, sender: str, params):
        context = self.context
        context.new_transaction()
        context.session.tls = self.protocol.secure
        context.envelope.mail_from = sender
        context.envelope.mail_params = dict(params)
        self._transaction_discard = ""
        self._discarded_rcpts = set()
        self._transaction_headers = []
        if not self.chain.runs_at(Stage.MAIL):
            return None
        return defer.Deferred.fromCoroutine(self._command(Stage.MAIL))

    async def _command(self, stage: Stage) -> Outcome:
        result = await self.chain.run(stage, self.context)
        if stage is Stage.HELO:
            self._headers[Stage.HELO] = result.headers
        else:
            self._transaction_headers.extend(result.headers)
        if result.action in (Action.REJECT, Action.TEMPFAIL):
            return Outcome(_refusal(result))
        if result.action is Action.DISCARD:
            reason = result.verdict.reason or "discard"
            if stage is Stage.HELO:
                self._session_discard = reason
            else:
                self._transaction_discard = reason
        return PROCEED

    def rcpt(self, address: str, resolved):
        recipient = Recipient(
            address=address,
            mailbox_ids=tuple(resolved.mailbox_ids),
            base_address=resolved.base_rcpt,
            plus_tag=resolved.plus_tag,
            route_id=resolved.route_id,
        )
        if not self.chain.runs_at(Stage.RCPT):
            self.context.envelope.recipients.append(recipient)
            return None
        return defer.Deferred.fromCoroutine(self._rcpt(recipient))

    async def _rcpt(self, recipient: Recipient) -> Outcome:
        context = self.context
        context.recipient = recipient
        try:
            result = await self.chain.run(Stage.RCPT, context)
        finally:
            context.recipient = None
        self._transaction_headers.extend(result.headers)
        if result.action in (Action.REJECT, Action.TEMPFAIL):
            return Outcome(_refusal(result))
        if result.action is Action.DISCARD:
            self._discarded_rcpts.add(recipient.address.lower())
        context.envelope.recipients.append(recipient)
        return PROCEED

    async def data(self, spool: SpoolFile, trace_id: str, size: int, prelude) -> DataDecision:
        """The DATA stage on the spooled message (the client's bytes only), then the file to
        store: ``prelude(trace_id, added)`` (the session's trace headers with ``added``, our
        Authentication-Results and the filters' fields, inside them) followed by the message.
        ``spool`` is consumed: removed, or handed back in the decision."""
        context = self.context
        context.trace_id = trace_id
        context.message = MessageAccess(spool.path, size, spool)
        ok = Reply(250, "2.0.0", f"OK {trace_id}")
        try:
            result = None
            if self.chain.runs_at(Stage.DATA):
                result = await self.chain.run(Stage.DATA, context)
                if result.action in (Action.REJECT, Action.TEMPFAIL):
                    spool.discard()
                    return DataDecision(reply=_refusal(result))
            discard = (
                (result.verdict.reason or "discard")
                if result is not None and result.action is Action.DISCARD
                else self._transaction_discard or self._session_discard
            )
            if discard:
                spool.discard()
                self._log.info(
                    "discarded {trace_id} from {remote_ip} ({reason})",
                    trace_id=trace_id,
                    remote_ip=context.session.remote_ip,
                    reason=discard,
                )
                return DataDecision(reply=ok)
            added = authentication_results(context.session.hostname, context.results)
            fields = [
                *self._headers[Stage.CONNECT],
                *self._headers[Stage.HELO],
                *self._transaction_headers,
                *(result.headers if result is not None else ()),
            ]
            for name, value in fields:
                added += _field(name, value)
            final = await self._respool(spool, prelude(trace_id, added), size)
        except BaseException:
            spool.discard()
            raise
        if final is not spool:
            spool.discard()
        # From here on (DELIVERY) filters see the message as it is stored: the client's file
        # is gone, and our trace headers are part of what a recipient's Sieve script sees.
        context.message = MessageAccess(final.path, final.size, final)
        return DataDecision(spool=final)

    async def _respool(self, spool: SpoolFile, prelude: bytes, size: int) -> SpoolFile:
        """The file to store: ``spool`` itself when the message is still all in its buffer
        (rewritten there, no file created or read), else a new spool file."""
        hostname = self.context.session.hostname
        if spool.in_memory:
            spool.rewrite(stored_bytes(spool.buffered(), prelude, hostname))
            return spool
        directory = spool.path.rsplit("/", 1)[0]
        get_pool = getattr(self.clock, "getThreadPool", None)
        if size >= THREAD_COPY_BYTES and get_pool is not None:
            return await threads.deferToThreadPool(
                self.clock, get_pool(), respool, spool.path, directory, prelude, hostname
            )
        return respool(spool.path, directory, prelude, hostname)

    async def delivery(self, deliveries) -> DeliveryPlan:
        """The DELIVERY stage, once per ``Delivery`` (recipient mailbox); what to store.

        A recipient discarded at RCPT or DELIVERY, or rejected at DELIVERY, gets nothing. When
        one TEMPFAILs the whole message does (nothing stored, the client retries every
        recipient); when every recipient is rejected the message is, with the first refusal.
        """
        context = self.context
        kept = []
        refusals = []
        quarantined = context.quarantined
        for delivery in deliveries:
            if delivery.original_rcpt.lower() in self._discarded_rcpts:
                continue
            target = DeliveryTarget(
                mailbox_id=delivery.mailbox_id,
                recipient=delivery.original_rcpt,
                base_recipient=delivery.base_rcpt,
                plus_tag=delivery.plus_tag,
                route_id=delivery.route_id,
                folder=JUNK if quarantined else delivery.folder,
                flags=set(delivery.flags),
            )
            if self.chain.runs_at(Stage.DELIVERY):
                context.target = target
                try:
                    result = await self.chain.run(Stage.DELIVERY, context)
                finally:
                    context.target = None
                if result.action is Action.TEMPFAIL:
                    return DeliveryPlan(reply=_refusal(result))
                if result.action is Action.REJECT:
                    refusals.append(_refusal(result))
                    continue
                if result.action is Action.DISCARD:
                    continue
                if result.quarantine:
                    target.folder = JUNK
            kept.append((delivery, target))
        if not kept:
            if refusals:
                return DeliveryPlan(reply=refusals[0])
            return DeliveryPlan(reply=Reply(250, "2.0.0", f"OK {context.trace_id}"))
        out = []
        for delivery, target in kept:
            out.append(
                attrs.evolve(delivery, folder=target.folder, flags=tuple(sorted(target.flags)))
            )
            for extra in target.extra_folders:
                # A folder name, or a (folder, flags) pair for a copy with flags of its own.
                folder, flags = (extra, delivery.flags) if isinstance(extra, str) else extra
                if folder != target.folder:
                    out.append(
                        attrs.evolve(
                            delivery,
                            folder=folder,
                            flags=tuple(sorted(flags)),
                            apply_rules=False,
                        )
                    )
        spam = getattr(self.config, "spam", None)
        threshold = float(getattr(spam, "junk_threshold", 0) or 5.0)
        return DeliveryPlan(
            deliveries=tuple(out),
            auth_results=auth_results_json(
                context,
                junk_threshold=threshold,
                mailboxes=[(d.mailbox_id, t.folder, t.junk_threshold) for d, t in kept],
            ),
            spam_score=spam_score(context),
        )


def _field(name: str, value: str) -> bytes:
    """A header field a filter asked for (the verdict checked the name), folded at its spaces
    to RFC 5322's line lengths (``results.fold``: signatures over it, ARC's, still hold)."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    return fold(f"{name}: {value}".encode("utf-8", "replace")) + b"\r\n"


def stored_bytes(message: bytes, prelude: bytes, hostname: str) -> bytes:
    """``respool`` of a message held in memory: ``prelude``, then ``message`` without our
    forged ``Authentication-Results``."""
    head = message[:HEADER_LIMIT]
    end = _header_end(head, whole=len(message) < HEADER_LIMIT)
    if end is None:
        return prelude + message
    return prelude + _without_forged(message[:end], hostname.lower()) + message[end:]


def respool(path: str, directory: str, prelude: bytes, hostname: str) -> SpoolFile:
    """A new spool file in ``directory``: ``prelude``, then the message at ``path`` without
    ``Authentication-Results`` fields that claim our ``hostname`` as authserv-id (RFC 8601 5:
    a message must not arrive looking as if we had checked it). Blocking file I/O."""
    out = SpoolFile.create(directory)
    try:
        out.write(prelude)
        with open(path, "rb") as src:
            head = src.read(HEADER_LIMIT)
            end = _header_end(head, whole=len(head) < HEADER_LIMIT)
            if end is not None:
                out.write(_without_forged(head[:end], hostname.lower()))
                out.write(head[end:])
            else:
                out.write(head)
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
        out.close()
    except BaseException:
        out.discard()
        raise
    return out


def _header_end(head: bytes, whole: bool) -> int | None:
    """Where the header fields end in ``head`` (before the blank line), or None when the
    section goes on past what was read. ``whole``: ``head`` is the entire message."""
    if head.startswith(b"\r\n"):
        return 0
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        return end + 2
    if whole and head.endswith(b"\r\n"):
        return len(head)
    return None


def _without_forged(header: bytes, hostname: str) -> bytes:
    """``header`` (complete fields, each ending in CRLF) minus our forged A-R fields."""
    if b"authentication-results" not in header.lower():
        return header
    fields: list[bytes] = []
    for line in header.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    kept = []
    for field in fields:
        name, colon, value = field.partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            text = value.decode("utf-8", "replace").replace("\r\n", "")
            if authserv_id(text) == hostname:
                continue
        kept.append(field + b"\r\n")
    return b"".join(kept)
