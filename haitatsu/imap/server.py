"""The IMAP server: twisted.mail's IMAP4Server, re-framed and re-dispatched over our store.

What we keep from ``IMAP4Server``: the greeting and response helpers, capability plumbing, the
SASL challenger classes, portal login and the idle timeout (``TimeoutMixin``). What we replace,
and why:

- **Framing.** twisted reads a literal per argument and holds string literals in memory; a large
  APPEND would sit in RAM and an over-long line drops the connection. We frame whole commands
  (line + literals), spool APPEND literals to a file, refuse oversize literals before the client
  sends them (``NO [TOOBIG]``), answer over-long lines with ``BAD`` and keep the session.
- **Dispatch.** One handler per command, given the tokenized arguments (``wire.tokenize``), so a
  literal can stand wherever a string can, and issue 5's extensions add handlers, not parsers.
- **FETCH, SEARCH, STORE.** Answered from metadata rows in batches and from the ENVELOPE and
  BODYSTRUCTURE strings stored at delivery; bodies stream from the store
  (``open_message``, whatever blobs a message is stored as) through a producer.
  Message sets are intersected with the session's view, never iterated number by number.
- **STARTTLS** (RFC 3501 6.2.1), offered when the factory has a ``TLSService``. Until TLS is on,
  such a server advertises ``LOGINDISABLED`` and no ``AUTH=`` mechanism, and answers LOGIN and
  AUTHENTICATE ``NO [PRIVACYREQUIRED]`` (RFC 5530): the password never crosses in the clear.
  Input pipelined behind STARTTLS is discarded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import operator
import os
import re
import tempfile

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.mail._cred import PLAINCredentials
from ulid import ULID

from haitatsu import __version__
from haitatsu.auth.checker import AppPasswordChecker
from haitatsu.auth.throttle import LoginThrottle, ThrottledPortal
from haitatsu.imap import fetch as fetchmod
from haitatsu.imap.account import IMAPRealm
from haitatsu.imap.binary import BinaryMixin, UnknownCTE, blocking_runner
from haitatsu.imap.extensions import ExtensionsMixin
from haitatsu.imap.fanout import ChangeFanout
from haitatsu.imap.labels import ViewStore, is_label_folder, selected_change
from haitatsu.imap.qresync import vanished_earlier
from haitatsu.imap.search import (
    BadCharset,
    Candidate,
    MessageText,
    compile_search,
    text_ranges,
)
from haitatsu.imap.special_use import SpecialUseMixin, parse_create_params
from haitatsu.imap.utf8 import UTF8Mixin
from haitatsu.imap.wire import (
    Atom,
    IMAPSyntaxError,
    InvalidMailboxName,
    SpooledLiteral,
    String,
    format_internal_date,
    format_uid_set,
    literal_marker,
    parse_sequence_set,
    resolve_sequence_set,
    split_command,
    tokenize,
)
from haitatsu.interfaces import (
    FolderExists,
    FolderHasChildren,
    FolderProtected,
    InvalidFolderName,
    NoSuchFolder,
    OverQuota,
    StorageUnavailable,
)
from haitatsu.limits import PeerCounter
from haitatsu.metrics import METRICS
from haitatsu.storage.records import FLAG_COLUMNS, Delivery
from haitatsu.streaming import FileRangeSender as _RangeSender
from haitatsu.streaming import StreamBroken
from haitatsu.tls import is_secure

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_BY_LOWER = {f.lower(): f for f in FLAG_COLUMNS}

_ANY = ("unauth", "auth", "select")
_AUTH = ("auth", "select")
_SELECT = ("select",)

#: command -> (handler name, states it is valid in)
COMMANDS = {
    b"CAPABILITY": ("capability", _ANY),
    b"NOOP": ("noop", _ANY),
    b"LOGOUT": ("logout", _ANY),
    b"LOGIN": ("login", ("unauth",)),
    b"AUTHENTICATE": ("authenticate", ("unauth",)),
    b"STARTTLS": ("starttls", ("unauth",)),
    b"SELECT": ("select", _AUTH),
    b"EXAMINE": ("examine", _AUTH),
    b"LIST": ("list", _AUTH),
    b"LSUB": ("lsub", _AUTH),
    b"STATUS": ("status", _AUTH),
    b"APPEND": ("append", _AUTH),
    b"NAMESPACE": ("namespace", _AUTH),
    b"IDLE": ("idle", _AUTH),
    b"SUBSCRIBE": ("subscribe", _AUTH),
    b"UNSUBSCRIBE": ("subscribe", _AUTH),
    b"CREATE": ("create", _AUTH),
    b"DELETE": ("delete", _AUTH),
    b"RENAME": ("rename", _AUTH),
    b"ENABLE": ("enable", _AUTH),
    b"ID": ("id", _ANY),
    b"CHECK": ("noop", _SELECT),
    b"CLOSE": ("close", _SELECT),
    b"UNSELECT": ("unselect", _SELECT),
    b"EXPUNGE": ("expunge", _SELECT),
    b"FETCH": ("fetch", _SELECT),
    b"STORE": ("store", _SELECT),
    b"SEARCH": ("search", _SELECT),
    b"COPY": ("copy", _SELECT),
    b"MOVE": ("copy", _SELECT),
    b"UID": ("uid", _SELECT),
    b"SORT": ("sort", _SELECT),
    b"THREAD": ("thread", _SELECT),
    b"GETQUOTA": ("getquota", _AUTH),
    b"GETQUOTAROOT": ("getquotaroot", _AUTH),
    b"SETQUOTA": ("setquota", _AUTH),
}
UID_COMMANDS = (
    b"FETCH",
    b"STORE",
    b"SEARCH",
    b"COPY",
    b"MOVE",
    b"EXPUNGE",
    b"SORT",
    b"THREAD",
)


class _PlainCredentials(PLAINCredentials):
    """SASL PLAIN that also checks the authorization identity (empty or the username)."""

    def setResponse(self, response):
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise IMAPSyntaxError("malformed PLAIN response")
        authzid, self.username, self.password = parts
        if authzid and authzid != self.username:
            raise UnauthorizedLogin("authorization identity differs from the username")


class _MemorySink:
    def __init__(self, size):
        self.remaining = size
        self._parts = []

    def write(self, data):
        self._parts.append(data)
        self.remaining -= len(data)

    def result(self):
        return String(b"".join(self._parts))

    def discard(self):
        self._parts = []


class _DiscardSink:
    def __init__(self, size):
        self.remaining = size

    def write(self, data):
        self.remaining -= len(data)

    def result(self):
        return String(b"")

    def discard(self):
        pass


class _FileSink:
    """An APPEND literal on its way to disk (never whole in memory)."""

    def __init__(self, size, directory):
        fd, self.path = tempfile.mkstemp(prefix="imap-", suffix=".eml", dir=directory)
        self._file = os.fdopen(fd, "wb", buffering=64 * 1024)
        self.remaining = size
        self.size = size

    def write(self, data):
        self._file.write(data)
        self.remaining -= len(data)

    def result(self):
        self._file.close()
        return SpooledLiteral(path=self.path, size=self.size)

    def discard(self):
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _wire(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogateescape")


def _flag_list(flags) -> bytes:
    return b"(" + b" ".join(_wire(f) for f in flags) + b")"


def _parse_flags(tokens) -> list[str]:
    """Client flags: system flags in canonical case, keywords as atoms; ``\\Recent`` dropped."""
    flags = []
    for token in tokens:
        if not isinstance(token, Atom) or b"[" in token or b"]" in token:
            raise IMAPSyntaxError("invalid flag")
        text = token.decode("utf-8", "replace")
        if text.startswith("\\"):
            lower = text.lower()
            if lower == "\\recent":
                continue
            if lower not in _SYSTEM_BY_LOWER:
                raise IMAPSyntaxError("unknown system flag %s" % text[:40])
            text = _SYSTEM_BY_LOWER[lower]
        elif any(c in text for c in "%*\\"):
            raise IMAPSyntaxError("invalid keyword")
        if text not in flags:
            flags.append(text)
    return flags


def _astring(token) -> bytes:
    if not isinstance(token, (Atom, String)):
        raise IMAPSyntaxError("string expected")
    return bytes(token)


class IMAPServer(ExtensionsMixin, BinaryMixin, UTF8Mixin, SpecialUseMixin, imap4.IMAP4Server):
    """One IMAP session. ``state`` is twisted's: unauth, auth, select, logout."""

    IDENT = b"haitatsu IMAP4rev1 ready"
    MAX_LINE_LENGTH = 64 * 1024
    MAX_COMMAND_LITERAL = 64 * 1024
    MAX_COMMAND_BYTES = 1024 * 1024
    FETCH_BATCH = 250
    #: Messages per ``message_summaries`` read (FETCH of row and metadata items, SEARCH).
    SUMMARY_BATCH = 5000
    SEARCH_TEXT_BYTES = 2 * 1024 * 1024
    _INPUT_HIGH_WATER = 1024 * 1024

    _log = Logger()

    #: ``haitatsu.limits.PeerCounter`` of logged-in sessions per address (API.md 5.5), set by
    #: the factory; None: not limited.
    sessions = None

    def __init__(self, config, store, portal, clock, spool_dir=None, tls=None, fanout=None):
        super().__init__(chal={b"PLAIN": _PlainCredentials})
        self.config = config
        #: The process's ``ChangeFanout`` (the factory's, shared by its sessions).
        self.fanout = fanout if fanout is not None else ChangeFanout(store)
        #: The ``TLSService`` for STARTTLS; None: TLS is off and LOGIN works in plaintext.
        self.tls = tls
        #: The store with labels as folders (``Labels/<name>``, haitatsu/imap/labels.py).
        self.store = ViewStore(store)
        self.portal = portal
        self.clock = clock
        self.callLater = clock.callLater
        self.spool_dir = spool_dir or tempfile.gettempdir()
        self.timeOut = self._idle_timeout = config.imap.idle_timeout_seconds or None
        self.view = None
        self._inbuf = bytearray()
        #: The most input this session ever held unparsed (literals go to their sink as they
        #: arrive; input is paused above ``_INPUT_HIGH_WATER``): bounded, whatever is sent.
        self.max_buffered = 0
        self._chunks: list = []
        self._command_size = 0
        self._literal = None
        self._skip_command = False
        self._discarding_line = False
        self._long_line_head = b""
        self._busy = False
        self._pumping = False
        self._paused = False
        self._closing = False
        self._awaiting_line: defer.Deferred | None = None
        self._in_response = False
        self._unsubscribe = None
        self._changes_pending = False
        self._idling = False
        self._idle_refresh_running = False
        #: The last refresh's ``Update`` (what it reported and how many rows it read).
        self.last_update = None
        self._view_lock = defer.DeferredLock()
        self._selected_deleted = False
        #: Capabilities the client turned on with ENABLE (RFC 5161) or, for CONDSTORE, with any
        #: CONDSTORE enabling command (RFC 7162 3.1).
        self.enabled: set[bytes] = set()
        #: SEARCHRES's ``$`` (RFC 5182): UIDs saved by ``SEARCH RETURN (SAVE)``.
        self.saved_uids: list[int] = []
        #: The address this session is counted against in ``sessions`` (None: not counted).
        self._session_ip: str | None = None

    # -- connection --------------------------------------------------------------------------

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self._log.debug(
            "IMAP connection from {remote_ip}", remote_ip=getattr(self.peer, "host", "")
        )
        METRICS.imap_sessions.inc()
        self._counted = True
        # A response written in pieces across a store call (SELECT's untagged lines, then the
        # rest after the read) must not wait for the client's delayed ACK (Nagle: 40 ms).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):
                set_no_delay(True)
        super().connectionMade()

    def connectionLost(self, reason=protocol.connectionDone):
        if getattr(self, "_counted", False):
            self._counted = False
            METRICS.imap_sessions.dec()
        self._release_session()
        self._closing = True
        self._close_view()
        if self._literal is not None:
            self._literal.discard()
            self._literal = None
        self._discard_chunks(self._chunks)
        self._chunks = []
        if self._awaiting_line is not None:
            d, self._awaiting_line = self._awaiting_line, None
            d.errback(error.ConnectionDone())
        super().connectionLost(reason)

    def timeoutConnection(self):
        self._log.info("IMAP session idle too long; closing")
        self.sendLine(b"* BYE Autologout; idle for too long")
        self._closing = True
        self._close_view()
        self.transport.loseConnection()

    @property
    def secure(self) -> bool:
        return is_secure(self.transport)

    @property
    def login_disabled(self) -> bool:
        """TLS is configured but not yet on: no credentials may be sent (RFC 3501 6.2.3)."""
        return self.tls is not None and not self.secure

    def listCapabilities(self):
        caps = [b"IMAP4rev1", b"LITERAL+", b"SASL-IR"]
        if self.state == "unauth":
            if self.login_disabled:
                caps += [b"STARTTLS", b"LOGINDISABLED"]
            else:
                caps += [b"AUTH=" + mech for mech in self.challengers]
        caps += [b"ENABLE", b"ID", b"IDLE", b"NAMESPACE", b"CHILDREN", b"SPECIAL-USE"]
        caps += [b"UNSELECT", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC"]
        caps += [b"ESEARCH", b"SEARCHRES", b"WITHIN", b"SORT"]
        caps += [b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"]
        caps += [b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE", b"MULTIAPPEND"]
        caps += [b"BINARY", b"UTF8=ACCEPT", b"CREATE-SPECIAL-USE"]
        caps += [b"APPENDLIMIT=%d" % self.config.max_message_size]
        caps += [b"QUOTA", b"QUOTA=RES-STORAGE"]
        return caps

    # -- framing -----------------------------------------------------------------------------

    def dataReceived(self, data):
        self.resetTimeout()
        self._inbuf += data
        if len(self._inbuf) > self.max_buffered:
            self.max_buffered = len(self._inbuf)
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
                if self._literal is not None:
                    if not self._inbuf:
                        break
                    n = min(len(self._inbuf), self._literal.remaining)
                    self._literal.write(bytes(self._inbuf[:n]))
                    del self._inbuf[:n]
                    if self._literal.remaining == 0:
                        self._end_literal()
                    continue
                i = self._inbuf.find(b"\n")
                if i < 0:
                    if len(self._inbuf) > self.MAX_LINE_LENGTH:
                        if not self._discarding_line:
                            self._long_line_head = bytes(self._inbuf[:80])
                        self._discarding_line = True
                        self._inbuf.clear()
                    break
                line = bytes(self._inbuf[:i])
                del self._inbuf[: i + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._discarding_line or len(line) > self.MAX_LINE_LENGTH:
                    head = self._long_line_head if self._discarding_line else line[:80]
                    self._discarding_line = False
                    self._line_too_long(head, line[-64:])
                    continue
                self._line(line)
        finally:
            self._pumping = False
        if self._paused and len(self._inbuf) < self._INPUT_HIGH_WATER // 2 and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _line_too_long(self, head, tail=b""):
        """``BAD`` for the command (tagged when its tag is known); a non-synchronizing literal
        announced at the end of the line belongs to it and is read and dropped."""
        tag = b"*"
        # The command's tag: from its first line when the long one follows a literal.
        first = self._chunks[0] if self._chunks else head
        with contextlib.suppress(IMAPSyntaxError):
            tag = split_command(first.split(b" ", 2)[0] + b" X")[0]
        self._discard_chunks(self._chunks)
        self._chunks, self._command_size, self._skip_command = [], 0, False
        self.sendBadResponse(tag, b"Command line too long")
        marker = literal_marker(tail)
        if marker is not None and not marker[1]:
            self._skip_command = True
            self._literal = _DiscardSink(marker[0])
            if marker[0] == 0:
                self._end_literal()

    def _line(self, line):
        if self._awaiting_line is not None:
            d, self._awaiting_line = self._awaiting_line, None
            d.callback(line)
            return
        self._command_size += len(line)
        marker = literal_marker(line)
        if marker is not None:
            size, sync, start = marker
            binary = line[start - 1 : start] == b"~"  # literal8 (RFC 3516)
            self._chunks.append(line[: start - 1] if binary else line[:start])
            self._begin_literal(size, sync, binary)
            return
        self._chunks.append(line)
        chunks, self._chunks, self._command_size = self._chunks, [], 0
        if self._skip_command:
            self._skip_command = False
            self._discard_chunks(chunks)
            return
        self._dispatch(chunks)

    def _begin_literal(self, size, sync, binary=False):
        tag, name = b"*", b""
        with contextlib.suppress(IMAPSyntaxError):
            tag, name, _ = split_command(self._chunks[0])
        reject = None
        if self._skip_command:
            sink = _DiscardSink(size)
        elif binary and name != b"APPEND":
            reject = b"BAD A literal8 is only allowed in APPEND"
        elif name == b"APPEND":
            limit = self.config.max_message_size
            if size > limit:
                reject = b"NO [TOOBIG] Message is larger than the limit of %d bytes" % limit
            else:
                sink = _FileSink(size, self.spool_dir)
        elif size > self.MAX_COMMAND_LITERAL or self._command_size + size > self.MAX_COMMAND_BYTES:
            reject = b"BAD Literal too large"
        else:
            self._command_size += size
            sink = _MemorySink(size)
        if reject is not None:
            self._respond(reject.split(b" ", 1)[0], tag, reject.split(b" ", 1)[1])
            if sync:
                # The client sends nothing more for this command.
                self._discard_chunks(self._chunks)
                self._chunks, self._command_size = [], 0
                return
            self._skip_command = True
            sink = _DiscardSink(size)
        self._literal = sink
        if sync and not self._skip_command:
            self.sendContinuationRequest(b"Ready for literal data")
        if size == 0:
            self._end_literal()

    def _end_literal(self):
        sink, self._literal = self._literal, None
        self._chunks.append(sink.result())

    @staticmethod
    def _discard_chunks(chunks):
        for chunk in chunks:
            if isinstance(chunk, SpooledLiteral):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(chunk.path)

    def _read_line(self) -> defer.Deferred:
        """The next raw line from the client (SASL responses, IDLE's DONE)."""
        self._awaiting_line = defer.Deferred()
        self.setTimeout(self._idle_timeout)
        d = self._awaiting_line
        self._pump()
        return d

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, chunks):
        try:
            tag, name, rest = split_command(chunks[0])
        except IMAPSyntaxError as e:
            self._discard_chunks(chunks)
            self.sendBadResponse(None, str(e).encode())
            return
        # No idle timer while a command runs, except where it waits for the client (IDLE,
        # AUTHENTICATE: ``_read_line`` sets it); stopped before the command starts, so it does
        # not cancel the timer such a command set.
        self.setTimeout(None)
        d = defer.ensureDeferred(self._run_command(tag, name, [rest] + chunks[1:]))
        if d.called:
            if not self._closing:
                self.setTimeout(self._idle_timeout)
        else:
            self._busy = True
            d.addBoth(self._command_done)

    def _command_done(self, _):
        self._busy = False
        if not self._closing:
            self.setTimeout(self._idle_timeout)
        self._pump()

    async def _run_command(self, tag, name, chunks):
        try:
            args = tokenize(chunks)
            uid = False
            if name == b"UID" and self.state == "select":
                if not args or not isinstance(args[0], Atom):
                    raise IMAPSyntaxError("UID needs a command")
                name, args, uid = args[0].upper(), args[1:], True
                if name not in UID_COMMANDS:
                    raise IMAPSyntaxError(
                        "UID %s is not supported" % name.decode("ascii", "replace")
                    )
            entry = COMMANDS.get(name)
            if entry is None:
                self.sendBadResponse(tag, b"Unknown command")
                return
            handler, states = entry
            if self.state not in states:
                self.sendBadResponse(tag, b"Command not valid in this state")
                return
            await getattr(self, "_cmd_" + handler)(tag, name, args, uid)
        except IMAPSyntaxError as e:
            self._fail(tag, b"BAD", str(e).encode("utf-8", "replace"))
        except UnknownCTE as e:
            self._fail(
                tag,
                b"NO",
                b"[UNKNOWN-CTE] Cannot decode the transfer encoding %s"
                % re.sub(rb"[^!-~]", b"?", str(e).encode("utf-8", "replace")[:60]),
            )
        except StorageUnavailable as e:
            self._log.warn(
                "storage unavailable during {command}: {error}",
                command=name.decode("latin-1"),
                error=str(e),
            )
            self._fail(tag, b"NO", b"[UNAVAILABLE] Storage is temporarily unavailable, try again")
        except (StreamBroken, error.ConnectionDone, error.ConnectionLost):
            self._in_response = True
            self._fail(tag, b"NO", b"")
        except Exception:
            self._log.failure(
                "IMAP command {command} failed", command=name.decode("ascii", "replace")
            )
            self._fail(tag, b"NO", b"[SERVERBUG] Internal server error")
        finally:
            self._discard_chunks(chunks)

    def _fail(self, tag, state, message):
        if self._closing:
            return
        if self._in_response:
            # Part of a response is on the wire; a tagged answer now would be misread.
            self._closing = True
            self.transport.loseConnection()
            return
        self._respond(state, tag, message)

    # -- any state ---------------------------------------------------------------------------

    async def _cmd_capability(self, tag, name, args, uid):
        self._no_args(args)
        self.sendUntaggedResponse(b"CAPABILITY " + b" ".join(self.listCapabilities()))
        self.sendPositiveResponse(tag, b"CAPABILITY completed")

    async def _cmd_noop(self, tag, name, args, uid):
        self._no_args(args)
        await self._report_changes()
        self.sendPositiveResponse(tag, name + b" completed")

    async def _cmd_logout(self, tag, name, args, uid):
        self._no_args(args)
        self.sendUntaggedResponse(b"BYE haitatsu logging out")
        self.sendPositiveResponse(tag, b"LOGOUT completed")
        self.state = "logout"
        self._closing = True
        self._close_view()
        self.transport.loseConnection()

    @staticmethod
    def _no_args(args):
        if args:
            raise IMAPSyntaxError("unexpected arguments")

    # -- authentication ----------------------------------------------------------------------

    def _refuse_plaintext(self, tag, command: bytes) -> bool:
        if not self.login_disabled:
            return False
        self._log.info(
            "IMAP {command} refused before STARTTLS",
            command=command.decode("ascii"),
            remote_ip=getattr(self.peer, "host", ""),
        )
        self.sendNegativeResponse(
            tag, b"[PRIVACYREQUIRED] " + command + b" is disabled before STARTTLS"
        )
        return True

    async def _cmd_starttls(self, tag, name, args, uid):
        self._no_args(args)
        if self.secure:
            self.sendBadResponse(tag, b"TLS is already active")
            return
        if self.tls is None:
            self.sendBadResponse(tag, b"STARTTLS is not available")
            return
        if not self.tls.available:
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] TLS is temporarily unavailable")
            return
        if self._inbuf:
            # Anything pipelined behind STARTTLS was sent in the clear, possibly by someone in
            # the middle: it must not run inside the encrypted session.
            self._log.warn(
                "discarding {octets} octets pipelined after STARTTLS",
                octets=len(self._inbuf),
                remote_ip=getattr(self.peer, "host", ""),
            )
            self._inbuf.clear()
            self._discarding_line = False
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        try:
            self.transport.startTLS(self.tls)
        except Exception:
            self._log.failure("IMAP STARTTLS failed")
            self._closing = True
            self.transport.loseConnection()

    async def _cmd_login(self, tag, name, args, uid):
        if self._refuse_plaintext(tag, b"LOGIN"):
            return
        if len(args) != 2:
            raise IMAPSyntaxError("LOGIN needs a user name and a password")
        user, password = _astring(args[0]), _astring(args[1])
        await self._login(tag, credentials.UsernamePassword(user, password), b"LOGIN")

    async def _cmd_authenticate(self, tag, name, args, uid):
        if not args or len(args) > 2 or not isinstance(args[0], Atom):
            raise IMAPSyntaxError("AUTHENTICATE needs a mechanism")
        if self._refuse_plaintext(tag, b"AUTHENTICATE"):
            return
        mechanism = args[0].upper()
        if mechanism not in self.challengers:
            self.sendNegativeResponse(tag, b"Unsupported authentication mechanism")
            return
        if len(args) == 2:
            response = _astring(args[1])
            if response == b"=":
                response = b""
        else:
            self.sendLine(b"+ ")
            response = await self._read_line()
            self.setTimeout(None)
            if response.strip() == b"*":
                self.sendBadResponse(tag, b"AUTHENTICATE cancelled")
                return
        try:
            decoded = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            self.sendBadResponse(tag, b"Invalid base64 in SASL response")
            return
        chal = self.challengers[mechanism]()
        try:
            chal.setResponse(decoded)
        except UnauthorizedLogin:
            self._login_failed(tag)
            return
        await self._login(tag, chal, b"AUTHENTICATE")

    async def _login(self, tag, creds, command):
        if not self._hold_session():
            self.sendNegativeResponse(tag, b"[LIMIT] Too many connections from your address")
            return
        try:
            iface, avatar, logout = await self.portal.login(
                creds, None, imap4.IAccount, remote_ip=getattr(self.peer, "host", "")
            )
        except (UnauthorizedLogin, UnhandledCredentials):
            self._release_session()
            self._login_failed(tag)
            return
        except BaseException:
            self._release_session()
            raise
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self._log.info(
            "IMAP login for {mailbox_id}",
            mailbox_id=avatar.mailbox_id,
            remote_ip=getattr(self.peer, "host", ""),
        )
        self.sendPositiveResponse(tag, command + b" completed")

    def _hold_session(self) -> bool:
        """Count this session against its address before the login is checked, unless the
        address already has ``imap.max_connections_per_ip`` sessions (API.md 5.5: ``NO
        [LIMIT]``). Given back when the login fails or the connection ends, however it ends."""
        if self.sessions is None or self._session_ip is not None:
            return True
        address = getattr(self.peer, "host", "")
        limit = self.config.imap.max_connections_per_ip
        if not self.sessions.acquire(address, limit):
            self._log.info(
                "IMAP login refused: {limit} sessions from {remote_ip} already",
                limit=limit,
                remote_ip=address,
            )
            return False
        self._session_ip = address
        return True

    def _release_session(self):
        address = self._session_ip
        if address is not None:
            self._session_ip = None
            self.sessions.release(address)

    def _login_failed(self, tag):
        self._log.info("IMAP login failed", remote_ip=getattr(self.peer, "host", ""))
        self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Invalid credentials")

    # -- folders -----------------------------------------------------------------------------

    async def _cmd_namespace(self, tag, name, args, uid):
        self._no_args(args)
        self.sendUntaggedResponse(b'NAMESPACE (("" "/")) NIL NIL')
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    async def _cmd_list(self, tag, name, args, uid):
        if name == b"LIST" and (len(args) != 2 or any(isinstance(a, list) for a in args)):
            await self._list_extended(tag, args)
            return
        if len(args) != 2:
            raise IMAPSyntaxError("%s needs a reference and a pattern" % name.decode())
        reference = self._mailbox_arg(args[0])
        pattern = self._mailbox_arg(args[1])
        if name == b"LIST" and pattern == "":
            self.sendUntaggedResponse(b'LIST (\\Noselect) "/" ""')
        else:
            entries = await self.account.list_entries(
                reference, pattern, subscribed_only=name == b"LSUB"
            )
            for entry in entries:
                attributes = " ".join(entry.attributes).encode()
                self.sendUntaggedResponse(
                    b'%s (%s) "/" %s' % (name, attributes, self._mailbox_out(entry.name))
                )
        self.sendPositiveResponse(tag, name + b" completed")

    _cmd_lsub = _cmd_list

    async def _cmd_subscribe(self, tag, name, args, uid):
        if len(args) != 1:
            raise IMAPSyntaxError("%s needs a mailbox" % name.decode())
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        if folder is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        wanted = name == b"SUBSCRIBE"
        if folder.subscribed != wanted:
            if await self.store.set_folder_subscribed(folder.id, wanted) is None:
                self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
                return
        self.sendPositiveResponse(tag, name + b" completed")

    def _new_mailbox_name(self, token) -> str | None:
        """The name for CREATE/RENAME, or None (and nothing sent) when it cannot be a folder.

        A trailing delimiter only declares that the client means to create children
        (RFC 3501 6.3.3); wildcards could never be listed back, so they are refused.
        """
        name = self._new_mailbox_arg(token)
        stripped = name.rstrip("/")
        if not stripped or any(c in stripped for c in "%*"):
            raise InvalidMailboxName("mailbox name cannot be used")
        return stripped

    async def _cmd_create(self, tag, name, args, uid):
        if len(args) not in (1, 2):
            raise IMAPSyntaxError("CREATE needs a mailbox")
        uses = parse_create_params(args[1]) if len(args) == 2 else []
        try:
            folder_name = self._new_mailbox_name(args[0])
            if uses and not await self._special_use_allowed(tag, uses):
                return
            await self.store.create_folder(
                self.account.mailbox_id, folder_name, special_use="".join(uses)
            )
        except (InvalidMailboxName, InvalidFolderName) as e:
            self.sendNegativeResponse(tag, b"[CANNOT] " + _sentence(str(e)))
            return
        except FolderExists:
            self.sendNegativeResponse(tag, b"[ALREADYEXISTS] Mailbox already exists")
            return
        self.sendPositiveResponse(tag, b"CREATE completed")

    async def _cmd_delete(self, tag, name, args, uid):
        if len(args) != 1:
            raise IMAPSyntaxError("DELETE needs a mailbox")
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        if folder is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        try:
            deleted = await self.store.delete_folder(folder.id)
        except FolderProtected:
            self.sendNegativeResponse(tag, b"[CANNOT] System folders cannot be deleted")
            return
        except FolderHasChildren:
            self.sendNegativeResponse(tag, b"[HASCHILDREN] Mailbox has children; delete them first")
            return
        if deleted is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        if self.view is not None and self.view.folder.id == folder.id:
            # As Dovecot does: deleting the selected mailbox leaves the session unselected.
            self._close_view()
            self.state = "auth"
        self.sendPositiveResponse(tag, b"DELETE completed")

    async def _cmd_rename(self, tag, name, args, uid):
        if len(args) != 2:
            raise IMAPSyntaxError("RENAME needs two mailbox names")
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        try:
            new_name = self._new_mailbox_name(args[1])
            if folder is None:
                self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
                return
            renamed = await self.store.rename_folder(folder.id, new_name)
        except (InvalidMailboxName, InvalidFolderName) as e:
            self.sendNegativeResponse(tag, b"[CANNOT] " + _sentence(str(e)))
            return
        except FolderExists:
            self.sendNegativeResponse(tag, b"[ALREADYEXISTS] Mailbox already exists")
            return
        except FolderProtected:
            self.sendNegativeResponse(tag, b"[CANNOT] System folders cannot be renamed")
            return
        if renamed is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        if folder.name == "INBOX" and self.view is not None and self.view.folder.id == folder.id:
            await self._report_changes(own=True)
        self.sendPositiveResponse(tag, b"RENAME completed")

    # -- ENABLE, ID -----------------------------------------------------------------------------

    #: What ENABLE can turn on (QRESYNC turns CONDSTORE on too, RFC 7162 3.2.3).
    ENABLEABLE: tuple[bytes, ...] = (b"CONDSTORE", b"QRESYNC", b"UTF8=ACCEPT")

    async def _cmd_enable(self, tag, name, args, uid):
        if not args or not all(isinstance(a, Atom) for a in args):
            raise IMAPSyntaxError("ENABLE needs capability names")
        newly = []
        condstore_before = self.condstore
        for cap in args:
            cap = cap.upper()
            if cap in self.ENABLEABLE and cap not in self.enabled and self._may_enable(cap):
                self.enabled.add(cap)
                newly.append(cap)
        if b"QRESYNC" in self.enabled:
            self.enabled.add(b"CONDSTORE")
        self.sendUntaggedResponse(b" ".join([b"ENABLED", *newly]))
        if not condstore_before and self.condstore:
            self._condstore_turned_on()
        self.sendPositiveResponse(tag, b"ENABLE completed")

    @property
    def condstore(self) -> bool:
        """CONDSTORE is on and the selected mailbox (if any) has MODSEQs: a label view is a
        NOMODSEQ mailbox (RFC 7162 3.1.2.2), whose responses carry none."""
        return b"CONDSTORE" in self.enabled and not self._nomodseq

    @property
    def _nomodseq(self) -> bool:
        return self.view is not None and is_label_folder(self.view.folder)

    @property
    def qresync(self) -> bool:
        return b"QRESYNC" in self.enabled

    def _enable_condstore(self, selected=True):
        """A CONDSTORE enabling command (RFC 7162 3.1) ran: from now on every FETCH with
        FLAGS carries MODSEQ. In a selected mailbox the client learns HIGHESTMODSEQ once.

        ``selected``: the command uses MODSEQs of the selected mailbox (FETCH, SEARCH, STORE),
        which a NOMODSEQ mailbox answers with BAD (RFC 7162 3.1.2.2)."""
        if selected and self._nomodseq:
            raise IMAPSyntaxError("this mailbox has no MODSEQs (NOMODSEQ)")
        if b"CONDSTORE" not in self.enabled:
            self.enabled.add(b"CONDSTORE")
            self._condstore_turned_on()

    def _condstore_turned_on(self):
        if self.view is not None and not self._nomodseq:
            self.sendPositiveResponse(
                None, b"[HIGHESTMODSEQ %d] Highest" % self.view.highest_modseq
            )

    async def _cmd_id(self, tag, name, args, uid):
        if len(args) != 1:
            raise IMAPSyntaxError("ID needs NIL or a list of field-value pairs")
        params = args[0]
        client = {}
        if isinstance(params, list):
            if len(params) % 2 or len(params) > 60:
                raise IMAPSyntaxError("ID needs at most 30 field-value pairs")
            for field, value in zip(params[::2], params[1::2], strict=True):
                if not isinstance(field, String) or len(field) > 30:
                    raise IMAPSyntaxError("ID field names are strings of up to 30 octets")
                if isinstance(value, Atom) and value.upper() == b"NIL":
                    value = b""
                elif not isinstance(value, String) or len(value) > 1024:
                    raise IMAPSyntaxError("ID values are strings of up to 1024 octets or NIL")
                client[bytes(field).decode("utf-8", "replace").lower()] = bytes(value).decode(
                    "utf-8", "replace"
                )
        elif not (isinstance(params, Atom) and params.upper() == b"NIL"):
            raise IMAPSyntaxError("ID needs NIL or a list of field-value pairs")
        if client:
            self._log.info(
                "IMAP client {client_name} {client_version}",
                client_name=client.get("name", ""),
                client_version=client.get("version", ""),
                client_id=client,
                remote_ip=getattr(self.peer, "host", ""),
            )
        self.sendUntaggedResponse(b'ID ("name" "haitatsu" "version" "%s")' % __version__.encode())
        self.sendPositiveResponse(tag, b"ID completed")

    STATUS_ITEMS = (
        b"MESSAGES",
        b"RECENT",
        b"UIDNEXT",
        b"UIDVALIDITY",
        b"UNSEEN",
        b"HIGHESTMODSEQ",
        b"SIZE",
        b"APPENDLIMIT",
        b"DELETED",
        b"DELETED-STORAGE",
    )

    def _status_items(self, tokens) -> list[bytes]:
        if not isinstance(tokens, list) or not tokens:
            raise IMAPSyntaxError("STATUS needs a list of items")
        items = []
        for item in tokens:
            if not isinstance(item, Atom) or item.upper() not in self.STATUS_ITEMS:
                raise IMAPSyntaxError("unknown STATUS item")
            items.append(item.upper())
        return items

    async def _cmd_status(self, tag, name, args, uid):
        if len(args) != 2:
            raise IMAPSyntaxError("STATUS needs a mailbox and a list of items")
        items = self._status_items(args[1])
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        if folder is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        if b"HIGHESTMODSEQ" in items:
            self._enable_condstore(selected=False)
        await self._send_status(folder, items)
        self.sendPositiveResponse(tag, b"STATUS completed")

    async def _send_status(self, folder, items):
        """``* STATUS`` for one folder (STATUS, and LIST-STATUS after its LIST line).

        SIZE (RFC 8438) and DELETED-STORAGE (RFC 9208) add the messages' RFC822.SIZEs;
        APPENDLIMIT (RFC 7889) is the server-wide limit, the same for every folder."""
        counts = await self.store.folder_counts(folder.id)
        values = {
            b"MESSAGES": counts.messages,
            b"RECENT": 0,
            b"UIDNEXT": max(folder.uid_next, counts.last_uid + 1),
            b"UIDVALIDITY": folder.uid_validity,
            b"UNSEEN": counts.unseen,
            b"HIGHESTMODSEQ": folder.highest_modseq,
            b"SIZE": counts.size,
            b"APPENDLIMIT": self.config.max_message_size,
            b"DELETED": counts.deleted,
            b"DELETED-STORAGE": _kib(counts.deleted_size),
        }
        data = b" ".join(b"%s %d" % (item, values[item]) for item in items)
        self.sendUntaggedResponse(b"STATUS %s (%s)" % (self._mailbox_out(folder.name), data))

    # -- selecting ---------------------------------------------------------------------------

    async def _cmd_select(self, tag, name, args, uid):
        if len(args) not in (1, 2):
            raise IMAPSyntaxError("%s needs a mailbox" % name.decode())
        condstore, qresync = self._select_params(args[1] if len(args) == 2 else None)
        if self.view is not None:
            # RFC 7162 3.2.11: the previous mailbox is closed before the new one's responses.
            self.sendPositiveResponse(None, b"[CLOSED] Previous mailbox closed")
        # Held until the new view is made: a re-SELECT of the same folder in the same state
        # shares the rows it already has (``Account.select``) instead of reading them again.
        previous = self.view
        self._close_view()
        self.state = "auth"
        readonly = name == b"EXAMINE"
        view = await self.account.select(self._mailbox_arg(args[0]), not readonly)
        del previous
        if view is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        if condstore:
            self.enabled.add(b"CONDSTORE")
        self.view = view
        self.state = "select"
        self._changes_pending = False
        self._unsubscribe = self.fanout.subscribe(self.account.mailbox_id, self._on_change)
        folder = view.folder
        flags = list(SYSTEM_FLAGS) + view.keywords()
        self.sendUntaggedResponse(b"FLAGS " + _flag_list(flags))
        if readonly:
            self.sendPositiveResponse(None, b"[PERMANENTFLAGS ()] Read-only mailbox")
        else:
            self.sendPositiveResponse(
                None, b"[PERMANENTFLAGS " + _flag_list(flags + ["\\*"]) + b"] Flags permitted"
            )
        self.sendUntaggedResponse(b"%d EXISTS" % view.exists)
        self.sendUntaggedResponse(b"0 RECENT")
        unseen = view.first_unseen()
        if unseen is not None:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen message" % unseen)
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % folder.uid_validity)
        last_uid = view.uids[-1] if view.uids else 0
        uid_next = max(folder.uid_next, last_uid + 1)
        self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % uid_next)
        if is_label_folder(folder):
            self.sendPositiveResponse(None, b"[NOMODSEQ] No MODSEQs in a label")
        else:
            self.sendPositiveResponse(None, b"[HIGHESTMODSEQ %d] Highest" % view.highest_modseq)
            if qresync is not None and qresync[0] == folder.uid_validity:
                await self._qresync(view, *qresync[1:])
        mode = b"[READ-ONLY]" if readonly else b"[READ-WRITE]"
        self.sendPositiveResponse(tag, mode + b" " + name + b" completed")

    def _select_params(self, params):
        """``(condstore, qresync)`` from SELECT/EXAMINE's optional parameter list (RFC 7162):
        ``(CONDSTORE)`` or ``(QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]))``;
        ``qresync`` is ``(uidvalidity, modseq, known uid ranges or None)``."""
        if params is None:
            return False, None
        if not isinstance(params, list) or not params:
            raise IMAPSyntaxError("SELECT parameters must be a parenthesised list")
        condstore, qresync = False, None
        i = 0
        while i < len(params):
            word = params[i]
            if not isinstance(word, Atom):
                raise IMAPSyntaxError("invalid SELECT parameter")
            word = word.upper()
            if word == b"CONDSTORE":
                condstore = True
                i += 1
            elif word == b"QRESYNC":
                if not self.qresync:
                    raise IMAPSyntaxError("QRESYNC must be enabled first (ENABLE QRESYNC)")
                if i + 1 >= len(params) or not isinstance(params[i + 1], list):
                    raise IMAPSyntaxError("QRESYNC needs (uidvalidity modseq [known-uids])")
                qresync = _qresync_param(params[i + 1])
                condstore = True
                i += 2
            else:
                raise IMAPSyntaxError("unknown SELECT parameter")
        return condstore, qresync

    async def _qresync(self, view, modseq, known, seq_match=None):
        """RFC 7162 3.2.5.1: what changed since ``modseq``: ``VANISHED (EARLIER)`` for the
        UIDs that left (imap/qresync.py: all that may have, once pruned past ``modseq``),
        then FETCH (UID FLAGS MODSEQ) for the messages that changed, both limited to the
        client's known UIDs when it sent them."""
        report = await self.store.vanished_report(view.folder.id, modseq)
        gone = vanished_earlier(report, known, view, seq_match)
        if gone:
            self.sendUntaggedResponse(b"VANISHED (EARLIER) " + gone)
        for row in view.rows:
            if row.modseq > modseq and (known is None or _in_ranges(row.uid, known)):
                self.sendUntaggedResponse(
                    b"%d FETCH (UID %d FLAGS %s MODSEQ (%d))"
                    % (view.seq(row.uid), row.uid, _flag_list(row.flags), row.modseq)
                )

    _cmd_examine = _cmd_select

    async def _cmd_close(self, tag, name, args, uid):
        self._no_args(args)
        if not self.view.readonly:
            await self.store.expunge(self.view.folder.id)
        self._close_view()
        self.state = "auth"
        self.sendPositiveResponse(tag, b"CLOSE completed")

    async def _cmd_unselect(self, tag, name, args, uid):
        self._no_args(args)
        self._close_view()
        self.state = "auth"
        self.sendPositiveResponse(tag, b"UNSELECT completed")

    def _close_view(self):
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()
        self.view = None
        self._changes_pending = False
        self._selected_deleted = False
        self.saved_uids = []

    # -- changes (NOOP, CHECK, IDLE) ---------------------------------------------------------

    def _on_change(self, change):
        view = self.view
        if view is None:
            return
        relevant, deleted = selected_change(view.folder, change)
        if not relevant:
            return
        if deleted:
            self._selected_deleted = True
        self._changes_pending = True
        if self._idling and not self._idle_refresh_running:
            self._idle_refresh_running = True
            defer.ensureDeferred(self._idle_refresh())

    async def _idle_refresh(self):
        try:
            while self._idling and self._changes_pending and not self._closing:
                await self._report_changes()
        except (error.ConnectionDone, error.ConnectionLost):
            pass  # the session is closing (a BYE was sent, or the client went away)
        except Exception:
            self._log.failure("IDLE refresh failed")
        finally:
            self._idle_refresh_running = False

    async def _report_changes(self, own=False):
        """Bring the view up to date and tell the client: EXPUNGE, FETCH FLAGS, EXISTS.

        ``own``: after the session's own change to the selected folder (APPEND, COPY into it),
        whether or not its announcement has arrived yet (from PostgreSQL it may come later),
        so the client hears of it before the tagged OK (RFC 3501 6.3.11)."""
        if self.view is None or not (own or self._changes_pending):
            return
        await self._view_lock.acquire()
        try:
            view = self.view
            if view is None or not (own or self._changes_pending):
                return
            self._changes_pending = False
            if self._selected_deleted:
                self._selected_folder_gone()
            # What changed since the MODSEQ this session last reported; the folder's
            # HIGHESTMODSEQ is read before the rows, so the new value never claims a change
            # this refresh did not report (docs/imap.md, "Large mailboxes").
            if is_label_folder(view.folder):
                delta = await self.store.label_delta(view.folder.id, list(view.uids))
            else:
                delta = await self.fanout.delta(view.folder.id, view.highest_modseq, fresh=own)
            if view is not self.view or self._closing:
                return
            if delta.folder is None:
                # Deleted, and the folder_deleted change was not heard (a bus reconnect).
                self._selected_folder_gone()
            vanished = delta.vanished
            if not delta.complete:  # pruned past the view's MODSEQ: changed is every live row
                live = {row.uid for row in delta.changed}
                vanished = [uid for uid in view.uids if uid not in live]
            update = view.apply_delta(delta.changed, vanished)
            self.last_update = update
            view.highest_modseq = max(view.highest_modseq, delta.folder.highest_modseq)
            self._send_expunged(update.expunged, update.vanished)
            for seq, row in update.flags:
                self.sendUntaggedResponse(
                    b"%d FETCH (FLAGS %s UID %d%s)"
                    % (seq, _flag_list(row.flags), row.uid, self._modseq_item(row))
                )
            if update.exists is not None:
                self.sendUntaggedResponse(b"%d EXISTS" % update.exists)
        finally:
            self._view_lock.release()

    def _selected_folder_gone(self):
        """Another session deleted the selected folder. IMAP has no way to unselect a client,
        so it is told and disconnected, as Dovecot does."""
        self.sendUntaggedResponse(b"BYE Selected mailbox was deleted, have to disconnect")
        self._closing = True
        self._close_view()
        self.transport.loseConnection()
        raise error.ConnectionDone()

    def _send_expunged(self, seqs, uids):
        """``n EXPUNGE`` per message, or one ``VANISHED`` with the UIDs once QRESYNC is on
        (RFC 7162 3.2.10: no EXPUNGE responses are sent to such a client)."""
        if self.qresync:
            if uids:
                self.sendUntaggedResponse(b"VANISHED " + format_uid_set(sorted(uids)))
            return
        for seq in seqs:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)

    def _modseq_item(self, row) -> bytes:
        """`` MODSEQ (n)`` for a FETCH response once CONDSTORE is on (RFC 7162 3.1.4)."""
        return b" MODSEQ (%d)" % row.modseq if self.condstore else b""

    async def _cmd_idle(self, tag, name, args, uid):
        self._no_args(args)
        await self._report_changes()
        self.sendContinuationRequest(b"idling")
        self._idling = True
        try:
            if self._changes_pending and not self._idle_refresh_running:
                self._idle_refresh_running = True
                defer.ensureDeferred(self._idle_refresh())
            line = await self._read_line()
        finally:
            self._idling = False
        self.setTimeout(None)
        # Let a refresh that is writing finish before the tagged answer.
        await self._view_lock.acquire()
        self._view_lock.release()
        if line.strip().upper() == b"DONE":
            self.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self.sendBadResponse(tag, b"Expected DONE")

    # -- message sets ------------------------------------------------------------------------

    def _target_uids(self, token, uid) -> list[int]:
        if not isinstance(token, Atom):
            raise IMAPSyntaxError("sequence set expected")
        if token == b"$":
            # SEARCHRES (RFC 5182): the saved result, less what has been expunged since.
            view = self.view
            return [u for u in self.saved_uids if u in view.by_uid]
        ranges = parse_sequence_set(bytes(token))
        return self.view.uids_at(resolve_sequence_set(ranges, self.view.uids, uid))

    # -- EXPUNGE ------------------------------------------------------------------------------

    async def _cmd_expunge(self, tag, name, args, uid):
        """EXPUNGE, and UID EXPUNGE (RFC 4315) limited to the UIDs given."""
        only = None
        if uid:
            if len(args) != 1:
                raise IMAPSyntaxError("UID EXPUNGE needs a UID set")
            only = self._target_uids(args[0], True)
        else:
            self._no_args(args)
        if self.view.readonly:
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        view = self.view
        if only is not None and not only:
            removed = []
        else:
            removed = await self.store.expunge(view.folder.id, only)
        known = [u for u in removed if u in view.by_uid]
        self._send_expunged(view.remove(known), known)
        code = b"[HIGHESTMODSEQ %d] " % view.highest_modseq if self.condstore else b""
        self.sendPositiveResponse(tag, code + b"EXPUNGE completed")

    # -- COPY, MOVE -----------------------------------------------------------------------------

    async def _cmd_copy(self, tag, name, args, uid):
        """COPY (RFC 3501) and MOVE (RFC 6851), with UIDPLUS's COPYUID (RFC 4315).

        The store does either in one transaction. MOVE reports COPYUID in an untagged OK
        before the EXPUNGEs, so the client learns the new UIDs before the old ones vanish.
        """
        if len(args) != 2:
            raise IMAPSyntaxError("%s needs a message set and a mailbox" % name.decode())
        uids = self._target_uids(args[0], uid)
        view = self.view
        target = await self.account.get_folder(self._mailbox_arg(args[1]))
        if target is None:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        moving = name == b"MOVE"
        if moving and view.readonly:
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        method = self.store.move_messages if moving else self.store.copy_messages
        try:
            result = await method(view.folder.id, uids, target.id)
        except NoSuchFolder:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        except OverQuota:
            self.sendNegativeResponse(tag, b"[OVERQUOTA] Mailbox is over its quota")
            return
        copyuid = b""
        if result:
            copyuid = b"[COPYUID %d %s %s] " % (
                result.uid_validity,
                format_uid_set(result.source_uids),
                format_uid_set(result.target_uids),
            )
        if moving:
            if copyuid:
                self.sendPositiveResponse(None, copyuid + b"Moved UIDs")
            if view is self.view:
                known = [u for u in result.source_uids if u in view.by_uid]
                self._send_expunged(view.remove(known), known)
            copyuid = b""
        if self.view is not None and self.view.folder.id == target.id:
            await self._report_changes(own=True)
        self.sendPositiveResponse(tag, copyuid + name + b" completed")

    # -- STORE ---------------------------------------------------------------------------------

    async def _cmd_store(self, tag, name, args, uid):
        args = list(args)
        unchanged_since = None
        if len(args) >= 2 and isinstance(args[1], list):
            # RFC 7162 3.1.3: STORE set (UNCHANGEDSINCE n) item flags
            modifiers = args.pop(1)
            if len(modifiers) != 2 or not (
                isinstance(modifiers[0], Atom) and modifiers[0].upper() == b"UNCHANGEDSINCE"
            ):
                raise IMAPSyntaxError("unknown STORE modifier")
            unchanged_since = _number(modifiers[1], "UNCHANGEDSINCE", zero=True)
        if len(args) < 3 or not isinstance(args[1], Atom):
            raise IMAPSyntaxError("STORE needs a sequence set, an item and flags")
        item = args[1].upper()
        silent = item.endswith(b".SILENT")
        base = item[: -len(b".SILENT")] if silent else item
        modes = {b"FLAGS": "=", b"+FLAGS": "+", b"-FLAGS": "-"}
        if base not in modes:
            raise IMAPSyntaxError("unknown STORE item")
        flag_tokens = args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:]
        flags = _parse_flags(flag_tokens)
        uids = self._target_uids(args[0], uid)
        view = self.view
        if view.readonly:
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        if unchanged_since is not None:
            self._enable_condstore()
        modified: list[int] = []
        changed_uids: set[int] = set()
        if uids:
            if unchanged_since is None:
                changed = await self.store.store_flags(view.folder.id, uids, flags, modes[base])
            else:
                result = await self.store.store_flags_unchanged_since(
                    view.folder.id, uids, flags, modes[base], unchanged_since
                )
                changed, modified = list(result.changed), list(result.modified)
            if view is not self.view:
                return
            changed_uids = set(view.update_rows(changed))
        failed = set(modified)
        for u in uids:
            if u not in view.by_uid or u in failed:
                continue
            row = view.row(u)
            uid_item = b" UID %d" % u if uid else b""
            if not silent:
                self.sendUntaggedResponse(
                    b"%d FETCH (FLAGS %s%s%s)"
                    % (view.seq(u), _flag_list(row.flags), uid_item, self._modseq_item(row))
                )
            elif self.condstore and u in changed_uids:
                # RFC 7162 3.1.3: the new MODSEQ is reported even for .SILENT.
                self.sendUntaggedResponse(
                    b"%d FETCH (%sMODSEQ (%d))" % (view.seq(u), uid_item[1:] + b" ", row.modseq)
                    if uid
                    else b"%d FETCH (MODSEQ (%d))" % (view.seq(u), row.modseq)
                )
        numbers = [u for u in modified if u in view.by_uid]
        if numbers:
            if not uid:
                numbers = [view.seq(u) for u in numbers]
            self.sendPositiveResponse(
                tag, b"[MODIFIED %s] Conditional STORE failed" % format_uid_set(sorted(numbers))
            )
            return
        self.sendPositiveResponse(tag, b"STORE completed")

    # -- SEARCH --------------------------------------------------------------------------------

    async def _cmd_search(self, tag, name, args, uid):
        view = self.view
        args = list(args)
        returns = None
        if args and isinstance(args[0], Atom) and args[0].upper() == b"RETURN":
            if len(args) < 2 or not isinstance(args[1], list):
                raise IMAPSyntaxError("RETURN needs a list of options")
            returns = _search_returns(args[1])
            args = args[2:]
        self._refuse_search_charset(args)
        saving = returns is not None and "SAVE" in returns
        try:
            program = compile_search(
                args, view.uids, self.saved_uids, int(self.clock.seconds() * 1_000_000_000)
            )
        except BadCharset:
            if saving:
                self.saved_uids = []
            self.sendNegativeResponse(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            return
        except IMAPSyntaxError:
            if saving:
                self.saved_uids = []
            raise
        if program.uses_modseq:
            self._enable_condstore()
        found = await self._search(program)
        if view is not self.view:
            return
        numbers = [c.row.uid if uid else c.seq for c in found]
        highest = max((c.row.modseq for c in found), default=0)
        if returns is None:
            line = b" ".join([b"SEARCH"] + [b"%d" % n for n in numbers])
            if program.uses_modseq and found:
                line += b" (MODSEQ %d)" % highest
            self.sendUntaggedResponse(line)
            self.sendPositiveResponse(tag, b"SEARCH completed")
            return
        if saving:
            keep = [c.row.uid for c in found]
            if found and ("MIN" in returns or "MAX" in returns):
                keep = sorted(
                    {found[0].row.uid if "MIN" in returns else None}
                    | {found[-1].row.uid if "MAX" in returns else None} - {None}
                )
            self.saved_uids = keep
        shown = [r for r in returns if r != "SAVE"]
        if saving and not shown:
            # RFC 5182: RETURN (SAVE) alone answers with no ESEARCH response.
            self.sendPositiveResponse(tag, b"SEARCH completed, result saved")
            return
        self.sendUntaggedResponse(
            self._esearch(tag, uid, shown, numbers, highest if program.uses_modseq else None)
        )
        self.sendPositiveResponse(tag, b"SEARCH completed")

    @staticmethod
    def _esearch(tag, uid, returns, numbers, modseq) -> bytes:
        """``ESEARCH (TAG "t") [UID] MIN/MAX/COUNT/ALL [MODSEQ]`` (RFC 4731, RFC 7162 3.1.5);
        MIN, MAX and ALL are left out when nothing matched, COUNT is always there."""
        parts = [b'ESEARCH (TAG "%s")' % tag]
        if uid:
            parts.append(b"UID")
        for option in returns:
            if option == "COUNT":
                parts.append(b"COUNT %d" % len(numbers))
            elif not numbers:
                continue
            elif option == "MIN":
                parts.append(b"MIN %d" % numbers[0])
            elif option == "MAX":
                parts.append(b"MAX %d" % numbers[-1])
            elif option == "ALL":
                parts.append(b"ALL " + format_uid_set(numbers))
        if modseq is not None and numbers:
            parts.append(b"MODSEQ %d" % modseq)
        return b" ".join(parts)

    async def _search(self, program, need_info=False) -> list[Candidate]:
        """The view's messages the program matches, in sequence order, with ``info`` loaded
        when the program (or ``need_info``: SORT, THREAD) asks for it: the whole
        ``MessageInfo``, or light rows with the few fields the keys read. With a SUBJECT
        string every match must contain, only the messages the store finds it may be in
        are tested (``store.subject_candidates``)."""
        view = self.view
        found = []
        full = program.needs_info or need_info
        fields = () if full else tuple(sorted(program.fields))
        loads = full or bool(fields)
        size = self.FETCH_BATCH if program.needs_text else self.SUMMARY_BATCH
        known: dict = {}  # UID -> light row already read, when it has every field needed
        if program.subject_prefilter is not None:
            candidates = await self.store.subject_candidates(
                view.folder.id, program.subject_prefilter
            )
            if view is not self.view:
                return []
            if fields == ("subject",):
                known = {summary.uid: summary for summary in candidates}
            where = view.view_rows.position
            matching = sorted(p for p in (where(c.uid) for c in candidates) if p >= 0)
            batches = (matching[k : k + size] for k in range(0, len(matching), size))
        else:
            batches = (range(k, min(k + size, view.exists)) for k in range(0, view.exists, size))
        for positions in batches:
            if isinstance(positions, range):
                rows = view.view_rows.rows_slice(positions.start, positions.stop)
            else:
                rows = [view.view_rows.row_at(p) for p in positions]
            batch = [row.uid for row in rows]
            infos = {}
            if known:
                infos = known
            elif full:
                pairs = await self.store.get_messages(view.folder.id, batch)
                infos = {mm.uid: info for mm, info in pairs}
            elif fields:
                summaries = await self.store.message_summaries(view.folder.id, batch, fields)
                infos = {summary.uid: summary for summary in summaries}
            if view is not self.view:
                return []
            candidates = [
                Candidate(seq=p + 1, row=row, info=infos.get(row.uid))
                for p, row in zip(positions, rows, strict=True)
                if not loads or row.uid in infos
            ]
            if program.needs_text:
                await self._load_texts(candidates)
            found.extend(c for c in candidates if program.predicate(c))
        return found

    #: Body bytes read at once for BODY/TEXT (each message at most ``SEARCH_TEXT_BYTES``).
    SEARCH_TEXT_CHUNK = 16 * 1024 * 1024

    async def _load_texts(self, candidates):
        """Set each candidate's ``text``: its extracts and up to ``SEARCH_TEXT_BYTES`` of its
        text parts (``search.text_ranges``), read in chunks of about ``SEARCH_TEXT_CHUNK``."""
        chunk, size = [], 0
        for c in [*candidates, None]:
            if c is not None:
                ranges = text_ranges(c.info, self.SEARCH_TEXT_BYTES)
                chunk.append((c, ranges))
                size += sum(length for _, length in ranges)
                if size < self.SEARCH_TEXT_CHUNK:
                    continue
            if not chunk:
                break
            pieces = await self.store.read_message_ranges([(c.info, ranges) for c, ranges in chunk])
            for (done, _), parts in zip(chunk, pieces, strict=True):
                extracts = (done.info.text_body_extract or "", done.info.html_body_extract or "")
                done.text = MessageText(" ".join(extracts), b"\n".join(parts))
            chunk, size = [], 0

    # -- FETCH ---------------------------------------------------------------------------------

    async def _cmd_fetch(self, tag, name, args, uid):
        if len(args) < 2:
            raise IMAPSyntaxError("FETCH needs a sequence set and items")
        args = list(args)
        changed_since, vanished = None, False
        if len(args) == 3 and isinstance(args[2], list):
            changed_since, vanished = self._fetch_modifiers(args.pop(), uid)
        items = fetchmod.parse_fetch_items(args[1:])
        if uid and "UID" not in items:
            items = ["UID"] + items
        if changed_since is not None or "MODSEQ" in items:
            self._enable_condstore()
        if (
            self.condstore
            and "MODSEQ" not in items
            and (changed_since is not None or "FLAGS" in items)
        ):
            items = items + ["MODSEQ"]
        uids = self._target_uids(args[0], uid)
        view = self.view
        if vanished:
            report = await self.store.vanished_report(view.folder.id, changed_since)
            gone = vanished_earlier(report, parse_sequence_set(bytes(args[0])), view)
            if gone:
                self.sendUntaggedResponse(b"VANISHED (EARLIER) " + gone)
        if changed_since is not None:
            uids = [u for u in uids if u in view.by_uid and view.row(u).modseq > changed_since]
        if fetchmod.summary_items(items) and (
            view.readonly or not any(fetchmod.sets_seen(i) for i in items)
        ):
            await self._fetch_summaries(view, uids, items)
            self.sendPositiveResponse(tag, b"FETCH completed")
            return
        needs_info = any(not isinstance(i, str) or i in fetchmod.INFO_ITEMS for i in items)
        sets_seen = not view.readonly and any(fetchmod.sets_seen(i) for i in items)
        for start in range(0, len(uids), self.FETCH_BATCH):
            batch = uids[start : start + self.FETCH_BATCH]
            if needs_info:
                pairs = await self.store.get_messages(view.folder.id, batch)
                if view is not self.view:
                    return
                view.update_rows(mm for mm, _ in pairs)
            else:
                pairs = [(view.row(u), None) for u in batch if u in view.by_uid]
            self._check_binary(items, [info for _, info in pairs])
            seen_now = set()
            if sets_seen:
                unseen = [mm.uid for mm, _ in pairs if not mm.read]
                if unseen:
                    changed = await self.store.store_flags(view.folder.id, unseen, ["\\Seen"], "+")
                    seen_now = set(view.update_rows(changed))
            for mm, info in pairs:
                if mm.uid not in view.by_uid:
                    continue
                row = view.row(mm.uid)
                await self._send_fetch(view.seq(row.uid), row, info, items, row.uid in seen_now)
        self.sendPositiveResponse(tag, b"FETCH completed")

    async def _fetch_summaries(self, view, uids, items):
        """FETCH of items answered from metadata alone (flags, UID, dates, sizes, ENVELOPE,
        BODY, BODYSTRUCTURE, stored header fields), one write per ``SUMMARY_BATCH`` messages.
        Row items come from the view, as the session knows them; message fields from light
        rows (``store.message_summaries``), which leave out a message another session
        expunged."""
        fields = fetchmod.summary_fields(items)
        flag_lists = _FlagLists()

        def item_bytes(item, row):
            if item == "FLAGS":
                return b"FLAGS " + flag_lists[row.flags]
            if isinstance(item, fetchmod.Section):
                return _header_fields_item(item, row.header_fields)
            return self._simple_item(item, row, row)

        for start in range(0, len(uids), self.SUMMARY_BATCH):
            batch = uids[start : start + self.SUMMARY_BATCH]
            if fields:
                rows = await self.store.message_summaries(view.folder.id, batch, fields)
                if view is not self.view:
                    return
                rows = [row for row in rows if row.uid in view.by_uid]
                if "header_fields" in fields:
                    rows = await self._stored_header_fallback(view, rows)
                    if view is not self.view:
                        return
                seqs = [view.seq(row.uid) for row in rows]
            else:
                run = view.rows_for(batch)
                if run is not None:
                    first, rows = run
                    seqs = range(first, first + len(rows))
                else:
                    rows = [view.row(u) for u in batch if u in view.by_uid]
                    seqs = [view.seq(row.uid) for row in rows]
            if fields:
                lines = [
                    b"* %d FETCH (%s)\r\n"
                    % (seq, b" ".join([item_bytes(item, row) for item in items]))
                    for seq, row in zip(seqs, rows, strict=True)
                ]
                self.transport.writeSequence(lines)
            else:
                self.transport.write(_row_item_lines(items, seqs, rows, flag_lists))

    async def _stored_header_fallback(self, view, rows):
        """``rows`` where each one without stored header lines (a message stored before they
        were kept, or one whose lines could not be) carries its whole header, read from the
        blob store for the batch at once: ``header_fields`` cuts the same bytes from it."""
        missing = [row.uid for row in rows if row.header_fields is None]
        if not missing:
            return rows
        infos = await self.store.message_summaries(
            view.folder.id, missing, ("header_size", "blob_key", "layout")
        )
        headers = await self.store.read_message_ranges(
            [(info, [(0, info.header_size)]) for info in infos]
        )
        found = {info.uid: data[0] for info, data in zip(infos, headers, strict=True)}
        out = []
        for row in rows:
            if row.header_fields is None:
                header = found.get(row.uid)
                if header is None:  # expunged meanwhile
                    continue
                row = row._replace(header_fields=header)
            out.append(row)
        return out

    def _fetch_modifiers(self, modifiers, uid):
        """``(CHANGEDSINCE n [VANISHED])`` (RFC 7162 3.1.4, 3.2.6): VANISHED only in UID
        FETCH, with CHANGEDSINCE, once QRESYNC is enabled."""
        changed_since, vanished = None, False
        i = 0
        while i < len(modifiers):
            word = modifiers[i]
            if not isinstance(word, Atom):
                raise IMAPSyntaxError("invalid FETCH modifier")
            word = word.upper()
            if word == b"CHANGEDSINCE" and changed_since is None and i + 1 < len(modifiers):
                changed_since = _number(modifiers[i + 1], "CHANGEDSINCE", zero=True)
                i += 2
            elif word == b"VANISHED" and not vanished:
                vanished = True
                i += 1
            else:
                raise IMAPSyntaxError("unknown FETCH modifier")
        if vanished and (not uid or changed_since is None or not self.qresync):
            raise IMAPSyntaxError("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
        if changed_since is None:
            raise IMAPSyntaxError("FETCH modifiers need CHANGEDSINCE")
        return changed_since, vanished

    async def _send_fetch(self, seq, row, info, items, flags_changed):
        binary = await self._prepare_binary(items, info)
        try:
            await self._send_fetch_items(seq, row, info, items, flags_changed, binary)
        finally:
            if binary is not None:
                binary.close()

    async def _send_fetch_items(self, seq, row, info, items, flags_changed, binary):
        out = [b"* %d FETCH (" % seq]
        first = True
        if flags_changed and "FLAGS" not in items:
            items = list(items) + ["FLAGS"]
            if self.condstore and "MODSEQ" not in items:
                items.append("MODSEQ")
        self._in_response = True
        for item in items:
            if not first:
                out.append(b" ")
            first = False
            if isinstance(item, str):
                out.append(self._simple_item(item, row, info))
                continue
            if isinstance(item, fetchmod.BinarySection):
                out = await self._write_binary(out, item, binary)
                continue
            label, data, blob_range = await self._section(item, row, info)
            if data is not None:
                out.append(b"%s {%d}\r\n" % (label, len(data)))
                out.append(data)
            else:
                start, length = blob_range
                out.append(b"%s {%d}\r\n" % (label, length))
                self.transport.writeSequence(out)
                out = []
                if length:
                    await self._stream_message(info, start, length)
        out.append(b")\r\n")
        self.transport.writeSequence(out)
        self._in_response = False

    def _simple_item(self, item, row, info) -> bytes:
        if item == "FLAGS":
            return b"FLAGS " + _flag_list(row.flags)
        if item == "UID":
            return b"UID %d" % row.uid
        if item == "MODSEQ":
            return b"MODSEQ (%d)" % row.modseq
        if item == "INTERNALDATE":
            return b"INTERNALDATE " + format_internal_date(row.internal_date)
        if item == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % row.size_bytes
        if item == "ENVELOPE":
            return b"ENVELOPE " + _wire(
                info.envelope or "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
            )
        if item == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + _wire(info.bodystructure or _fallback_structure(info))
        if item == "BODY":
            return b"BODY " + _wire(info.body or _fallback_structure(info))
        raise AssertionError(item)

    async def _section(self, section, row, info):
        """``(label, bytes or None, (start, length) or None)`` for one body section."""
        size = info.size_bytes
        header_size = info.header_size
        store = self.store
        data = None
        span = None
        no_header = False
        if not section.part:
            if section.kind == "":
                span = (0, size)
            elif section.kind == "TEXT":
                span = (header_size, size - header_size)
            else:
                data = await store.read_message(info, 0, header_size)
        else:
            key = ".".join(str(p) for p in section.part)
            part = (info.parts or {}).get(key)
            if part is None and section.part == (1,) and not _is_multipart(info):
                part = {"header_start": 0, "body_start": header_size, "end": size}
            if part is None:
                data, no_header = b"", True
            elif section.kind == "":
                span = (part["body_start"], part["end"] - part["body_start"])
            elif section.kind == "MIME":
                data = await store.read_message(
                    info, part["header_start"], part["body_start"] - part["header_start"]
                )
            elif "text_start" in part:
                # HEADER / TEXT of the message inside a message/rfc822 part.
                if section.kind == "TEXT":
                    span = (part["text_start"], part["end"] - part["text_start"])
                else:
                    data = await store.read_message(
                        info, part["body_start"], part["text_start"] - part["body_start"]
                    )
            elif _encapsulates(part):
                length = part["end"] - part["body_start"]
                head = await store.read_message(info, part["body_start"], min(length, 65536))
                end = fetchmod.find_header_end(head)
                end = len(head) if end is None else end
                if section.kind == "TEXT":
                    span = (part["body_start"] + end, length - end)
                else:
                    data = head[:end]
            else:
                # RFC 3501 6.4.5: HEADER and TEXT after a part number name the message of a
                # message/rfc822 part; any other part has neither.
                data, no_header = b"", True
        if data is not None and not no_header and section.kind.startswith("HEADER.FIELDS"):
            data = fetchmod.header_fields(data, section.fields, section.kind.endswith(".NOT"))
        label = section.label
        if section.partial is not None:
            label += b"<%d>" % section.partial[0]
        if data is not None:
            offset, count = fetchmod.window(len(data), section.partial)
            return label, data[offset : offset + count], None
        offset, count = fetchmod.window(span[1], section.partial)
        return label, None, (span[0] + offset, count)

    async def _stream_message(self, info, start, length):
        f = await self.store.open_message(info)
        try:
            if start:
                f.seek(start)
            await _RangeSender(f, length, self.transport).start()
        finally:
            f.close()

    # -- APPEND --------------------------------------------------------------------------------

    async def _cmd_append(self, tag, name, args, uid):
        if len(args) < 2:
            raise IMAPSyntaxError("APPEND needs a mailbox and a message literal")
        messages = self._append_messages(await self._utf8_append_args(args[1:]))
        for flag_tokens, _, _ in messages:
            _parse_flags(flag_tokens or [])
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        if folder is None:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        if len(messages) > 1:
            await self._append_batch(tag, folder, messages, _parse_flags)
            return
        [(flag_tokens, internal_date, message)] = messages
        flags = _parse_flags(flag_tokens or [])
        trace_id = str(ULID())
        try:
            placed = await self.store.deliver(
                message.path,
                [
                    Delivery(
                        mailbox_id=self.account.mailbox_id, folder=folder.name, flags=tuple(flags)
                    )
                ],
                trace_id=trace_id,
                internal_date=internal_date,
            )
        except OverQuota:
            self.sendNegativeResponse(tag, b"[OVERQUOTA] Mailbox is over its quota")
            return
        except ValueError:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        self._log.info(
            "APPEND of {size} bytes to {folder}",
            size=message.size,
            folder=folder.name,
            mailbox_id=self.account.mailbox_id,
            trace_id=trace_id,
        )
        if self.view is not None and self.view.folder.id == folder.id:
            await self._report_changes(own=True)
        [mm] = placed
        uid_validity = folder.uid_validity
        if mm.folder_id != folder.id:  # renamed or re-created in between
            current = await self.store.get_folder_by_id(mm.folder_id)
            uid_validity = current.uid_validity if current else uid_validity
        self.sendPositiveResponse(
            tag, b"[APPENDUID %d %d] APPEND completed" % (uid_validity, mm.uid)
        )

    # -- UID -----------------------------------------------------------------------------------

    async def _cmd_uid(self, tag, name, args, uid):
        raise IMAPSyntaxError("UID needs a command")


_EMPTY_ENVELOPE = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


class _FlagLists(dict):
    """``flags tuple -> b"(\\Seen $x)"``, made the first time a tuple is asked for."""

    def __missing__(self, flags):
        value = self[flags] = _flag_list(flags)
        return value


#: How each row item is written, and what of the row it writes.
_ROW_ITEM_FORMATS = {
    "UID": (b"UID %d", operator.attrgetter("uid")),
    "FLAGS": (b"FLAGS %s", None),
    "MODSEQ": (b"MODSEQ (%d)", operator.attrgetter("modseq")),
    "RFC822.SIZE": (b"RFC822.SIZE %d", operator.attrgetter("size_bytes")),
    "INTERNALDATE": (b"INTERNALDATE %s", None),
}
_ROW_FLAGS = operator.attrgetter("flags")
_ROW_DATE = operator.attrgetter("internal_date")


def _row_item_lines(items, seqs, rows, flag_lists: _FlagLists) -> bytes:
    """The FETCH responses for ``rows`` (at sequence numbers ``seqs``) of row items alone
    (UID, FLAGS, MODSEQ, RFC822.SIZE, INTERNALDATE), as one string: a column of values per
    item and one format for every line, so the work per message is a ``%`` and no Python
    call (flag lists are made once per distinct set of flags)."""
    columns = [seqs]
    parts = []
    for item in items:
        part, get = _ROW_ITEM_FORMATS[item]
        parts.append(part)
        if item == "FLAGS":
            columns.append(list(map(flag_lists.__getitem__, map(_ROW_FLAGS, rows))))
        elif item == "INTERNALDATE":
            columns.append(list(map(format_internal_date, map(_ROW_DATE, rows))))
        else:
            columns.append(list(map(get, rows)))
    line = b"* %d FETCH (" + b" ".join(parts) + b")\r\n"
    return b"".join([line % values for values in zip(*columns, strict=True)])


def _header_fields_item(section, header) -> bytes:
    """``BODY[HEADER.FIELDS (...)]<origin> {n}`` and its bytes, cut from ``header`` (the
    stored lines, or the whole header): as ``_section`` would from the blob."""
    data = fetchmod.header_fields(header, section.fields, False)
    label = section.label
    if section.partial is not None:
        label += b"<%d>" % section.partial[0]
    offset, count = fetchmod.window(len(data), section.partial)
    return b"%s {%d}\r\n%s" % (label, count, data[offset : offset + count])


def _number(token, what: str, zero=False) -> int:
    if not isinstance(token, Atom) or not token.isdigit() or len(token) > 20:
        raise IMAPSyntaxError("%s must be a number" % what)
    value = int(token)
    if value >= 2**63 or (value == 0 and not zero):
        raise IMAPSyntaxError("%s out of range" % what)
    return value


def _uid_ranges(token):
    if not isinstance(token, Atom):
        raise IMAPSyntaxError("UID set expected")
    return parse_sequence_set(bytes(token))


def _in_ranges(uid: int, ranges) -> bool:
    """Whether ``uid`` is in a UID set given by the client, ``*`` reaching upwards without end
    (what the client knew of is at most what existed then)."""
    for low, high in ranges:
        if low is None and high is None:
            return True
        if low is None or high is None:
            if uid >= (high if low is None else low):
                return True
            continue
        if min(low, high) <= uid <= max(low, high):
            return True
    return False


def _qresync_param(params):
    """``(uidvalidity, modseq, known uid ranges or None, (seq ranges, uid ranges) or None)``;
    the sequence match data narrows the answer once ``expunged_uids`` was pruned past the
    client's MODSEQ (imap/qresync.py)."""
    if len(params) < 2 or len(params) > 4:
        raise IMAPSyntaxError("QRESYNC needs (uidvalidity modseq [known-uids [seq-match]])")
    uid_validity = _number(params[0], "uidvalidity")
    modseq = _number(params[1], "modseq")
    known = _uid_ranges(params[2]) if len(params) >= 3 else None
    if known is not None and any(low is None or high is None for low, high in known):
        raise IMAPSyntaxError("known-uids must not contain *")
    seq_match = None
    if len(params) == 4:
        match = params[3]
        if not isinstance(match, list) or len(match) != 2:
            raise IMAPSyntaxError("sequence match data is (seqs uids)")
        seq_match = (_uid_ranges(match[0]), _uid_ranges(match[1]))
    return uid_validity, modseq, known, seq_match


_SEARCH_RETURNS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


def _search_returns(tokens) -> list[str]:
    """ESEARCH's RETURN options (RFC 4731) and SEARCHRES's SAVE (RFC 5182); ``()`` is ALL."""
    returns = []
    for token in tokens:
        if not isinstance(token, Atom) or token.upper().decode("ascii", "replace") not in (
            _SEARCH_RETURNS
        ):
            raise IMAPSyntaxError("unknown SEARCH RETURN option")
        option = token.upper().decode()
        if option not in returns:
            returns.append(option)
    return returns or ["ALL"]


def _sentence(text: str) -> bytes:
    """An exception's text as a response text: first letter capitalised, names untouched."""
    return (text[:1].upper() + text[1:]).encode("utf-8", "replace")


def _kib(size: int) -> int:
    """RFC 9208 counts storage in units of 1024 octets; a started unit counts."""
    return (size + 1023) // 1024


def _encapsulates(part) -> bool:
    """A part typed as a message that the parser kept as a leaf (nested deeper than it
    descends), so its entry has no ``text_start``: the header end is found by scanning."""
    return (part.get("type") or "").lower() in ("message/rfc822", "message/global")


def _is_multipart(info) -> bool:
    return (info.bodystructure or "").startswith("((")


def _fallback_structure(info) -> str:
    body = max(info.size_bytes - info.header_size, 0)
    return '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" %d 0)' % body


class IMAPFactory(protocol.ServerFactory):
    """Builds an ``IMAPServer`` per connection with the configuration current at that moment.

    ``throttle`` is the ``LoginThrottle`` shared with the other listeners (the hub passes one);
    without it the factory makes its own on ``reactor``. ``tls`` (a ``TLSService``) turns on
    STARTTLS and, until it is used, LOGINDISABLED. ``sessions`` (a ``PeerCounter``) counts
    logged-in sessions per address against ``imap.max_connections_per_ip``; the hub gives the
    143 and 993 listeners one.
    """

    protocol = IMAPServer

    def __init__(
        self, get_config, store, reactor, spool_dir=None, throttle=None, tls=None, sessions=None
    ):
        self.get_config = get_config
        #: Logged-in sessions per address, shared by the listeners the hub gives it to.
        self.sessions = sessions if sessions is not None else PeerCounter()
        self.tls = tls
        self.store = store
        self.reactor = reactor
        self.spool_dir = spool_dir
        self.throttle = throttle if throttle is not None else LoginThrottle(store, reactor)
        #: ``run_blocking(fn, *args) -> Deferred``: where BINARY's decoding pass runs.
        self.run_blocking = blocking_runner(reactor)
        #: One change-bus subscription per mailbox for all of this factory's sessions.
        self.fanout = ChangeFanout(store)
        self.portal = ThrottledPortal(
            Portal(IMAPRealm(store), [AppPasswordChecker(store, "imap")]), self.throttle
        )

    def buildProtocol(self, addr):
        config = self.get_config()
        spool_dir = self.spool_dir
        if spool_dir is None:
            candidate = os.path.join(config.data_dir, "spool")
            spool_dir = candidate if os.path.isdir(candidate) else None
        p = self.protocol(
            config,
            self.store,
            self.portal,
            self.reactor,
            spool_dir=spool_dir,
            tls=self.tls,
            fanout=self.fanout,
        )
        p.factory = self
        p.run_blocking = self.run_blocking
        p.sessions = self.sessions
        return p


__all__ = ["IMAPServer", "IMAPFactory"]
