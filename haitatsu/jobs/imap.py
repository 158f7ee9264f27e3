"""Importing from an IMAP server through Twisted's IMAP4 client.

The source (API.md 1.13) names ``addr`` (``host:port``), ``username``, ``password``, optionally
``mailbox`` or ``mailboxes`` (only those folders), ``tls`` (implicit TLS, the default; ``false``
is plaintext), ``starttls`` (plaintext, then STARTTLS) and ``skip_verify`` (do not check the
server's certificate). The certificate is otherwise checked against the system's trust store
for the host name.

After LOGIN, ``LIST "" "*"`` gives the folders with their hierarchy delimiter and SPECIAL-USE
attributes; each selectable folder is opened with EXAMINE (read-only: nothing changes on the
server, no ``\\Seen`` is set), its UIDs and sizes are fetched, then its messages in batches of
``UID FETCH (UID FLAGS INTERNALDATE BODY.PEEK[])``. The client writes each ``BODY[]`` literal
straight into a spool file as it arrives (``SpoolingIMAP4Client``), so a message is never held
in memory; the parsed response carries a short token in its place. A message larger than the
import's size limit is not fetched. The resume marker is ``{"uidvalidity", "uid"}``: a retried
import continues after the last UID it stored, unless the folder's UIDVALIDITY changed.
"""

from __future__ import annotations

import calendar
import datetime
import os
import re
from contextlib import aclosing

from twisted.internet import defer, endpoints, error, ssl
from twisted.mail import imap4
from twisted.python.failure import Failure

from haitatsu.jobs import spool
from haitatsu.jobs.common import SourceError, SourceFolder, SourceMessage
from haitatsu.jobs.folders import import_order, skipped
from haitatsu.jobs.sources import imap_address

#: Messages per ``UID FETCH`` of bodies, and the most bytes (by RFC822.SIZE) one batch asks for.
BATCH_MESSAGES = 25
BATCH_BYTES = 32 * 1024 * 1024

#: Seconds without a byte from the server before the connection is given up.
IDLE_TIMEOUT_SECONDS = 120
CONNECT_TIMEOUT_SECONDS = 30

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


_INTERNAL_DATE = re.compile(
    r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*"
)


