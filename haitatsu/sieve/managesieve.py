"""ManageSieve (RFC 5804): Sieve clients manage a mailbox's scripts on ``managesieve.addr``.

Commands: CAPABILITY, STARTTLS (when TLS is configured), AUTHENTICATE (SASL PLAIN with the
mailbox's address and an app password with the ``sieve`` scope; only after STARTTLS when TLS is
configured), LOGOUT, NOOP, HAVESPACE, PUTSCRIPT, CHECKSCRIPT, LISTSCRIPTS, SETACTIVE, GETSCRIPT,
DELETESCRIPT and RENAMESCRIPT. Arguments are atoms, quoted strings or literals (``{N}`` and
``{N+}``, both taken without a continuation: RFC 5804 section 4 has the client send them at
once). Scripts are checked as over REST (``haitatsu.sieve.compile_script``), with the same
limits (``sieve.max_script_bytes``, ``sieve.max_scripts``) and the same store.

A malformed command gets ``NO`` and the session goes on; a literal too big is read and thrown
away (the client sends it without waiting), then refused. Failed logins count in the login
throttle every listener shares.
"""

from __future__ import annotations

import base64
import binascii
import re

from twisted.cred import credentials
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, threads
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from zope.interface import Interface, implementer

from haitatsu.auth.checker import AppPasswordChecker
from haitatsu.auth.throttle import LoginThrottle, ThrottledPortal
from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.sieve.grammar import (
    EXTENSIONS,
    SieveSyntaxError,
    compile_script,
    valid_script_name,
)
from haitatsu.storage.store.sieve import NoSuchScript, ScriptIsActive
from haitatsu.tls import is_secure

#: The app password scope ManageSieve logins need.
SCOPE = "sieve"
#: Longest command line (literals aside).
MAX_LINE = 8192
#: Syntax errors before the server says BYE.
MAX_ERRORS = 10
#: Commands waiting behind the one running before the server says BYE.
MAX_PIPELINED = 64


class IManageSieveAccount(Interface):
    """What a ManageSieve login yields: the mailbox id."""


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        mailbox_id = avatar_id.decode("ascii") if isinstance(avatar_id, bytes) else avatar_id
        return IManageSieveAccount, mailbox_id, lambda: None


class CommandError(Exception):
    """Answer ``NO`` (with ``code`` in parentheses when given) and go on."""

    def __init__(self, text: str, code: str = ""):
        super().__init__(text)
        self.text = text
        self.code = code


def quoted(text: str) -> bytes:
    """A quoted string (RFC 5804 section 4), or a literal for text a quoted string cannot
    carry (line ends, or longer than 1024 octets)."""
    data = text.encode("utf-8")
    if b"\r" in data or b"\n" in data or b"\x00" in data or len(data) > 1024:
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_TOKEN = re.compile(rb'\s*(?:"((?:[^"\\\r\n]|\\.)*)"|\{(\d{1,10})(\+?)\}$|([^\s"{}()]+))')


def tokenize(line: bytes):
    """Split one line into ``(strings, literal)``: the quoted strings and atoms, and the size
    of the literal it ends with (None when it ends without one). ``CommandError`` if it does
    not parse."""
    out = []
    pos = 0
    line = line.rstrip(b" ")
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None or m.end() == pos:
            raise CommandError("syntax error")
        pos = m.end()
        if m.group(1) is not None:
            value = re.sub(rb"\\(.)", rb"\1", m.group(1))
            out.append(_text(value))
        elif m.group(2) is not None:
            return out, int(m.group(2))
        else:
            out.append(_text(m.group(4)))
    return out, None


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("strings must be UTF-8") from None


