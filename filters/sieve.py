"""``sieve``: each recipient's active Sieve script, at delivery (docs/sieve.md).

At ``delivery`` (once per recipient mailbox, before the message is stored) the mailbox's active
script runs on the message as it will be stored (our trace headers included). Its actions
become the delivery:

- ``keep`` files into the recipient's usual folder (INBOX, or Junk when an earlier filter
  quarantined the message), ``fileinto`` into the named folder (``/`` between levels), with
  the flags of ``:flags`` or imap4flags; several stores make copies;
- ``discard`` and a ``redirect`` without ``:copy`` store nothing for this recipient;
- ``redirect`` queues a copy (with ``Delivered-To`` added, from the mailbox's VERP address)
  on the outbound queue; a message that already carries this recipient's ``Delivered-To`` is
  not redirected again (a loop) but kept;
- ``reject``/``ereject`` refuse the message in the SMTP session (550 5.7.1 and the script's
  text) when this mailbox is its only recipient; otherwise a rejection notice (an MDN, RFC 5429
  2.1) goes to the sender through the outbound queue and this recipient gets nothing;
- ``vacation`` sends a response through the outbound queue, from the null sender, at most once
  per sender and period (RFC 5230: ``sieve_vacation_responses``, shared by every node).

A script that fails at run time (an action limit, a folder that does not exist) gets the
implicit keep: mail is never lost to a script. Options: ``max_actions`` (32),
``max_redirects`` (4), ``max_body_bytes`` (4 MiB of the message for ``body`` tests),
``vacation_days`` (7, when the script gives none), ``vacation_min_seconds`` (86400) and
``vacation_max_seconds`` (7776000).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from twisted.internet import threads
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    continue_,
    discard,
    reject,
)
from haitatsu.sieve import (
    Envelope,
    FileInto,
    Keep,
    Limits,
    Redirect,
    Reject,
    SieveMessage,
    SieveSyntaxError,
    Vacation,
    compile_script,
    run,
)
from haitatsu.sieve.responses import (
    build_rejection,
    build_vacation,
    vacation_handle,
    vacation_refusal,
)

#: Compiled scripts kept in memory (by content hash), per filter.
CACHE_SIZE = 256


def _one_line(text: str, limit: int = 200) -> str:
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

    def compiled(self, content: str):
        key = hashlib.sha256(content.encode("utf-8")).hexdigest()
        script = self._cache.get(key)
        if script is None:
            script = compile_script(content, max_bytes=max(len(content.encode("utf-8")), 1))
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


def runner_from_options(opts: Options, environment) -> SieveRunner:
    limits = Limits(
        max_actions=opts.integer("max_actions", default=32, minimum=1),
        max_redirects=opts.integer("max_redirects", default=4, minimum=0),
    )
    max_body = opts.integer("max_body_bytes", default=4 * 1024 * 1024, minimum=1024)
    vacation = (
        opts.integer("vacation_days", default=7, minimum=1),
        opts.integer("vacation_min_seconds", default=86400, minimum=0),
        opts.integer("vacation_max_seconds", default=90 * 86400, minimum=1),
    )
    return SieveRunner(
        environment.store, environment.reactor, environment.config, limits, max_body, vacation
    )


@implementer(IFilter)
class SieveFilter:
    name = "sieve"
    stages = (Stage.DELIVERY,)
    _log = Logger()

    def __init__(self, runner: SieveRunner):
        self.runner = runner
        self.store = runner.store

    async def check(self, stage, context):
        target = context.target
        stored = await self.store.active_sieve_script(target.mailbox_id)
        if stored is None:
            return None
        try:
            script = self.runner.compiled(stored.content)
        except SieveSyntaxError as e:
            # Stored scripts were checked when saved; one that no longer compiles keeps mail.
            self._log.warn(
                "sieve script {name} of {mailbox_id} does not compile: {error}; kept",
                name=stored.name,
                mailbox_id=target.mailbox_id,
                error=str(e),
                trace_id=context.trace_id,
            )
            return continue_(reason="sieve_error", results=self._result(context, ["error"]))
        folders = {f.name for f in await self.store.list_folders(target.mailbox_id)}
        outcome, message = await self.runner.execute(script, context, folders)
        return await self.apply(context, outcome, message, folders)

    def _result(self, context, summary) -> FilterResult:
        done = context.notes.setdefault("sieve", {})
        done[context.target.mailbox_id] = summary
        return FilterResult(fields={"sieve": dict(done)})

    async def apply(self, context, outcome, message, folders):
        """Turn ``outcome`` into the delivery of ``context.target`` and a verdict."""
        target = context.target
        summary = []
        if outcome.error:
            self._log.warn(
                "sieve script of {mailbox_id} failed: {error}; implicit keep",
                mailbox_id=target.mailbox_id,
                error=outcome.error,
                trace_id=context.trace_id,
            )
            summary.append("error")
        stores: list[tuple[str, set]] = []
        for action in outcome.actions:
            if isinstance(action, Keep):
                stores.append((target.folder, set(target.flags) | set(action.flags)))
                summary.append("keep")
            elif isinstance(action, FileInto):
                folder = action.folder
                if folder not in folders and folder != "INBOX":
                    if not await self._create(target.mailbox_id, folder):
                        folder = target.folder
                stores.append((folder, set(target.flags) | set(action.flags)))
                summary.append(f"fileinto:{action.folder}")
            elif isinstance(action, Redirect):
                if self._loops(message, target):
                    self._log.warn(
                        "sieve redirect of {mailbox_id} to {address} would loop; kept",
                        mailbox_id=target.mailbox_id,
                        address=action.address,
                        trace_id=context.trace_id,
                    )
                    stores.append((target.folder, set(target.flags)))
                    summary.append("redirect_loop")
                    continue
                await self.runner.redirect(context, action.address)
                summary.append(f"redirect:{action.address}")
            elif isinstance(action, Vacation):
                try:
                    done = await self.runner.vacation_response(context, action, message)
                except Exception:
                    # A response that cannot be sent never holds up the mail itself.
                    self._log.failure(
                        "vacation response of {mailbox_id} failed", mailbox_id=target.mailbox_id
                    )
                    done = "failed"
                summary.append(f"vacation:{done}")
            elif isinstance(action, Reject):
                return await self._reject(context, action, message, summary)
            else:
                summary.append("discard")
        result = self._result(context, summary)
        if not stores:
            return discard(reason="sieve", results=result)
        (target.folder, flags), extra = stores[0], stores[1:]
        target.flags = flags
        target.extra_folders = [(folder, f) for folder, f in extra]
        return continue_(results=result)

    async def _reject(self, context, action: Reject, message, summary):
        mailboxes = {m for r in context.envelope.recipients for m in r.mailbox_ids}
        summary.append("ereject" if action.ereject else "reject")
        result = self._result(context, summary)
        if len(mailboxes) <= 1:
            return reject(_one_line(action.text), reason="sieve_reject", results=result)
        await self.runner.rejection(context, action.text, message)
        return discard(reason="sieve_reject", results=result)

    async def _create(self, mailbox_id: str, folder: str) -> bool:
        """``fileinto :create`` (the interpreter let only those through): make the folder."""
        try:
            await self.store.create_folder(mailbox_id, folder)
            return True
        except Exception as e:
            if await self.store.get_folder(mailbox_id, folder) is not None:
                return True
            self._log.warn(
                "sieve could not create {folder} in {mailbox_id}: {error}; kept",
                folder=folder,
                mailbox_id=mailbox_id,
                error=str(e),
            )
            return False

    @staticmethod
    def _loops(message, target) -> bool:
        mine = {target.recipient.lower(), (target.base_recipient or "").lower()} - {""}
        return any(
            v.strip().strip("<>").lower() in mine for v in message.raw_values("delivered-to")
        )


@implementer(IPlugin, IFilterFactory)
class SieveFactory:
    name = "sieve"
    description = "each recipient's active Sieve script, at delivery (docs/sieve.md)"

    def build(self, options, environment):
        opts = Options(self.name, options)
        runner = runner_from_options(opts, environment)
        opts.done()
        return SieveFilter(runner)


sieve = SieveFactory()