def parse_internal_date(text) -> int | None:
    """``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time) as nanoseconds, or None."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(
        r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*", text
    )
    if m is None or m.group(2).title() not in _MONTHS:
        return None
    day, year = int(m.group(1)), int(m.group(3))
    hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
    try:
        when = datetime.datetime(year, _MONTHS[m.group(2).title()], day, hour, minute, second)
    except ValueError:
        return None
    seconds = calendar.timegm(when.timetuple())
    offset = int(m.group(8)) * 3600 + int(m.group(9)) * 60
    seconds -= offset if m.group(7) == "+" else -offset
    return seconds * 1_000_000_000


def _wanted_name(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name


def quoted(text: str) -> bytes:
    """An IMAP quoted string (the source check refused CR, LF and NUL)."""
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"'


def uid_set(uids) -> bytes:
    return ",".join(str(u) for u in uids).encode("ascii")


class SpoolingIMAP4Client(imap4.IMAP4Client):
    """``IMAP4Client`` that, while ``spooling`` is on, writes every literal into a spool file
    instead of memory and hands the parser a token (``spool:<n>``) in its place; ``spooled``
    maps tokens to files. ``greeted`` fires with the server's greeting."""

    timeout = IDLE_TIMEOUT_SECONDS

    def __init__(self, spool_dir: str, context_factory=None):
        super().__init__(context_factory)
        self.spool_dir = spool_dir
        self.spooling = False
        self.spooled: dict[str, str] = {}
        self.greeted = defer.Deferred()
        self.lost = defer.Deferred()
        self._spool = None
        self._token = b""

    def serverGreeting(self, caps):
        if not self.greeted.called:
            self.greeted.callback(caps)

    def connectionLost(self, reason):
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        super().connectionLost(reason)
        if not self.greeted.called:
            self.greeted.errback(reason)
        if not self.lost.called:
            self.lost.callback(None)

    def _setupForLiteral(self, rest, octets):
        if not self.spooling:
            return super()._setupForLiteral(rest, octets)
        self._spool, path = spool.new_spool_file(self.spool_dir, "imap-import-")
        self._token = f"spool:{len(self.spooled)}".encode("ascii")
        self.spooled[self._token.decode("ascii")] = path
        # The parser sees a literal of the token's length, and then the token: what the
        # stock method does, with no buffer of the literal's size.
        rest = rest[: rest.rfind(b"{")] + b"{%d}" % len(self._token)
        self._pendingBuffer = None
        self._pendingSize = octets
        if self._parts is None:
            self._parts = [rest, b"\r\n"]
        else:
            self._parts.extend([rest, b"\r\n"])
        self.setRawMode()
        return None

    def rawDataReceived(self, data):
        if self._spool is None:
            return super().rawDataReceived(data)
        if self.timeout > 0:
            self.resetTimeout()
        self._pendingSize -= len(data)
        if self._pendingSize > 0:
            self._spool.write(data)
            return None
        passon = b""
        if self._pendingSize < 0:
            data, passon = data[: self._pendingSize], data[self._pendingSize :]
        self._spool.write(data)
        self._spool.close()
        self._spool = None
        self._pendingSize = None
        self._parts.append(self._token)
        self.setLineMode(passon.lstrip(b"\r\n"))
        return None

    def discard_spooled(self):
        for path in self.spooled.values():
            spool.remove(path)
        self.spooled.clear()

    # -- commands ----------------------------------------------------------------------------

    def plain_login(self, username: str, password: str):
        """LOGIN, without the stock client's automatic STARTTLS (TLS is the source's choice)."""
        return self.sendCommand(imap4.Command(b"LOGIN", quoted(username) + b" " + quoted(password)))

    def list_all(self):
        """``LIST "" "*"``; fire with ``(attributes, delimiter, name)`` triples. Unlike the
        stock ``list``, a NIL delimiter (a flat namespace) is "" and a name that is not valid
        modified UTF-7 is read as UTF-8 rather than failing the whole listing."""
        d = self.sendCommand(imap4.Command(b"LIST", b'"" "*"', wantResponse=(b"LIST",)))
        d.addCallback(self._listed)
        return d

    @staticmethod
    def _listed(result):
        lines, _ = result
        found = []
        for parts in lines:
            if len(parts) != 4 or parts[0].upper() != b"LIST":
                continue
            attributes = tuple(
                a.decode("ascii", "replace") for a in parts[1] if isinstance(a, bytes)
            )
            delimiter = _mailbox_text(parts[2]) if parts[2] else ""
            found.append((attributes, delimiter, _mailbox_text(parts[3] or b"")))
        return found

    def uid_fetch(self, uids: bytes, items: list[str]):
        """``UID FETCH <uids> (<items>)``; fire with ``{sequence number: {item: value}}``."""
        command = imap4.Command(
            b"UID FETCH",
            uids + b" (" + " ".join(items).encode("ascii") + b")",
            wantResponse=(b"FETCH",),
        )
        d = self.sendCommand(command)
        d.addCallback(self._cbFetch, [i.upper() for i in items], True)
        return d


def _mailbox_text(raw) -> str:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    try:
        return raw.decode("imap4-utf-7")
    except (UnicodeError, ValueError):
        return raw.decode("utf-8", "replace")


def _describe(failure_or_error) -> str:
    e = failure_or_error.value if isinstance(failure_or_error, Failure) else failure_or_error
    if isinstance(e, imap4.IMAP4Exception):
        text = e.args[0] if e.args else ""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return f"the IMAP server answered: {text}"
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, error.TimeoutError | defer.TimeoutError):
        return "timed out"
    if isinstance(e, error.DNSLookupError):
        return "cannot resolve the host name"
    if isinstance(e, error.ConnectionDone | error.ConnectionLost):
        return "the server closed the connection"
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    return str(e) or type(e).__name__