class ManageSieveProtocol(LineReceiver, TimeoutMixin):
    delimiter = b"\r\n"
    MAX_LENGTH = MAX_LINE
    _log = Logger()

    def __init__(self, config, store, portal, tls=None):
        self.config = config
        self.store = store
        self.portal = portal
        self.tls = tls
        self.mailbox_id: str | None = None
        self._args: list = []
        self._literal_left = 0
        self._literal: list[bytes] = []
        self._literal_discard = False
        self._busy = False
        self._queue: list = []
        self._errors = 0
        self._lost = False
        self._sasl: tuple | None = None  # waiting for the client's SASL response
        self.remote_ip = ""

    # -- connection -----------------------------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.remote_ip = getattr(peer, "host", "")
        self.setTimeout(self.config.managesieve.idle_timeout_seconds or None)
        self.send_capabilities()
        self.ok("haitatsu ManageSieve ready")

    def connectionLost(self, reason=None):
        self._lost = True
        self.setTimeout(None)
        self._queue.clear()

    def timeoutConnection(self):
        self.bye("idle for too long", "TRYLATER")

    @property
    def secure(self) -> bool:
        return is_secure(self.transport)

    def tls_available(self) -> bool:
        return self.tls is not None and not self.secure

    def login_allowed(self) -> bool:
        return self.tls is None or self.secure

    # -- answers --------------------------------------------------------------------------

    def send(self, data: bytes):
        self.transport.write(data)

    def answer(self, kind: bytes, text: str = "", code: str = ""):
        line = kind
        if code:
            line += b" (" + code.encode("utf-8") + b")"
        if text:
            line += b" " + quoted(text)
        self.send(line + b"\r\n")

    def ok(self, text="", code=""):
        self.answer(b"OK", text, code)

    def no(self, text="", code=""):
        self.answer(b"NO", text, code)

    def bye(self, text="", code=""):
        self.answer(b"BYE", text, code)
        self.transport.loseConnection()

    def send_capabilities(self):
        lines = [
            ("IMPLEMENTATION", "haitatsu"),
            ("SIEVE", " ".join(EXTENSIONS)),
            ("MAXREDIRECTS", "4"),
            ("VERSION", "1.0"),
        ]
        if self.mailbox_id is None and self.login_allowed():
            lines.insert(1, ("SASL", "PLAIN"))
        if self.tls_available() and self.tls.available:
            lines.append(("STARTTLS", None))
        if self.mailbox_id is not None:
            lines.append(("OWNER", self.mailbox_id))
        for name, value in lines:
            line = quoted(name)
            if value is not None:
                line += b" " + quoted(value)
            self.send(line + b"\r\n")

    # -- input ----------------------------------------------------------------------------

    def lineReceived(self, line: bytes):
        self.resetTimeout()
        if self._sasl is not None:
            waiting, self._sasl = self._sasl, None
            self._run(self._sasl_response, line, *waiting)
            return
        try:
            strings, literal = tokenize(line)
        except CommandError as e:
            self._args = []
            self._syntax_error(str(e))
            return
        self._args.extend(strings)
        if literal is None:
            args, self._args = self._args, []
            if args:
                self._run(self._command, args)
            elif line.strip():
                self._syntax_error("syntax error")
            return
        limit = self.config.sieve.max_script_bytes
        self._literal_left = literal
        self._literal = []
        self._literal_discard = literal > limit
        if literal == 0:
            self._args.append("")
            return
        self.setRawMode()

    def rawDataReceived(self, data: bytes):
        self.resetTimeout()
        take, rest = data[: self._literal_left], data[self._literal_left :]
        self._literal_left -= len(take)
        if not self._literal_discard:
            self._literal.append(take)
        if self._literal_left > 0:
            return
        if self._literal_discard:
            self._args.append(None)  # too big: refused when the command ends
        else:
            try:
                self._args.append(b"".join(self._literal).decode("utf-8"))
            except UnicodeDecodeError:
                self._args.append(None)
        self._literal = []
        self.setLineMode(rest)

    def lineLengthExceeded(self, line):
        self.bye("line too long")

    def _syntax_error(self, text: str):
        self._errors += 1
        if self._errors >= MAX_ERRORS:
            self.bye("too many errors")
            return
        self.no(text)

    def _run(self, fn, *args):
        """Commands run one at a time, in order (a client may pipeline them, within reason)."""
        if len(self._queue) >= MAX_PIPELINED:
            self.bye("too many commands pipelined")
            return
        self._queue.append((fn, args))
        if not self._busy:
            self._next()

    def _next(self):
        if not self._queue or self._lost:
            self._busy = False
            return
        self._busy = True
        fn, args = self._queue.pop(0)
        d = defer.Deferred.fromCoroutine(fn(*args))
        d.addErrback(self._failed)
        d.addBoth(lambda _: self._next())

    def _failed(self, failure):
        if failure.check(StorageUnavailable):
            self.no("storage is temporarily unavailable", "TRYLATER")
            return
        self._log.failure("ManageSieve command failed", failure, remote_ip=self.remote_ip)
        self.no("internal error", "TRYLATER")

    # -- commands -------------------------------------------------------------------------

    async def _command(self, args):
        name = (args[0] or "").upper()
        args = args[1:]
        handler = getattr(self, f"cmd_{name.lower()}", None) if name.isalpha() else None
        if handler is None:
            self._syntax_error(f"unknown command {name[:32]!r}")
            return
        if name not in ("CAPABILITY", "AUTHENTICATE", "STARTTLS", "LOGOUT", "NOOP"):
            if self.mailbox_id is None:
                self.no("authenticate first")
                return
        if any(a is None for a in args):
            self.no("script too big or not UTF-8", "QUOTA/MAXSIZE")
            return
        try:
            await handler(*args)
        except TypeError:
            self._syntax_error(f"wrong arguments for {name}")
        except CommandError as e:
            self.no(e.text, e.code)

    async def cmd_capability(self):
        self.send_capabilities()
        self.ok()

    async def cmd_noop(self, tag=None):
        if tag is not None:
            self.ok("Done", "TAG " + quoted(tag).decode("utf-8"))
        else:
            self.ok("Done")

    async def cmd_logout(self):
        self.ok("Logout")
        self.transport.loseConnection()

    async def cmd_starttls(self):
        if not self.tls_available():
            raise CommandError("TLS is not available" if not self.secure else "TLS is on")
        if not self.tls.available:
            raise CommandError("TLS is temporarily unavailable", "TRYLATER")
        self.ok("Begin TLS negotiation now")
        # Anything pipelined behind STARTTLS came in the clear: never run it.
        self._args = []
        self._queue.clear()
        self.clearLineBuffer()
        self.transport.startTLS(self.tls)
        # RFC 5804 2.2: the capabilities again, over TLS.
        self.send_capabilities()
        self.ok("TLS is on")

    async def cmd_authenticate(self, mechanism, initial=None):
        if self.mailbox_id is not None:
            raise CommandError("already authenticated")
        if not self.login_allowed():
            raise CommandError("use STARTTLS first", "ENCRYPT-NEEDED")
        if mechanism.upper() != "PLAIN":
            raise CommandError("only SASL PLAIN is offered")
        if initial is None:
            self._sasl = (mechanism,)
            self.send(b'""\r\n')
            return
        await self._plain(initial)

    async def _sasl_response(self, line: bytes, mechanism):
        try:
            strings, literal = tokenize(line)
        except CommandError:
            strings, literal = [], None
        if literal is not None or len(strings) != 1:
            self.no("expected the SASL response as a string")
            return
        if strings[0] == "*":
            self.no("authentication cancelled")
            return
        await self._plain(strings[0])

    async def _plain(self, encoded: str):
        try:
            raw = base64.b64decode(encoded.encode("ascii"), validate=True)
            authzid, authcid, password = raw.decode("utf-8").split("\x00")
        except (binascii.Error, ValueError, UnicodeError):
            raise CommandError("malformed SASL PLAIN response") from None
        if authzid and authzid.lower() != authcid.lower():
            raise CommandError("authorization identity must be the login", "AUTH-TOO-WEAK")
        creds = credentials.UsernamePassword(authcid.encode("utf-8"), password.encode("utf-8"))
        try:
            _, mailbox_id, _ = await self.portal.login(
                creds, None, IManageSieveAccount, remote_ip=self.remote_ip
            )
        except (LoginFailed, UnauthorizedLogin):
            self._log.info("ManageSieve login failed from {remote_ip}", remote_ip=self.remote_ip)
            raise CommandError("authentication failed") from None
        self.mailbox_id = mailbox_id
        self.ok("logged in")

    async def _check(self, content: str):
        try:
            await threads.deferToThread(compile_script, content, self.config.sieve.max_script_bytes)
        except SieveSyntaxError as e:
            code = "QUOTA/MAXSIZE" if "over the limit" in e.message else ""
            raise CommandError(str(e), code) from None

    async def cmd_havespace(self, name, size):
        if not size.isdigit():
            raise CommandError("size must be a number")
        limits = self.config.sieve
        if int(size) > limits.max_script_bytes:
            raise CommandError(
                f"scripts are limited to {limits.max_script_bytes} octets", "QUOTA/MAXSIZE"
            )
        await self._room_for(name)
        self.ok()

    async def _room_for(self, name):
        limits = self.config.sieve
        if await self.store.get_sieve_script(self.mailbox_id, name) is None:
            count, _ = await self.store.sieve_space_used(self.mailbox_id)
            if count >= limits.max_scripts:
                raise CommandError(f"at most {limits.max_scripts} scripts", "QUOTA/MAXSCRIPTS")

    def _name(self, name):
        if not valid_script_name(name):
            raise CommandError("invalid script name")
        return name

    async def cmd_putscript(self, name, content):
        self._name(name)
        await self._check(content)
        await self._room_for(name)
        await self.store.put_sieve_script(self.mailbox_id, name, content)
        self.ok()

    async def cmd_checkscript(self, content):
        await self._check(content)
        self.ok()

    async def cmd_listscripts(self):
        for script in await self.store.list_sieve_scripts(self.mailbox_id):
            line = quoted(script.name)
            if script.active:
                line += b" ACTIVE"
            self.send(line + b"\r\n")
        self.ok()

    async def cmd_setactive(self, name):
        try:
            await self.store.activate_sieve_script(self.mailbox_id, name)
        except NoSuchScript:
            raise CommandError("there is no such script", "NONEXISTENT") from None
        self.ok()

    async def cmd_getscript(self, name):
        script = await self.store.get_sieve_script(self.mailbox_id, name)
        if script is None:
            raise CommandError("there is no such script", "NONEXISTENT")
        data = script.content.encode("utf-8")
        self.send(b"{%d}\r\n" % len(data) + data + b"\r\n")
        self.ok()

    async def cmd_deletescript(self, name):
        try:
            await self.store.delete_sieve_script(self.mailbox_id, name)
        except NoSuchScript:
            raise CommandError("there is no such script", "NONEXISTENT") from None
        except ScriptIsActive:
            raise CommandError("the active script cannot be deleted", "ACTIVE") from None
        self.ok()

    async def cmd_renamescript(self, old, new):
        self._name(new)
        try:
            await self.store.rename_sieve_script(self.mailbox_id, old, new)
        except NoSuchScript:
            raise CommandError("there is no such script", "NONEXISTENT") from None
        except Conflict:
            raise CommandError("a script of that name exists", "ALREADYEXISTS") from None
        self.ok()


class ManageSieveFactory(ServerFactory):
    """One ``ManageSieveProtocol`` per connection, with the configuration live at that moment.
    ``tls`` (a ``TLSService``) turns on STARTTLS and, until it is used, refuses AUTHENTICATE."""

    protocol = ManageSieveProtocol

    def __init__(self, get_config, store, reactor, throttle=None, tls=None):
        self.get_config = get_config
        self.store = store
        self.reactor = reactor
        self.tls = tls
        throttle = throttle if throttle is not None else LoginThrottle(store, reactor)
        self.portal = ThrottledPortal(
            Portal(_Realm(), [AppPasswordChecker(store, SCOPE)]), throttle
        )

    def buildProtocol(self, addr):
        proto = self.protocol(self.get_config(), self.store, self.portal, tls=self.tls)
        proto.factory = self
        return proto
