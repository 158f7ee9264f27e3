"""The POP3 server: twisted.mail's ``POP3`` with our framing, dispatch and message streaming.

What we keep from ``twisted.mail.pop3.POP3``: the response helpers, the idle timer
(``TimeoutMixin``), ``pop3.IMailbox`` as the avatar interface and a twisted.cred portal for
login. What we replace, and why:

- **Framing and dispatch.** twisted drops the connection on an over-long line, lets a pipelined
  command overtake a login still being checked (only "long operations" block the queue), and
  answers a wrong argument count with a ``TypeError`` it then fails to format. We read one line
  at a time and run each command to its end before the next (RFC 2449 PIPELINING), answer
  over-long or malformed lines with ``-ERR`` and keep the session.
- **RETR and TOP.** twisted rewrites every ``\\n`` as ``\\r\\n`` (doubling the CR of a message
  stored with CRLF) and dot-stuffs per chunk, missing a ``.`` that starts a chunk. We stream
  the stored bytes through a push producer that keeps line state across chunks: CRLF stays,
  a bare LF becomes CRLF, a line starting with ``.`` gets another.
- **STLS** (RFC 2595), offered when the factory has a ``TLSService``. Until TLS is on, such a
  server advertises neither USER nor SASL and answers USER, PASS and AUTH
  ``-ERR [AUTH] ...`` (RFC 3206: a login refused by policy), so no password crosses in the clear.
  Input pipelined behind STLS is discarded.
- **Responses.** RFC 2449/3206 response codes: ``-ERR [AUTH]`` for a failed login (also while
  the client's address is locked out), ``-ERR [SYS/TEMP]`` when storage is unavailable; no APOP
  (there is nothing to compute it from: passwords are stored as argon2id hashes).
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred import credentials
from twisted.cred.error import LoginFailed
from twisted.cred.portal import Portal
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.mail import pop3

from haitatsu.auth.checker import AppPasswordChecker
from haitatsu.auth.throttle import LoginThrottle, ThrottledPortal
from haitatsu.interfaces import StorageUnavailable
from haitatsu.limits import PeerCounter
from haitatsu.pop3.maildrop import NoSuchMessage, POP3Realm
from haitatsu.streaming import ChunkSender, StreamBroken
from haitatsu.tls import is_secure

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

_AUTHZ = (AUTHORIZATION,)
_TRANS = (TRANSACTION,)
_BOTH = (AUTHORIZATION, TRANSACTION)

#: command -> (handler name, states it is valid in). APOP is deliberately absent.
COMMANDS = {
    b"CAPA": ("capa", _BOTH),
    b"QUIT": ("quit", _BOTH),
    b"USER": ("user", _AUTHZ),
    b"PASS": ("pass", _AUTHZ),
    b"AUTH": ("auth", _AUTHZ),
    b"STLS": ("stls", _AUTHZ),
    b"STAT": ("stat", _TRANS),
    b"LIST": ("list", _TRANS),
    b"UIDL": ("uidl", _TRANS),
    b"RETR": ("retr", _TRANS),
    b"TOP": ("top", _TRANS),
    b"DELE": ("dele", _TRANS),
    b"RSET": ("rset", _TRANS),
    b"NOOP": ("noop", _TRANS),
}

SASL_MECHANISMS = (b"PLAIN",)

AUTH_FAILED = b"[AUTH] Invalid credentials"
#: RFC 3206: a temporary condition of the server, not of the credentials.
TOO_MANY_SESSIONS = b"[SYS/TEMP] Too many connections from your address"
SYS_TEMP = b"[SYS/TEMP] Storage is temporarily unavailable, try again"
PLAINTEXT_REFUSED = b"[AUTH] Plaintext authentication is disabled before STLS"


class POP3SyntaxError(Exception):
    """A malformed command: answered ``-ERR <reason>``, the session goes on."""


class DotStuffer:
    """Turns message bytes into the POP3 multi-line form, chunk by chunk (RFC 1939 3).

    Line state carries across chunks, so a ``.`` at the start of a chunk that starts a line is
    stuffed, and a CR at the end of one chunk pairs with the LF that starts the next. Lines
    already ending in CRLF are sent as they are; a bare LF becomes CRLF (the protocol has no
    other line end); nothing else changes, so a client that un-stuffs gets the stored bytes.
    """

    def __init__(self):
        self.line_start = True
        self._cr = False

    def feed(self, chunk: bytes) -> bytes:
        out = []
        parts = chunk.split(b"\n")
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if self.line_start and part[:1] == b".":
                out.append(b".")
            if part:
                out.append(part)
            if i == last:
                if part:
                    self.line_start = False
                    self._cr = part.endswith(b"\r")
                break
            ends_with_cr = part.endswith(b"\r") if part else (i == 0 and self._cr)
            out.append(b"\n" if ends_with_cr else b"\r\n")
            self.line_start = True
            self._cr = False
        return b"".join(out)

    def end(self) -> bytes:
        """The terminator: on a line of its own even if the message does not end with one."""
        if self.line_start:
            return b".\r\n"
        return (b"\n" if self._cr else b"\r\n") + b".\r\n"


class TopFilter:
    """Passes the header, the blank line after it, and ``lines`` lines of the body (TOP)."""

    def __init__(self, lines: int):
        self._remaining = lines
        self._in_header = True
        self._line = b""  # the current header line so far, up to 2 bytes (enough to see blank)
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        pos = 0
        while pos < len(chunk) and not self.done:
            if self._in_header:
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    self._line = (self._line + chunk[pos : pos + 3])[:3]
                    pos = len(chunk)
                    break
                content = (self._line + chunk[pos : min(nl, pos + 3)])[:3]
                self._line = b""
                pos = nl + 1
                if content in (b"", b"\r"):
                    self._in_header = False
                    self.done = self._remaining == 0
            else:
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    pos = len(chunk)
                    break
                pos = nl + 1
                self._remaining -= 1
                self.done = self._remaining == 0
        return chunk[:pos]


class _MessageSender(ChunkSender):
    """Streams a message file to the transport as a POP3 multi-line answer (dot-stuffed and
    terminated), one chunk at a time."""

    def __init__(self, fileobj, transport, top: TopFilter | None = None):
        super().__init__(transport)
        self._file = fileobj
        self._top = top
        self._stuffer = DotStuffer()
        self._ended = False

    def next_chunk(self):
        if self._ended:
            return None
        chunk = self._file.read(self.CHUNK)
        if self._top is not None:
            chunk = self._top.feed(chunk)
        out = self._stuffer.feed(chunk) if chunk else b""
        if not chunk or (self._top is not None and self._top.done):
            out += self._stuffer.end()
            self._ended = True
        return out


class POP3Server(pop3.POP3):
    """One POP3 session. ``state`` is RFC 1939's: AUTHORIZATION, TRANSACTION, UPDATE."""

    GREETING = b"haitatsu POP3 server ready"
    #: RFC 2449 limits commands to 255 octets; SASL responses and sloppy clients get more room.
    MAX_LINE_LENGTH = 4096
    LIST_BATCH = 1000
    _INPUT_HIGH_WATER = 64 * 1024

    _log = Logger()

    #: ``haitatsu.limits.PeerCounter`` of logged-in sessions per address, set by the factory
    #: (None: not limited). POP3 has no limit of its own: ``imap.max_connections_per_ip``.
    sessions = None

    def __init__(self, config, store, portal, clock, tls=None):
        self.config = config
        #: The ``TLSService`` for STLS; None: TLS is off and USER/PASS work in plaintext.
        self.tls = tls
        self.store = store
        self.portal = portal
        self.clock = clock
        self.callLater = clock.callLater
        self.timeOut = self._idle_timeout = config.pop3.idle_timeout_seconds or None
        self.state = AUTHORIZATION
        self.mbox = None
        self._user: bytes | None = None
        self._inbuf = bytearray()
        self._discarding_line = False
        self._busy = False
        self._pumping = False
        self._paused = False
        self._closing = False
        self._awaiting_line: defer.Deferred | None = None
        self._in_response = False
        self.remote_ip = ""
        self._session_ip: str | None = None

    # -- TLS hooks ---------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return is_secure(self.transport)

    def tls_available(self) -> bool:
        """Whether STLS is offered: TLS is configured and not on yet. On an implicit-TLS
        listener (``pop3.tls_addr``) the transport is secure from the start."""
        return self.tls is not None and not self.secure

    def _refuse_plaintext(self) -> bool:
        if not self.tls_available():
            return False
        self._log.info("POP3 login refused before STLS", remote_ip=self.remote_ip)
        self.failResponse(PLAINTEXT_REFUSED)
        return True

    # -- connection --------------------------------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.remote_ip = getattr(peer, "host", "") or ""
        self._log.debug("POP3 connection from {remote_ip}", remote_ip=self.remote_ip)
        self.successResponse(self.GREETING)
        self.setTimeout(self._idle_timeout)

    def connectionLost(self, reason=protocol.connectionDone):
        self._release_session()
        self._closing = True
        if self._awaiting_line is not None:
            d, self._awaiting_line = self._awaiting_line, None
            d.errback(error.ConnectionDone())
        super().connectionLost(reason)

    def timeoutConnection(self):
        # RFC 1939 3: close without entering UPDATE, so nothing marked is deleted.
        self._log.info("POP3 session idle too long; closing", remote_ip=self.remote_ip)
        self.failResponse(b"Autologout; idle for too long")
        self._close()

    def successResponse(self, message=b""):
        self.transport.write(b"+OK " + message + b"\r\n" if message else b"+OK\r\n")

    def failResponse(self, message=b""):
        self.transport.write(b"-ERR " + message + b"\r\n" if message else b"-ERR\r\n")

    def _close(self):
        self._closing = True
        self.transport.loseConnection()

    def listCapabilities(self):
        caps = [b"TOP", b"UIDL"]
        if self.tls_available():
            caps.append(b"STLS")
        else:
            caps += [b"USER", b"SASL " + b" ".join(SASL_MECHANISMS)]
        caps += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"]
        return caps

    # -- framing -----------------------------------------------------------------------------

    def dataReceived(self, data):
        if self._closing:
            return
        self.resetTimeout()
        self._inbuf += data
        if len(self._inbuf) > self._INPUT_HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._pump()

    def _pump(self):
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._closing and (not self._busy or self._awaiting_line is not None):
                i = self._inbuf.find(b"\n")
                if i < 0:
                    if len(self._inbuf) > self.MAX_LINE_LENGTH:
                        self._discarding_line = True
                        self._inbuf.clear()
                    break
                line = bytes(self._inbuf[:i])
                del self._inbuf[: i + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._discarding_line or len(line) > self.MAX_LINE_LENGTH:
                    self._discarding_line = False
                    line = None
                self._line(line)
        finally:
            self._pumping = False
        if self._paused and len(self._inbuf) < self._INPUT_HIGH_WATER // 2 and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _line(self, line: bytes | None):
        """One line from the client; ``None`` stands for a line that was too long."""
        if self._awaiting_line is not None:
            d, self._awaiting_line = self._awaiting_line, None
            d.callback(line)
            return
        if line is None:
            self.failResponse(b"Line too long")
            return
        d = defer.Deferred.fromCoroutine(self._run_command(line))
        if not d.called:
            self._busy = True
            self.setTimeout(None)
            d.addBoth(self._command_done)

    def _command_done(self, _):
        self._busy = False
        if not self._closing:
            self.setTimeout(self._idle_timeout)
        self._pump()

    def _read_line(self) -> defer.Deferred:
        """The next line from the client (a SASL response), ``None`` if it was too long."""
        self._awaiting_line = defer.Deferred()
        self.setTimeout(self._idle_timeout)
        d = self._awaiting_line
        self._pump()
        return d

    # -- dispatch ----------------------------------------------------------------------------

    async def _run_command(self, line: bytes):
        name, _, rest = line.partition(b" ")
        name = name.upper()
        try:
            entry = COMMANDS.get(name)
            if entry is None:
                self.failResponse(b"Unknown command")
                return
            handler, states = entry
            if self.state not in states:
                self.failResponse(b"Command not valid in this state")
                return
            await getattr(self, "_cmd_" + handler)(rest)
        except POP3SyntaxError as e:
            self._fail(str(e).encode("utf-8", "replace"))
        except StorageUnavailable as e:
            self._log.warn(
                "storage unavailable during {command}: {error}",
                command=name.decode("latin-1"),
                error=str(e),
                remote_ip=self.remote_ip,
            )
            self._fail(SYS_TEMP)
        except (StreamBroken, error.ConnectionDone, error.ConnectionLost):
            self._in_response = True
            self._fail(b"")
        except Exception:
            self._log.failure(
                "POP3 command {command} failed", command=name.decode("ascii", "replace")
            )
            self._fail(b"Internal server error")

    def _fail(self, message: bytes):
        if self._closing:
            return
        if self._in_response:
            # Part of a multi-line answer is on the wire; an -ERR now would be read as content.
            self._close()
            return
        self.failResponse(message)

    @staticmethod
    def _args(rest: bytes, low: int, high: int, usage: bytes) -> list[bytes]:
        args = rest.split()
        if not low <= len(args) <= high:
            raise POP3SyntaxError(usage.decode("ascii"))
        return args

    def _index(self, arg: bytes) -> int:
        """A 1-based message number naming a live message -> 0-based index."""
        if not arg.isdigit() or len(arg) > 10 or int(arg) < 1:
            raise POP3SyntaxError("Invalid message number")
        index = int(arg) - 1
        if index >= len(self.mbox):
            raise POP3SyntaxError("No such message")
        if index in self.mbox.deleted:
            raise POP3SyntaxError("Message %d is deleted" % (index + 1))
        return index

    # -- any state ---------------------------------------------------------------------------

    async def _cmd_capa(self, rest):
        self._args(rest, 0, 0, b"Syntax: CAPA")
        self._multiline(b"Capability list follows", self.listCapabilities())

    async def _cmd_quit(self, rest):
        self._args(rest, 0, 0, b"Syntax: QUIT")
        if self.state == TRANSACTION:
            self.state = UPDATE
            try:
                removed = await self.mbox.commit()
            except StorageUnavailable as e:
                self._log.warn(
                    "POP3 QUIT could not apply deletions: {error}",
                    error=str(e),
                    mailbox_id=self.mbox.mailbox_id,
                )
                self.failResponse(b"[SYS/TEMP] Some deleted messages not removed, try again")
                self._close()
                return
            self._log.info(
                "POP3 session of {mailbox_id} ends; {count} messages deleted",
                mailbox_id=self.mbox.mailbox_id,
                count=len(removed),
                remote_ip=self.remote_ip,
            )
            self.successResponse(b"haitatsu POP3 server signing off (%d deleted)" % len(removed))
        else:
            self.successResponse(b"haitatsu POP3 server signing off")
        self._close()

    # -- AUTHORIZATION -----------------------------------------------------------------------

    async def _cmd_user(self, rest):
        if self._refuse_plaintext():
            return
        (user,) = self._args(rest, 1, 1, b"Syntax: USER name")
        self._user = user
        self.successResponse(b"Send your password")

    async def _cmd_pass(self, rest):
        if self._refuse_plaintext():
            return
        if self._user is None:
            raise POP3SyntaxError("USER first")
        if not rest:
            raise POP3SyntaxError("Syntax: PASS password")
        user, self._user = self._user, None
        # The rest of the line is the password, spaces included (RFC 1939 7 allows it).
        await self._login(credentials.UsernamePassword(user, rest))

    async def _cmd_auth(self, rest):
        if self._refuse_plaintext():
            return
        args = self._args(rest, 0, 2, b"Syntax: AUTH mechanism [initial-response]")
        if not args:
            # RFC 1734's listing form, which some clients still probe with.
            self._multiline(b"Supported SASL mechanisms", SASL_MECHANISMS)
            return
        if args[0].upper() not in SASL_MECHANISMS:
            raise POP3SyntaxError("Unsupported SASL mechanism")
        if len(args) == 2:
            response = b"" if args[1] == b"=" else args[1]
        else:
            self.sendLine(b"+ ")
            response = await self._read_line()
            if response is None:
                raise POP3SyntaxError("Line too long")
            if response.strip() == b"*":
                raise POP3SyntaxError("AUTH cancelled")
        try:
            decoded = base64.b64decode(response.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise POP3SyntaxError("Invalid base64 in SASL response") from None
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            raise POP3SyntaxError("Malformed SASL PLAIN response")
        authzid, user, password = parts
        if authzid and authzid != user:
            self._log.info("POP3 PLAIN authzid differs from user", remote_ip=self.remote_ip)
            self.failResponse(AUTH_FAILED)
            return
        await self._login(credentials.UsernamePassword(user, password))

    async def _cmd_stls(self, rest):
        self._args(rest, 0, 0, b"Syntax: STLS")
        if self.tls is None:
            raise POP3SyntaxError("TLS is not available")
        if self.secure:
            raise POP3SyntaxError("Command not permitted when TLS active")
        if not self.tls.available:
            raise POP3SyntaxError("[SYS/TEMP] TLS is temporarily unavailable")
        if self._inbuf:
            # Sent in the clear after STLS, possibly by someone in the middle: never run it.
            self._log.warn(
                "discarding {octets} octets pipelined after STLS",
                octets=len(self._inbuf),
                remote_ip=self.remote_ip,
            )
            self._inbuf.clear()
            self._discarding_line = False
        self._user = None
        self.successResponse(b"Begin TLS negotiation now")
        try:
            self.transport.startTLS(self.tls)
        except Exception:
            self._log.failure("POP3 STLS failed", remote_ip=self.remote_ip)
            self._close()

    async def _login(self, creds):
        if not self._hold_session():
            self.failResponse(TOO_MANY_SESSIONS)
            return
        try:
            _, maildrop, logout = await self.portal.login(
                creds, None, pop3.IMailbox, remote_ip=self.remote_ip
            )
        except LoginFailed:
            self._release_session()
            self._log.info("POP3 login failed", remote_ip=self.remote_ip)
            self.failResponse(AUTH_FAILED)
            return
        except BaseException:
            self._release_session()
            raise
        if self._closing:
            return
        self.mbox = maildrop
        self._onLogout = logout
        self.state = TRANSACTION
        self._log.info(
            "POP3 login for {mailbox_id}",
            mailbox_id=maildrop.mailbox_id,
            remote_ip=self.remote_ip,
        )
        count, size = self._totals()
        self.successResponse(b"Logged in, %d messages (%d octets)" % (count, size))

    def _hold_session(self) -> bool:
        """Count this session against its address before the login is checked, unless the
        address already has ``imap.max_connections_per_ip`` POP3 sessions; given back when the
        login fails or the connection ends, however it ends."""
        if self.sessions is None or self._session_ip is not None:
            return True
        limit = self.config.imap.max_connections_per_ip
        if not self.sessions.acquire(self.remote_ip, limit):
            self._log.info(
                "POP3 login refused: {limit} sessions from {remote_ip} already",
                limit=limit,
                remote_ip=self.remote_ip,
            )
            return False
        self._session_ip = self.remote_ip
        return True

    def _release_session(self):
        address, self._session_ip = self._session_ip, None
        if address is not None:
            self.sessions.release(address)

    # -- TRANSACTION -------------------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        live = self.mbox.live()
        return len(live), sum(row.size_bytes for _, row in live)

    def _multiline(self, first: bytes, lines):
        """``+OK first``, the lines (dot-stuffed), the terminator; written in batches."""
        self.successResponse(first)
        batch = []
        for line in lines:
            batch.append(b"." + line if line[:1] == b"." else line)
            batch.append(b"\r\n")
            if len(batch) >= 2 * self.LIST_BATCH:
                self.transport.writeSequence(batch)
                batch = []
        batch.append(b".\r\n")
        self.transport.writeSequence(batch)

    async def _cmd_stat(self, rest):
        self._args(rest, 0, 0, b"Syntax: STAT")
        self.successResponse(b"%d %d" % self._totals())

    async def _cmd_list(self, rest):
        args = self._args(rest, 0, 1, b"Syntax: LIST [message]")
        if args:
            index = self._index(args[0])
            self.successResponse(b"%d %d" % (index + 1, self.mbox.rows[index].size_bytes))
            return
        count, size = self._totals()
        self._multiline(
            b"%d messages (%d octets)" % (count, size),
            (b"%d %d" % (i + 1, row.size_bytes) for i, row in self.mbox.live()),
        )

    async def _cmd_uidl(self, rest):
        args = self._args(rest, 0, 1, b"Syntax: UIDL [message]")
        if args:
            index = self._index(args[0])
            self.successResponse(b"%d %s" % (index + 1, self.mbox.uidl(self.mbox.rows[index])))
            return
        self._multiline(
            b"Unique-ID listing follows",
            (b"%d %s" % (i + 1, self.mbox.uidl(row)) for i, row in self.mbox.live()),
        )

    async def _cmd_retr(self, rest):
        (arg,) = self._args(rest, 1, 1, b"Syntax: RETR message")
        index = self._index(arg)
        await self._send_message(index, b"%d octets" % self.mbox.rows[index].size_bytes, None)

    async def _cmd_top(self, rest):
        arg, lines = self._args(rest, 2, 2, b"Syntax: TOP message lines")
        index = self._index(arg)
        if not lines.isdigit():
            raise POP3SyntaxError("Invalid line count")
        await self._send_message(index, b"Top of message follows", TopFilter(int(lines)))

    async def _send_message(self, index, first, top):
        try:
            fileobj = await self.mbox.open(index)
        except (NoSuchMessage, KeyError):
            raise POP3SyntaxError("Message %d no longer exists" % (index + 1)) from None
        try:
            if self._closing:
                return
            self.successResponse(first)
            self._in_response = True
            await _MessageSender(fileobj, self.transport, top).start()
            self._in_response = False
        finally:
            fileobj.close()

    async def _cmd_dele(self, rest):
        (arg,) = self._args(rest, 1, 1, b"Syntax: DELE message")
        index = self._index(arg)
        self.mbox.deleteMessage(index)
        self.successResponse(b"Message %d deleted" % (index + 1))

    async def _cmd_rset(self, rest):
        self._args(rest, 0, 0, b"Syntax: RSET")
        self.mbox.undeleteMessages()
        self.successResponse(b"Maildrop has %d messages (%d octets)" % self._totals())

    async def _cmd_noop(self, rest):
        self._args(rest, 0, 0, b"Syntax: NOOP")
        self.successResponse(b"")


class POP3Factory(protocol.ServerFactory):
    """Builds a ``POP3Server`` per connection with the configuration current at that moment.

    ``throttle`` is the ``LoginThrottle`` shared with the other listeners (the hub passes one);
    without it the factory makes its own on ``reactor``. ``tls`` (a ``TLSService``) turns on
    STLS and, until it is used, refuses USER, PASS and AUTH.
    """

    protocol = POP3Server

    def __init__(self, get_config, store, reactor, throttle=None, tls=None, sessions=None):
        self.get_config = get_config
        #: Logged-in sessions per address (``imap.max_connections_per_ip``), shared by the
        #: listeners the hub gives it to.
        self.sessions = sessions if sessions is not None else PeerCounter()
        self.tls = tls
        self.store = store
        self.reactor = reactor
        self.throttle = throttle if throttle is not None else LoginThrottle(store, reactor)
        self.portal = ThrottledPortal(
            Portal(POP3Realm(store), [AppPasswordChecker(store, "pop3")]), self.throttle
        )

    def buildProtocol(self, addr):
        p = self.protocol(self.get_config(), self.store, self.portal, self.reactor, tls=self.tls)
        p.factory = self
        p.sessions = self.sessions
        return p


__all__ = ["DotStuffer", "POP3Factory", "POP3Server", "TopFilter"]
