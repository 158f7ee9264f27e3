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
from haitatsu.filtering.helpers import inbound_filter_data
from haitatsu.sieve import FileInto, Keep, Redirect, Reject, SieveSyntaxError, Vacation
from haitatsu.sieve.delivery import SieveRunner, one_line, runner_from_options


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
        shared = inbound_filter_data(self.store, context)
        data = await shared if shared is not None else None
        if data is not None and target.mailbox_id in data.mailbox_ids:
            stored = data.sieve_scripts.get(target.mailbox_id)  # read with the others' data
        else:
            stored = await self.store.active_sieve_script(target.mailbox_id)
        if stored is None:
            return None
        try:
            script = await self.runner.compiled(stored.content)
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
                if context.quarantined:
                    # Spam is not sent on: it stays here, in Junk, for the user to see.
                    stores.append((target.folder, set(target.flags)))
                    summary.append("redirect_quarantined")
                    continue
                if not await self.runner.may_redirect(context):
                    self._log.warn(
                        "sieve redirect of {mailbox_id} over its outbound limit; kept",
                        mailbox_id=target.mailbox_id,
                        trace_id=context.trace_id,
                    )
                    stores.append((target.folder, set(target.flags)))
                    summary.append("redirect_limited")
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
            return reject(one_line(action.text), reason="sieve_reject", results=result)
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
