"""The inbound SMTP server (MX): twisted.mail's ESMTP, subclassed and extended.

What we take from twisted.mail: the reply writer (``sendCode``), address parsing, the idle timer
and the command/DATA modes. What we replace, and why:

* Line framing. ``LineOnlyReceiver`` drops the connection (or the rest of a packet) on an
  over-long line and hands every line over at once, even while an earlier command is still being
  validated. Ours keeps lines in a buffer while a command is pending (pausing the transport once
  more than ``PENDING_INPUT_LIMIT`` bytes wait, so memory stays bounded), so pipelined commands
  (RFC 2920) are answered in order, each after its own validation; an over-long line is
  discarded as it streams and answered ``500 5.5.2``.
* The commands themselves: enhanced status codes (RFC 2034/3463), the ESMTP parameters SIZE and
  BODY, no AUTH on the MX, recipients resolved through the store.
* DATA: twisted hands lines to ``IMessage`` objects and answers 550 to any failure. We spool to a
  file and answer 250 only after the store has committed the message; any failure is 451 4.3.0.
  The spool file's last buffered bytes are written by the store's thread (``SpoolFile.close``
  passed as ``finish``): code that reads ``spool.path`` before that must close the spool first.
* STARTTLS (RFC 3207), offered when the factory has a ``TLSService``: input the client pipelined
  behind STARTTLS is discarded (the command-injection defence), and the session forgets its EHLO
  and transaction once TLS starts.

The filter chain (``haitatsu.filtering``) is called once per stage through ``self.filters``: at
the greeting, HELO/EHLO, MAIL, RCPT (after the recipient resolved), and at the final dot (DATA,
then DELIVERY per recipient mailbox). A hook answers None when no filter runs at its stage, and
the session goes on synchronously as if there were no chain.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence

import ulid
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail.smtp import COMMAND, DATA, ESMTP

from haitatsu.filtering.null import NULL_FILTERS
from haitatsu.interfaces import OverQuota
from haitatsu.limits import PeerCounter, TokenBuckets
from haitatsu.metrics import METRICS
from haitatsu.smtp.envelope import Refused, Reply, parse_mail, parse_rcpt
from haitatsu.smtp.headers import trace_headers
from haitatsu.smtp.spool import SpoolDirectory, SpoolFile
from haitatsu.storage.records import Delivery
from haitatsu.storage.store.events import Received
from haitatsu.tls import is_secure

#: Extra EHLO keywords for a connection: ``{"X-RESTMAIL": ["v1", "https://..."]}``; a value of
#: None (or an empty list) advertises the bare keyword.
ExtensionsHook = Callable[[object], Mapping[str, Sequence[str] | None]]

DEFAULT_MAX_LINE_LENGTH = 4000

#: While a command is pending, input waits in the buffer; beyond this many bytes the transport
#: is paused until the command has replied. (Pausing at every pending command costs two epoll
#: changes per RCPT and per message, and a client waiting for its reply sends nothing anyway.)
PENDING_INPUT_LIMIT = 64 * 1024

TEMPFAIL = Reply(451, "4.3.0", "temporary local problem")
SYNTAX_ERROR = Reply(500, "5.5.2", "syntax error")
LINE_TOO_LONG = Reply(500, "5.5.2", "line too long")
UNKNOWN_COMMAND = Reply(500, "5.5.1", "command not recognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "command not implemented")
HELO_FIRST = Reply(503, "5.5.1", "send HELO/EHLO first")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "message size exceeds fixed maximum message size")
MESSAGE_LINE_TOO_LONG = Reply(500, "5.5.2", "message line too long")
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "unknown recipient")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too many recipients")
OVER_QUOTA = Reply(452, "4.2.2", "mailbox over quota")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "no valid recipients")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
INVALID_BOUNCE_RECIPIENT = Reply(550, "5.1.1", "invalid bounce recipient")
#: API.md 5.2 per-IP limits: ``limits.max_connections_per_ip`` at connect (then the connection
#: closes) and the ``limits.inbound_messages_per_minute_per_ip`` token bucket at MAIL FROM.
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "too many connections from your address")
RATE_LIMITED = Reply(450, "4.7.1", "rate limit exceeded, try again later")

#: Commands this server implements; everything else is 500 5.5.1 or, if listed below, 502 5.5.1.
COMMANDS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "HELP", "VRFY"}
)
#: Commands we know of and deliberately do not offer on the MX.
UNIMPLEMENTED = frozenset(
    {"EXPN", "AUTH", "STARTTLS", "BDAT", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML"}
)

_VERB = re.compile(rb"[A-Za-z]{1,16}\Z")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HELO_NAME = re.compile(rb"[\x21-\x7e]{1,255}\Z")


class InboundESMTP(ESMTP):
    """One MX session. It keeps the ``Config`` it started with, so a reload applies to the next
    connection and never changes the rules in the middle of a transaction."""

    _log = Logger()

    #: ``haitatsu.limits.PeerCounter`` of this listener's connections and ``TokenBuckets`` of
    #: messages per address; the factory sets them (None: that limit is not applied).
    connections = None
    message_rate = None

    def __init__(
        self,
        config,
        store,
        clock,
        spool_dir: str,
        extra_extensions: ExtensionsHook | None = None,
        tls=None,
        bounces=None,
        filters=None,
        spool: SpoolDirectory | None = None,
    ):
        ESMTP.__init__(self)
        #: The filter chain's hooks for this connection (``haitatsu.filtering.session``).
        self.filters = filters if filters is not None else NULL_FILTERS
        #: A CONNECT filter rejected the connection: every command but QUIT gets 503.
        self._refused = False
        #: ``haitatsu.queue.BounceHandler``: VERP bounce addresses (API.md 5.2 step 1).
        self.bounces = bounces
        self.config = config
        #: The ``TLSService`` STARTTLS uses; None: TLS is not configured, STARTTLS not offered.
        self.tls = tls
        self.store = store
        self.clock = clock
        self.spool_dir = spool_dir
        #: Where spool files come from (the factory's, which makes them ahead in a thread).
        self.spool = spool if spool is not None else SpoolDirectory(spool_dir)
        self.extra_extensions = extra_extensions
        try:
            self.host = config.server.public_hostname.encode("idna")
        except UnicodeError:
            self.host = config.server.public_hostname.encode("ascii", "replace")
        self.timeout = config.smtp.idle_timeout_seconds or None
        self.max_line_length = config.smtp.max_line_length or DEFAULT_MAX_LINE_LENGTH
        self.max_message_size = config.max_message_size
        self.max_recipients = config.max_inbound_recipients
        self.remote_ip = ""
        #: The client's reverse-DNS name, once something looks it up (a later issue).
        self.remote_name: str | None = None
        self.helo_name: str | None = None
        self._buffer = bytearray()
        self._discarding = False
        self._busy = False
        self._paused = False
        self._draining = False
        self._closed = False
        self._spool: SpoolFile | None = None
        self._holds_slot = False
        self._reset_transaction()

    # -- connection -----------------------------------------------------------------------

    def callLater(self, period, func):
        """The idle timer runs on the injected clock (TimeoutMixin's hook)."""
        return self.clock.callLater(period, func)

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.remote_ip = str(getattr(peer, "host", peer))
        self._log.debug("connection from {remote_ip}", remote_ip=self.remote_ip)
        METRICS.smtp_connections.inc()
        if not self._take_connection_slot():
            return
        pending = self.filters.connect(self)
        if pending is None:
            ESMTP.connectionMade(self)
            return
        # ESMTP.connectionMade without its greeting, which waits for the CONNECT filters.
        self._helo = (None, self.remote_ip)
        self.canStartTLS = False
        self.setTimeout(self.timeout)
        self._after_filters(pending, lambda: self.sendCode(220, self.greeting()))

    def _take_connection_slot(self) -> bool:
        """Count the connection against its address, or answer 421 and close (API.md 5.2)."""
        if self.connections is None:
            return True
        limit = self.config.limits.max_connections_per_ip
        if self.connections.acquire(self.remote_ip, limit):
            self._holds_slot = True
            return True
        self._log.info(
            "refused connection from {remote_ip}: {limit} connections already",
            remote_ip=self.remote_ip,
            limit=limit,
        )
        self._closed = True
        self.reply(TOO_MANY_CONNECTIONS)
        self.transport.loseConnection()
        return False

    def greeting(self):
        return f"{self.config.server.public_hostname} ESMTP Haitatsu".encode("ascii", "replace")

    def timeoutConnection(self):
        if self._busy:
            # The client is waiting for us, not the other way round.
            self.resetTimeout()
            return
        self._log.info("idle timeout for {remote_ip}", remote_ip=self.remote_ip)
        self.reply(Reply(421, "4.4.2", f"{self.config.server.public_hostname} idle timeout"))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self._holds_slot:
            self._holds_slot = False
            self.connections.release(self.remote_ip)
        self._closed = True
        self.filters.release()
        if self._spool is not None:
            self._spool.discard()
            self._spool = None
        self.mode = COMMAND
        ESMTP.connectionLost(self, reason)

    def reply(self, reply: Reply) -> None:
        self.sendCode(reply.code, reply.message)

    @property
    def secure(self) -> bool:
        """Whether the session is encrypted (after STARTTLS, or on an implicit-TLS listener)."""
        return is_secure(self.transport)

    # -- framing --------------------------------------------------------------------------

    def dataReceived(self, data):
        """Frame lines at CRLF (bare CR and LF stay inside a line, so DATA keeps the client's
        bytes). Lines wait in the buffer while a command is pending."""
        self.resetTimeout()
        self._buffer += data
        if self._busy:
            if len(self._buffer) > PENDING_INPUT_LIMIT and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        self._drain()

    def _drain(self):
        if self._draining:
            return
        self._draining = True
        try:
            while not self._busy and not self._closed and not self.transport.disconnecting:
                if self.mode is DATA and not self._discarding:
                    if self._data_chunk():
                        continue
                    self._check_partial_line()
                    return
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    self._check_partial_line()
                    return
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                if self._discarding:
                    self._discarding = False
                    self._count_discarded(end + 2)
                    self.line_too_long()
                elif end > self.max_line_length:
                    self._count_discarded(end + 2)
                    self.line_too_long()
                else:
                    self.lineReceived(line)
        finally:
            self._draining = False

    def _check_partial_line(self):
        """Start (or continue) discarding a line that is already longer than the limit, so memory
        stays bounded; a trailing CR is kept in case its LF arrives next."""
        pending = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
        if self._discarding or pending > self.max_line_length:
            self._discarding = True
            keep = b"\r" if self._buffer.endswith(b"\r") else b""
            self._count_discarded(len(self._buffer) - len(keep))
            self._buffer = bytearray(keep)

    def _count_discarded(self, octets: int):
        """Bytes of an over-long DATA line still count towards the size limit, so a huge
        single-line message is answered 552 like any other oversize message."""
        if self.mode is DATA:
            self._count_data(octets)

    def lineReceived(self, line):
        if self.mode is DATA:
            self._data_line(line)
        else:
            self._command(line)

    def lineLengthExceeded(self, line):
        self.line_too_long()

    def line_too_long(self):
        if self.mode is DATA:
            self._fail_data(MESSAGE_LINE_TOO_LONG)
        else:
            self.reply(LINE_TOO_LONG)

    def _run_pending(self, work) -> Deferred:
        """Run an ``async`` command step; no further line is read until it has replied."""
        self._busy = True
        d = Deferred.fromCoroutine(work)
        d.addErrback(self._internal_error)
        d.addBoth(self._resume)
        return d

    def _after_filters(self, pending, proceed) -> None:
        """``proceed()`` once a stage's filters allow it; a refusal is answered instead (and
        may close the connection, or refuse it for good at the greeting)."""

        async def wait():
            outcome = await pending
            if outcome.reply is None:
                proceed()
                return
            self.reply(outcome.reply)
            if outcome.refuse:
                self._refused = True
            if outcome.disconnect:
                self.transport.loseConnection()

        self._run_pending(wait())

    def _internal_error(self, failure):
        self._log.failure("SMTP command failed for {remote_ip}", failure, remote_ip=self.remote_ip)
        self.reply(TEMPFAIL)

    def _resume(self, result):
        self._busy = False
        if not self._closed and not self.transport.disconnecting:
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self.resetTimeout()
            self._drain()
        return result

    # -- commands -------------------------------------------------------------------------

    def _command(self, line: bytes):
        if _CONTROL.search(line):
            self.reply(Reply(500, "5.5.2", "syntax error: control character in command"))
            return
        parts = line.strip(b" \t").split(None, 1)
        if not parts or not _VERB.match(parts[0]):
            self.reply(SYNTAX_ERROR)
            return
        rest = parts[1].strip(b" \t") if len(parts) == 2 else b""
        if self._refused and parts[0].upper() != b"QUIT":
            # RFC 5321 3.1: after a 554 greeting, only QUIT.
            self.reply(Reply(503, "5.5.1", "no service here; QUIT"))
            return
        method = self.lookupMethod(parts[0])
        if method is None:
            verb = parts[0].decode("ascii").upper()
            self.reply(NOT_IMPLEMENTED if verb in UNIMPLEMENTED else UNKNOWN_COMMAND)
            return
        method(rest)

    def lookupMethod(self, command):
        """Only the commands we implement, plus ``ext_*`` handlers for advertised extensions
        (a STARTTLS subclass adds both); twisted's AUTH is never reachable on the MX."""
        verb = command.decode("ascii").upper() if isinstance(command, bytes) else command.upper()
        if verb in COMMANDS:
            return getattr(self, "do_" + verb)
        if verb == "STARTTLS" and self.tls is not None:
            # Reachable after TLS too (it is no longer advertised), to answer 503, not 502.
            return self.ext_STARTTLS
        if verb.encode("ascii") in self.extensions():
            return getattr(self, "ext_" + verb, None)
        return None

    def extensions(self):
        """EHLO keywords, in the order they are advertised."""
        ext: dict[bytes, list[bytes] | None] = {
            b"PIPELINING": None,
            b"SIZE": [b"%d" % self.max_message_size],
            b"8BITMIME": None,
            b"ENHANCEDSTATUSCODES": None,
        }
        if self.tls is not None and self.tls.available and not self.secure:
            ext[b"STARTTLS"] = None
        if self.extra_extensions is not None:
            for keyword, args in self.extra_extensions(self.config).items():
                ext[keyword.upper().encode("ascii")] = (
                    [a.encode("ascii") for a in args] if args else None
                )
        return ext

    def listExtensions(self):
        lines = []
        for keyword, args in self.extensions().items():
            lines.append(b" ".join([keyword, *args]) if args else keyword)
        return b"\n".join(lines)

    def _helo_name(self, rest: bytes, verb: str) -> str | None:
        name = rest.split()[0] if rest.split() else b""
        if not _HELO_NAME.match(name):
            self.reply(Reply(501, "5.5.4", f"{verb} requires a domain name or address literal"))
            return None
        return name.decode("ascii")

    def _hello_line(self) -> bytes:
        return f"{self.host.decode('ascii')} Hello {self.helo_name} [{self.remote_ip}]".encode(
            "ascii", "replace"
        )

    def do_HELO(self, rest):
        name = self._helo_name(rest, "HELO")
        if name is None:
            return

        def hello():
            self.helo_name = name
            self._reset_transaction()
            self.sendCode(250, self._hello_line())

        self._filtered(self.filters.helo(name), hello)

    def do_EHLO(self, rest):
        name = self._helo_name(rest, "EHLO")
        if name is None:
            return

        def hello():
            self.helo_name = name
            self._reset_transaction()
            self.sendCode(250, self._hello_line() + b"\n" + self.listExtensions())

        self._filtered(self.filters.helo(name), hello)

    def _filtered(self, pending, proceed) -> None:
        """``proceed()`` now when no filter runs at this stage, else after the filters."""
        if pending is None:
            proceed()
        else:
            self._after_filters(pending, proceed)

    def do_NOOP(self, rest):
        self.reply(Reply(250, "2.0.0", "OK"))

    def do_RSET(self, rest):
        if rest:
            self.reply(Reply(501, "5.5.4", "RSET takes no parameters"))
            return
        self._reset_transaction()
        self.reply(Reply(250, "2.0.0", "OK"))

    def do_QUIT(self, rest):
        self.reply(Reply(221, "2.0.0", f"{self.config.server.public_hostname} closing connection"))
        self.transport.loseConnection()

    def do_HELP(self, rest):
        self.reply(
            Reply(214, "2.0.0", "commands: " + " ".join(sorted(COMMANDS)) + "; see RFC 5321")
        )

    def do_VRFY(self, rest):
        if not rest:
            self.reply(Reply(501, "5.5.4", "syntax: VRFY <address>"))
            return
        self.reply(
            Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
        )

    def do_UNKNOWN(self, rest):
        self.reply(UNKNOWN_COMMAND)

    def ext_STARTTLS(self, rest):
        """RFC 3207. Whatever the client sent after the command before the handshake is
        discarded unread: a man in the middle could otherwise inject plaintext commands that
        would run inside the encrypted session (CVE-2011-0411 and its many relatives)."""
        if rest:
            self.reply(Reply(501, "5.5.4", "STARTTLS takes no parameters"))
            return
        if self.secure:
            self.reply(TLS_ACTIVE)
            return
        if self.tls is None or not self.tls.available:
            self.reply(TLS_UNAVAILABLE)
            return
        if self._buffer or self._discarding:
            self._log.warn(
                "discarding {octets} octets pipelined after STARTTLS from {remote_ip}",
                octets=len(self._buffer),
                remote_ip=self.remote_ip,
            )
            self._buffer.clear()
            self._discarding = False
        self.reply(Reply(220, "2.0.0", "ready to start TLS"))
        try:
            self.transport.startTLS(self.tls)
        except Exception:
            self._log.failure("STARTTLS failed for {remote_ip}", remote_ip=self.remote_ip)
            self.transport.loseConnection()
            return
        # RFC 3207 4.2: the client starts over with EHLO; nothing said before TLS counts.
        self.helo_name = None
        self._reset_transaction()

    # -- the transaction ------------------------------------------------------------------

    def _reset_transaction(self):
        self.sender: str | None = None
        self.recipients: list = []
        self._rcpt_attempts = 0
        self._data_error: Reply | None = None
        self._data_size = 0
        self._trace_id = ""

    def do_MAIL(self, rest):
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.sender is not None:
            self.reply(Reply(503, "5.5.1", "sender already specified"))
            return
        try:
            sender, params = parse_mail(rest, self.host)
            self._check_mail_params(params)
        except Refused as e:
            self.reply(e.reply)
            return
        if self.message_rate is not None and not self.message_rate.take(
            self.remote_ip, self.config.limits.inbound_messages_per_minute_per_ip
        ):
            self._log.info("rate limit reached for {remote_ip}", remote_ip=self.remote_ip)
            self.reply(RATE_LIMITED)
            return

        def accepted():
            self.sender = sender
            self.recipients = []
            self._rcpt_attempts = 0
            self.reply(Reply(250, "2.1.0", "sender OK"))

        self._filtered(self.filters.mail(sender, params), accepted)

    def _check_mail_params(self, params):
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    raise Refused(Reply(501, "5.5.4", "SIZE requires a number of octets"))
                if int(value) > self.max_message_size:
                    raise Refused(MESSAGE_TOO_BIG)
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise Refused(Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME"))
            else:
                raise Refused(Reply(555, "5.5.4", f"parameter {key} not supported"))

    def do_RCPT(self, rest):
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.sender is None:
            self.reply(Reply(503, "5.5.1", "need MAIL before RCPT"))
            return
        try:
            address, params = parse_rcpt(rest, self.host)
        except Refused as e:
            self.reply(e.reply)
            return
        if params:
            self.reply(Reply(555, "5.5.4", f"parameter {next(iter(params))} not supported"))
            return
        self._rcpt_attempts += 1
        if len(self.recipients) >= self.max_recipients:
            self.reply(TOO_MANY_RECIPIENTS)
            return
        self._run_pending(self._resolve(address))

    async def _resolve(self, address: str):
        try:
            verp = await self.bounces.check(address) if self.bounces is not None else None
            if verp is not None:
                if not verp.valid:
                    self.reply(INVALID_BOUNCE_RECIPIENT)
                else:
                    self.recipients.append(verp)
                    self.reply(Reply(250, "2.1.5", "bounce recipient OK"))
                return
            recipient = await self.store.resolve_recipient(address)
        except Exception:
            self._log.failure(
                "recipient lookup failed for {rcpt} from {remote_ip}",
                rcpt=address,
                remote_ip=self.remote_ip,
            )
            self.reply(TEMPFAIL)
            return
        if recipient is None:
            self._log.info(
                "unknown recipient {rcpt} from {remote_ip}", rcpt=address, remote_ip=self.remote_ip
            )
            self.reply(UNKNOWN_RECIPIENT)
            return
        if recipient.over_quota:
            # API.md 5.2 step 8: full mailboxes are dropped (resolve_recipient leaves them out
            # of mailbox_ids); this is the case where none is left.
            self._log.info(
                "recipient {rcpt} from {remote_ip} refused: {quota} quota full",
                rcpt=address,
                remote_ip=self.remote_ip,
                quota=recipient.over_quota,
                mailbox_id=recipient.mailbox_id,
            )
            self.reply(OVER_QUOTA)
            return
        pending = self.filters.rcpt(address, recipient)
        if pending is not None:
            outcome = await pending
            if outcome.reply is not None:
                self.reply(outcome.reply)
                return
        self.recipients.append(recipient)
        self.reply(Reply(250, "2.1.5", "recipient OK"))

    def do_DATA(self, rest):
        if rest:
            self.reply(Reply(501, "5.5.4", "DATA takes no parameters"))
            return
        if self.helo_name is None:
            self.reply(HELO_FIRST)
            return
        if self.sender is None:
            self.reply(Reply(503, "5.5.1", "need MAIL before DATA"))
            return
        if not self.recipients:
            self.reply(
                NO_VALID_RECIPIENTS
                if self._rcpt_attempts
                else Reply(503, "5.5.1", "need RCPT before DATA")
            )
            return
        trace_id = str(ulid.ULID())
        spool = None
        try:
            spool = self.spool.take(trace_id)
            if not self.filters.active:
                # With filters, the headers are prepended once they ran (filters.data).
                spool.write(self._spool_prelude(trace_id))
        except OSError:
            self._log.failure("cannot create a spool file in {spool_dir}", spool_dir=self.spool_dir)
            if spool is not None:
                spool.discard()
            self.reply(TEMPFAIL)
            return
        self._spool = spool
        self._trace_id = trace_id
        self._data_error = None
        self._data_size = 0
        self.mode = DATA
        self.sendCode(354, b"end data with <CR><LF>.<CR><LF>")

    def _spool_prelude(self, trace_id: str, added: bytes = b"") -> bytes:
        """What the stored message starts with, before the client's bytes: the MX's trace
        headers, with ``added`` (Authentication-Results, filters' fields) after Received
        (submission, which finishes the message itself, writes nothing here)."""
        return trace_headers(
            helo=self.helo_name,
            remote_ip=self.remote_ip,
            remote_name=self.remote_name,
            hostname=self.config.server.public_hostname,
            instance=self.config.server.instance_name,
            trace_id=trace_id,
            when=self.clock.seconds(),
            tls=self.secure,
            added=added,
        )

    def _data_chunk(self) -> bool:
        """Take every complete line of message data in the buffer at once (the buffer always
        starts at a line start): up to the end-of-data line if it is there, else up to the last
        CRLF; a partial last line waits in the buffer for its CRLF, so a dot or a terminator
        split across packets is seen whole next time. Dot-unstuffing, the size count and the
        line-length check run on the whole chunk in C (bytes methods), and the spool gets one
        write: per-line Python was most of the MX's CPU time. False: no complete line yet."""
        buffer = self._buffer
        if buffer.startswith(b".\r\n"):
            end, consumed = 0, 3
        else:
            end = buffer.find(b"\r\n.\r\n")
            if end >= 0:
                end += 2
                consumed = end + 3
            else:
                end = buffer.rfind(b"\r\n")
                if end < 0:
                    return False
                end += 2
                consumed = end
        chunk = bytes(buffer[:end])
        del buffer[:consumed]
        if chunk:
            self._data_lines(chunk)
        if consumed > end:
            self._end_data()
        return True

    def _data_lines(self, chunk: bytes):
        """Complete lines of message data (``chunk`` ends with CRLF and holds no end-of-data
        line): RFC 5321 4.5.2 transparency removes the first character of every line that
        starts with a dot."""
        too_long = len(chunk) - 2 > self.max_line_length and (
            max(map(len, chunk[:-2].split(b"\r\n"))) > self.max_line_length
        )
        if chunk[:1] == b".":
            chunk = chunk[1:]
        chunk = chunk.replace(b"\r\n.", b"\r\n")
        self._count_data(len(chunk))
        if too_long:
            self.line_too_long()
        if self._data_error is not None:
            return
        try:
            self._spool.write(chunk)
        except OSError:
            self._log.failure("spool write failed", trace_id=self._trace_id)
            self._fail_data(TEMPFAIL)

    def _data_line(self, line: bytes):
        if line == b".":
            self._end_data()
            return
        if line[:1] == b".":
            line = line[1:]
        self._count_data(len(line) + 2)
        if self._data_error is not None:
            return
        try:
            self._spool.write(line)
            self._spool.write(b"\r\n")
        except OSError:
            self._log.failure("spool write failed", trace_id=self._trace_id)
            self._fail_data(TEMPFAIL)

    def _count_data(self, octets: int):
        self._data_size += octets
        if self._data_size > self.max_message_size and self._data_error is not MESSAGE_TOO_BIG:
            # Size wins over any earlier problem: it is what a SIZE-aware client acts on.
            self._data_error = None
            self._fail_data(MESSAGE_TOO_BIG)

    def _fail_data(self, reply: Reply):
        """Stop spooling but keep reading to the final dot; ``reply`` is the answer to it."""
        if self._data_error is None:
            self._data_error = reply
        if self._spool is not None:
            self._spool.discard()

    def _end_data(self):
        self.mode = COMMAND
        spool, self._spool = self._spool, None
        error, size, trace_id = self._data_error, self._data_size, self._trace_id
        recipients, sender = self.recipients, self.sender
        self._reset_transaction()
        if error is not None:
            spool.discard()
            self._log.info(
                "rejected message {trace_id} from {remote_ip}: {code} {reason} ({size} bytes read)",
                trace_id=trace_id,
                remote_ip=self.remote_ip,
                code=error.code,
                reason=error.text,
                size=size,
            )
            self.reply(error)
            return
        # The spool is still open: its last bytes are written by whoever reads it next, in a
        # thread (the store's ``finish``), not here on the reactor.
        self._run_pending(self._deliver(spool, recipients, trace_id, size, sender or ""))

    async def _deliver(
        self, spool: SpoolFile, recipients, trace_id: str, size: int, sender: str = ""
    ):
        if self.filters.active:
            try:
                # The DATA-stage filters read the message: from the spool's buffer when it is
                # all there (``MessageAccess`` writes the file out if one asks for its path).
                if not spool.in_memory:
                    spool.close()
            except OSError:
                self._log.failure("spool flush failed", trace_id=trace_id)
                spool.discard()
                self.reply(TEMPFAIL)
                return
            decision = await self.filters.data(spool, trace_id, size, self._spool_prelude)
            if decision.reply is not None:
                self.reply(decision.reply)
                return
            spool = decision.spool
        verps = [r for r in recipients if not hasattr(r, "mailbox_id")]
        if verps:
            try:
                spool.close()
                await self.bounces.record(spool.path, verps, sender, self.remote_ip, trace_id)
            except Exception:
                spool.discard()
                self._log.failure(
                    "tempfail {trace_id}: recording a bounce failed", trace_id=trace_id
                )
                self.reply(TEMPFAIL)
                return
            recipients = [r for r in recipients if hasattr(r, "mailbox_id")]
            if not recipients:
                spool.discard()
                self.reply(Reply(250, "2.0.0", f"OK {trace_id}"))
                return
        deliveries = []
        seen = set()
        for r in recipients:
            # A route may name several mailboxes; each mailbox gets the message once, with the
            # first recipient that reached it (API.md 5.2, DATA).
            for mailbox_id in r.mailbox_ids:
                if mailbox_id in seen:
                    continue
                seen.add(mailbox_id)
                deliveries.append(
                    Delivery(
                        mailbox_id=mailbox_id,
                        folder="INBOX",
                        original_rcpt=r.original_rcpt,
                        base_rcpt=r.base_rcpt,
                        plus_tag=r.plus_tag,
                        route_id=r.route_id,
                        apply_rules=True,
                    )
                )
        auth_results = {"remote_ip": self.remote_ip, "helo": self.helo_name, "tls": self.secure}
        spam_score = 0.0
        if self.filters.active:
            plan = await self.filters.delivery(deliveries)
            if plan.reply is not None:
                spool.discard()
                refused = plan.reply.code >= 500 and verps
                # A bounce recorded above was accepted: only a temporary failure undoes that.
                self.reply(Reply(250, "2.0.0", f"OK {trace_id}") if refused else plan.reply)
                return
            deliveries, auth_results, spam_score = (
                plan.deliveries,
                plan.auth_results,
                plan.spam_score,
            )
            seen = {d.mailbox_id for d in deliveries}
        fields = dict(
            trace_id=trace_id,
            remote_ip=self.remote_ip,
            mailbox_ids=sorted(seen),
            size=size,
        )
        try:
            placed = await self.store.deliver(
                spool.path,
                deliveries,
                trace_id=trace_id,
                auth_results=auth_results,
                spam_score=spam_score,
                received=[
                    Received(r.original_rcpt, r.base_rcpt, r.plus_tag, r.mailbox_ids)
                    for r in recipients
                ],
                disposable=True,
                finish=spool.close,
            )
        except OverQuota:
            METRICS.mailbox_over_quota.inc()
            self._log.info("tempfail {trace_id}: every mailbox over quota", **fields)
            self.reply(OVER_QUOTA)
            return
        except Exception:
            self._log.failure("tempfail {trace_id}: storing the message failed", **fields)
            self.reply(TEMPFAIL)
            return
        finally:
            spool.discard()
        placed_ids = sorted({p.mailbox_id for p in placed})
        if placed_ids != fields["mailbox_ids"]:
            self._log.warn(
                "message {trace_id} skipped over-quota mailboxes {skipped}",
                skipped=sorted(seen - set(placed_ids)),
                **fields,
            )
        self._log.info(
            "accepted {trace_id} from {remote_ip} for {mailbox_ids} ({size} bytes)",
            **{**fields, "mailbox_ids": placed_ids},
        )
        METRICS.messages_received.inc()
        self.reply(Reply(250, "2.0.0", f"OK {trace_id}"))


class InboundSMTPFactory(ServerFactory):
    """Builds one ``InboundESMTP`` per connection with the configuration live at that moment.

    ``get_config`` returns the current ``Config`` (hot reload swaps what it returns);
    ``store`` provides ``IMailStore``; ``reactor`` is the clock for idle timeouts; finished
    messages are spooled under ``spool_dir`` (a ``SpoolDirectory``: files made ahead and removed
    in the reactor's threads when it has them). ``extra_extensions(config)`` adds EHLO keywords
    (``X-RESTMAIL``) without subclassing. ``tls`` (a ``TLSService``) turns on STARTTLS.
    ``bounces`` (a ``haitatsu.queue.BounceHandler``) takes VERP bounce addresses; without
    it they are ordinary recipients. ``connections`` (a ``haitatsu.limits.PeerCounter``)
    counts connections per address against ``limits.max_connections_per_ip``; without it the
    factory counts its own.
    """

    protocol = InboundESMTP

    def __init__(
        self,
        get_config: Callable[[], object],
        store,
        reactor,
        spool_dir: str,
        extra_extensions: ExtensionsHook | None = None,
        tls=None,
        bounces=None,
        chain=None,
        connections: PeerCounter | None = None,
    ):
        self.get_config = get_config
        #: Returns the live ``FilterChain`` (the hub's ``Filtering.get_chain``); None: no chain.
        self.get_chain = chain
        self.tls = tls
        self.bounces = bounces
        self.store = store
        self.reactor = reactor
        # Absolute, so the store's threads and a daemonised twistd (which changes directory)
        # find the files.
        self.spool_dir = os.path.abspath(spool_dir)
        self.spool = SpoolDirectory(self.spool_dir, reactor)
        self.extra_extensions = extra_extensions
        #: Per-IP limits (API.md 5.2), per node: concurrent connections to this listener and
        #: the MAIL FROM token bucket. The hub passes one counter to listeners that share it.
        self.connections = connections if connections is not None else PeerCounter()
        self.message_rate = TokenBuckets(reactor)

    def startFactory(self):
        self.spool.start()

    def stopFactory(self):
        self.spool.stop()

    def protocol_kwargs(self) -> dict:
        """What a new session is built with; subclasses add their own."""
        config = self.get_config()
        chain = self.get_chain() if self.get_chain is not None else None
        return dict(
            filters=chain.session(config, self.reactor) if chain is not None else None,
            config=config,
            store=self.store,
            clock=self.reactor,
            spool_dir=self.spool_dir,
            extra_extensions=self.extra_extensions,
            tls=self.tls,
            bounces=self.bounces,
            spool=self.spool,
        )

    def buildProtocol(self, addr):
        proto = self.protocol(**self.protocol_kwargs())
        proto.factory = self
        proto.connections = self.connections
        proto.message_rate = self.message_rate
        return proto
