"""``vacation``: each mailbox's simple vacation setting, answered like Sieve's ``vacation``.

For users who want an out-of-office answer without writing a script: the setting made with
``PUT /api/v1/mailboxes/:id/vacation`` (enabled, subject, body, days, from, addresses, and an
optional start and end). At ``delivery``, while the setting is on, the filter hands a Sieve
``vacation`` action to the same code the ``sieve`` filter uses (docs/sieve.md): the same
RFC 5230 rules on whom not to answer (lists, bulk and auto-submitted mail, robots, mail that
does not name the user), the same once-per-sender-and-period record shared by every node, the
same response through the outbound queue. It never changes where the message is filed.

A mailbox may have both a setting and a Sieve script with ``vacation``: the two answer
independently (their texts differ, so do their handles). Options: those of ``sieve`` that
concern vacation (``vacation_min_seconds``, ``vacation_max_seconds``; ``vacation_days`` is
the setting's own ``days``).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import FilterResult, IFilter, IFilterFactory, Options, Stage, continue_
from haitatsu.sieve import SieveMessage, Vacation
from haitatsu.sieve.delivery import runner_from_options


@implementer(IFilter)
class VacationFilter:
    name = "vacation"
    stages = (Stage.DELIVERY,)
    _log = Logger()

    def __init__(self, runner):
        self.runner = runner
        self.store = runner.store

    async def check(self, stage, context):
        target = context.target
        setting = await self.store.get_vacation_setting(target.mailbox_id)
        if setting is None or not setting.enabled or not setting.body:
            return None
        now = int(self.runner.reactor.seconds() * 1e9)
        if (setting.starts_at is not None and now < setting.starts_at) or (
            setting.ends_at is not None and now >= setting.ends_at
        ):
            return None
        action = Vacation(
            reason=setting.body,
            subject=setting.subject,
            from_address=setting.from_address,
            addresses=tuple(setting.addresses),
            period=max(1, setting.days) * 86400,
            period_given=True,
        )
        message = SieveMessage(
            context.message.path, context.message.size, self.runner.max_body_bytes
        )
        try:
            done = await self.runner.vacation_response(context, action, message)
        except Exception:
            # An answer that cannot be sent never holds up the mail itself.
            self._log.failure(
                "vacation response of {mailbox_id} failed", mailbox_id=target.mailbox_id
            )
            done = "failed"
        notes = context.notes.setdefault("vacation", {})
        notes[target.mailbox_id] = done
        return continue_(results=FilterResult(fields={"vacation": dict(notes)}))


@implementer(IPlugin, IFilterFactory)
class VacationFactory:
    name = "vacation"
    description = "each mailbox's vacation setting (REST /mailboxes/:id/vacation), RFC 5230"

    def build(self, options, environment):
        opts = Options(self.name, options)
        runner = runner_from_options(opts, environment, vacation_only=True)
        opts.done()
        return VacationFilter(runner)


vacation = VacationFactory()
