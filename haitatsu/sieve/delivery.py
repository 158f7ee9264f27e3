"""Sieve at delivery: what the ``sieve`` and ``vacation`` filters share (filters/sieve.py,
filters/vacation.py): compiling with a cache, running the interpreter in a thread, and sending
what scripts send (redirected copies, vacation responses, rejection notices) through the
outbound queue.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
import tempfile

import attrs
from twisted.internet import defer, threads
from twisted.logger import Logger

from haitatsu.sieve.grammar import compile_script
from haitatsu.sieve.interpreter import Envelope, Limits, Vacation, run
from haitatsu.sieve.message import SieveMessage
from haitatsu.sieve.responses import (
    build_rejection,
    build_vacation,
    vacation_handle,
    vacation_refusal,
)

#: Seconds between two prunings of ``sieve_vacation_responses`` by one node.
PRUNE_INTERVAL = 3600

#: Compiled scripts kept in memory (by content hash), per filter.
CACHE_SIZE = 256


def one_line(text: str, limit: int = 200) -> str:
    """An SMTP reply text: one line of printable ASCII."""
    line = " ".join(text.split())
    line = "".join(c if 32 <= ord(c) < 127 else "?" for c in line)
    return line[:limit] or "rejected by the recipient's filter"


def _write_copy(source: str, directory: str, prefix: bytes) -> str:
    """A new file under ``directory``: ``prefix``, then the file ``source``. Blocking."""
    fd, path = tempfile.mkstemp(prefix="sieve-", suffix=".eml", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            out.write(prefix)
            shutil.copyfileobj(src, out, 1024 * 1024)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _write_bytes(directory: str, data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="sieve-", suffix=".eml", dir=directory)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SieveRunner:
    """What the ``sieve`` and ``vacation`` filters share: compiling (with a cache), running in
    a thread, and carrying out the actions that send mail."""

    _log = Logger()

    def __init__(self, store, reactor, config, limits: Limits, max_body_bytes: int, vacation):
        self.store = store
        self.reactor = reactor
        self.config = config
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        #: ``(default_days, min_seconds, max_seconds)``
        self.vacation = vacation
        self._cache: dict[str, object] = {}
        self._next_prune: float | None = None

    async def compiled(self, content: str):
        """The compiled script (``SieveSyntaxError`` if it no longer compiles): from the
        cache, or compiled in a thread (parsing a big script takes a while)."""
        key = hashlib.sha256(content.encode("utf-8")).hexdigest()
        script = self._cache.get(key)
        if script is None:
            size = max(len(content.encode("utf-8")), 1)
            script = await self._thread(compile_script, content, size)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = script
        return script

    def _thread(self, fn, *args):
        pool = getattr(self.reactor, "getThreadPool", None)
        if pool is None:
            return threads.deferToThread(fn, *args)
        return threads.deferToThreadPool(self.reactor, pool(), fn, *args)

    def spool_dir(self, context) -> str:
        return os.path.dirname(os.path.abspath(context.message.path))

    async def execute(self, script, context, folders):
        """Run ``script`` for ``context.target``; fire with ``(outcome, message)``."""
        target = context.target
        message = SieveMessage(context.message.path, context.message.size, self.max_body_bytes)
        envelope = Envelope(context.envelope.mail_from, target.recipient)
        outcome = await self._thread(run, script, message, envelope, folders, self.limits)
        return outcome, message

    # -- sending ------------------------------------------------------------------------------

    async def may_redirect(self, context) -> bool:
        """Whether the mailbox may send one more message now: redirects count against its
        outbound limits (``outbound_limits``, ``limits.default_outbound_per_*``) like mail
        it sends itself."""
        from haitatsu.submission.pipeline import rate_limits

        mailbox = await self.store.get_mailbox(context.target.mailbox_id)
        if mailbox is None:
            return False
        now = int(self.reactor.seconds() * 1e9)
        for limit, hours in zip(rate_limits(mailbox, context.config), (1, 24), strict=True):
            since = now - hours * 3600 * 1_000_000_000
            if limit and await self.store.count_outbound_since(mailbox.id, since) >= limit:
                return False
        return True

    async def redirect(self, context, address: str) -> str:
        target = context.target
        prefix = f"Delivered-To: {target.recipient}\r\n".encode("utf-8", "replace")
        path = await self._thread(
            _write_copy, context.message.path, self.spool_dir(context), prefix
        )
        try:
            return await self.store.queue_generated(
                path, target.mailbox_id, None, [address], context.trace_id
            )
        finally:
            await self._thread(_unlink, path)

    async def send(self, context, data: bytes, recipient: str) -> str:
        """Queue ``data`` from the null sender to ``recipient`` for ``context.target``."""
        path = await self._thread(_write_bytes, self.spool_dir(context), data)
        try:
            return await self.store.queue_generated(
                path, context.target.mailbox_id, "", [recipient], context.trace_id
            )
        finally:
            await self._thread(_unlink, path)

    async def vacation_response(self, context, action: Vacation, message) -> str:
        """Send the response ``action`` asks for, unless RFC 5230's rules or the period say
        not to; return what happened (``sent``, or the reason it was not)."""
        target = context.target
        sender = context.envelope.mail_from
        mailbox = await self.store.get_mailbox(target.mailbox_id)
        primary = mailbox.primary_address if mailbox is not None else ""
        own = [target.recipient, target.base_recipient, primary, *action.addresses]
        refusal = await self._thread(vacation_refusal, message, sender, own)
        if refusal:
            return refusal
        self._maybe_prune(self.reactor.seconds())
        default_days, min_seconds, max_seconds = self.vacation
        period = action.period if action.period_given else default_days * 86400
        period = min(max(period, min_seconds), max_seconds)
        now = self.reactor.seconds()
        if not await self.store.vacation_should_respond(
            target.mailbox_id,
            vacation_handle(action),
            sender,
            int(now * 1e9),
            int(period * 1e9),
        ):
            return "already_answered"
        if action.from_address:
            # Only an address the mailbox may send as (as for submission); else the default.
            address = email.utils.parseaddr(action.from_address)[1]
            if not address or not await self.store.may_send_as(target.mailbox_id, address):
                self._log.info(
                    "vacation :from {address} is not one {mailbox_id} may send as; ignored",
                    address=action.from_address,
                    mailbox_id=target.mailbox_id,
                )
                action = attrs.evolve(action, from_address="")
        data = await self._thread(
            lambda: build_vacation(
                action,
                message,
                sender=sender,
                from_address=target.base_recipient or target.recipient,
                hostname=context.session.hostname,
                now=now,
            )
        )
        await self.send(context, data, sender)
        return "sent"

    def _maybe_prune(self, now: float) -> None:
        """Now and then (at most once per ``PRUNE_INTERVAL``, not at the first answer), forget
        vacation answers whose period is over, in the background."""
        if self._next_prune is None:
            self._next_prune = now + PRUNE_INTERVAL
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        d = defer.maybeDeferred(self.store.prune_vacation_responses, int(now * 1e9))
        d.addCallback(lambda n: self._log.info("vacation: pruned {n} answers", n=n))
        d.addErrback(lambda f: self._log.failure("vacation: pruning failed", f))

    async def rejection(self, context, text: str, message) -> None:
        sender = context.envelope.mail_from
        if not sender:
            return
        hostname = context.session.hostname
        data = await self._thread(
            lambda: build_rejection(
                text,
                message,
                sender=sender,
                recipient=context.target.recipient,
                hostname=hostname,
                postmaster=f"postmaster@{hostname}",
                now=self.reactor.seconds(),
            )
        )
        await self.send(context, data, sender)


def runner_from_options(opts, environment, vacation_only: bool = False) -> SieveRunner:
    """The runner a filter's options describe (``opts``: ``haitatsu.filtering.Options``)."""
    if vacation_only:
        limits, max_body = Limits(), 4 * 1024 * 1024
    else:
        limits = Limits(
            max_actions=opts.integer("max_actions", default=32, minimum=1),
            max_redirects=opts.integer("max_redirects", default=4, minimum=0),
        )
        max_body = opts.integer("max_body_bytes", default=4 * 1024 * 1024, minimum=1024)
    vacation = (
        7 if vacation_only else opts.integer("vacation_days", default=7, minimum=1),
        opts.integer("vacation_min_seconds", default=86400, minimum=0),
        opts.integer("vacation_max_seconds", default=90 * 86400, minimum=1),
    )
    return SieveRunner(
        environment.store, environment.reactor, environment.config, limits, max_body, vacation
    )