class IMAPSource:
    def __init__(self, source: dict, spool_dir: str, limit: int, reactor):
        self.host, self.port = imap_address(source.get("addr"))
        self.username = source.get("username") or ""
        self.password = source.get("password") or ""
        wanted = source.get("mailboxes") or ([source["mailbox"]] if source.get("mailbox") else [])
        self.wanted = {_wanted_name(w) for w in wanted}
        self.starttls = bool(source.get("starttls"))
        self.tls = source.get("tls", True) is not False and not self.starttls
        self.skip_verify = bool(source.get("skip_verify"))
        self.spool_dir = spool_dir
        self.limit = limit
        self.reactor = reactor
        self.client: SpoolingIMAP4Client | None = None
        self.logged_in = False

    def _tls_options(self):
        if self.skip_verify:
            return ssl.CertificateOptions()
        return ssl.optionsForClientTLS(self.host)

    async def open(self):
        endpoint = endpoints.HostnameEndpoint(
            self.reactor, self.host, self.port, timeout=CONNECT_TIMEOUT_SECONDS
        )
        if self.tls:
            endpoint = endpoints.wrapClientTLS(self._tls_options(), endpoint)
        client = SpoolingIMAP4Client(self.spool_dir)
        try:
            await endpoints.connectProtocol(endpoint, client)
            self.client = client  # closed by close(), whatever happens next
            await client.greeted
            if self.starttls:
                await client.getCapabilities()
                await client.startTLS(self._tls_options())
            await client.plain_login(self.username, self.password)
            self.logged_in = True
        except (SourceError, defer.CancelledError):
            raise
        except Exception as e:
            raise SourceError(f"IMAP {self.host}:{self.port}: {_describe(e)}") from None

    async def close(self):
        client, self.client = self.client, None
        if client is None:
            return
        client.discard_spooled()
        if client.lost.called:
            return
        if self.logged_in:
            try:
                await _bounded(client.logout(), self.reactor, 10)
            except Exception:
                pass
        if not client.lost.called:
            client.transport.loseConnection()
            try:
                await _bounded(client.lost, self.reactor, 10)
            except Exception:
                client.transport.abortConnection()

    async def _call(self, d):
        try:
            return await d
        except defer.CancelledError:
            raise
        except Exception as e:
            raise SourceError(f"IMAP {self.host}:{self.port}: {_describe(e)}") from None

    async def folders(self) -> list[SourceFolder]:
        listing = await self._call(self.client.list_all())
        found = []
        for attributes, delimiter, name in listing:
            if skipped(attributes):
                continue
            if (
                self.wanted
                and (name.upper() if name.upper() == "INBOX" else name) not in self.wanted
            ):
                continue
            levels = tuple(name.split(delimiter)) if delimiter else (name,)
            found.append(SourceFolder(name, levels, tuple(attributes)))
        found.sort(key=lambda f: import_order(f.key, f.attributes))
        return found

    async def messages(self, folder: SourceFolder, after):
        selected = await self._call(self.client.examine(folder.key))
        uidvalidity = selected.get("UIDVALIDITY")
        if not selected.get("EXISTS"):
            return
        start = 1
        if isinstance(after, dict) and after.get("uidvalidity") == uidvalidity:
            start = int(after.get("uid", 0)) + 1
        listing = await self._call(self.client.uid_fetch(b"%d:*" % start, ["UID", "RFC822.SIZE"]))
        sizes = {}
        for values in listing.values():
            try:
                uid = int(values["UID"])
                sizes[uid] = int(values.get("RFC822.SIZE", 0))
            except (KeyError, TypeError, ValueError):
                continue
        uids = sorted(uid for uid in sizes if uid >= start)
        batch: list[int] = []
        batch_bytes = 0
        for uid in uids:
            if sizes[uid] > self.limit:
                async with aclosing(self._fetch(batch, uidvalidity)) as items:
                    async for item in items:
                        yield item
                batch, batch_bytes = [], 0
                yield SourceMessage({"uidvalidity": uidvalidity, "uid": uid}, None)
                continue
            if batch and (len(batch) >= BATCH_MESSAGES or batch_bytes + sizes[uid] > BATCH_BYTES):
                async with aclosing(self._fetch(batch, uidvalidity)) as items:
                    async for item in items:
                        yield item
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += sizes[uid]
        async with aclosing(self._fetch(batch, uidvalidity)) as items:
            async for item in items:
                yield item

    async def _fetch(self, uids, uidvalidity):
        if not uids:
            return
        client = self.client
        client.spooling = True
        try:
            answer = await self._call(
                client.uid_fetch(uid_set(uids), ["UID", "FLAGS", "INTERNALDATE", "BODY.PEEK[]"])
            )
        except BaseException:
            client.discard_spooled()
            raise
        finally:
            client.spooling = False
        fetched = {}
        for values in answer.values():
            body = next(
                (v for k, v in values.items() if isinstance(k, tuple) and k[0] == "BODY"), None
            )
            try:
                uid = int(values["UID"])
            except (KeyError, TypeError, ValueError):
                continue
            path = client.spooled.pop(body, None) if isinstance(body, str) else None
            if path is None:
                continue
            flags = tuple(f for f in values.get("FLAGS", ()) if f.lower() != "\\recent")
            fetched[uid] = (path, flags, parse_internal_date(values.get("INTERNALDATE")))
        client.discard_spooled()  # anything the answer did not account for
        try:
            for uid in uids:
                if uid not in fetched:
                    continue  # expunged meanwhile
                path, flags, date = fetched.pop(uid)
                if os.path.getsize(path) > self.limit:
                    spool.remove(path)
                    path = None
                yield SourceMessage({"uidvalidity": uidvalidity, "uid": uid}, path, flags, date)
        finally:
            for path, _, _ in fetched.values():
                spool.remove(path)


async def _bounded(d, reactor, seconds):
    d.addTimeout(seconds, reactor)
    return await d
