"""The submission pipeline: what happens to a message a user sends, whether it came over SMTP
submission (587/465) or ``POST /api/v1/mailboxes/:id/outbound`` (API.md 1.8 and 5.3).

One ``SubmissionPipeline`` serves both, so the rules cannot drift apart: the mailbox must be
active; the sender must be its own address or one it may send as; the sender's domain must have a
DKIM key; recipient, hourly and daily limits; quota. Then the message is finished (headers, Bcc,
DKIM signature: ``message.finish``, in a thread) and stored in one transaction with its Sent copy,
its local deliveries and its outbound job (``store.submit``). A refusal is a ``SubmissionRefused``
carrying a ``Reason``, which knows its SMTP reply and its REST status and code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import attrs
import ulid
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from haitatsu import dkim
from haitatsu.interfaces import OutboundLimitExceeded, OverQuota
from haitatsu.metrics import METRICS
from haitatsu.smtp.envelope import Reply
from haitatsu.storage.records import Delivery, address_domain, now_ns
from haitatsu.submission import message as messagemod


@attrs.frozen
class Reason:
    """Why a submission is refused: a token for logs, the SMTP reply, the REST answer."""

    token: str
    reply: Reply
    status: int
    code: str
    message: str


MAILBOX_NOT_FOUND = Reason(
    "mailbox_not_found",
    Reply(550, "5.7.1", "mailbox not found"),
    404,
    "mailbox_not_found",
    "Mailbox not found",
)
MAILBOX_INACTIVE = Reason(
    "mailbox_inactive",
    Reply(550, "5.7.1", "mailbox is not active"),
    409,
    "mailbox_inactive",
    "Mailbox is not active",
)
BAD_SENDER = Reason(
    "bad_sender",
    Reply(553, "5.1.7", "bad sender address syntax"),
    400,
    "invalid_outbound_message",
    "from: invalid address",
)
SENDER_NOT_ALLOWED = Reason(
    "sender_not_allowed",
    Reply(553, "5.7.1", "sender not allowed"),
    403,
    "sender_not_allowed",
    "Sender address is not allowed for this mailbox",
)
NO_DKIM_KEY = Reason(
    "dkim_key_not_found",
    Reply(550, "5.7.0", "no DKIM key for the sender's domain"),
    409,
    "dkim_key_not_found",
    "No DKIM key for the sender's domain",
)
TOO_MANY_RECIPIENTS = Reason(
    "too_many_recipients",
    Reply(452, "4.5.3", "too many recipients"),
    422,
    "too_many_recipients",
    "Too many recipients for one message",
)
RATE_LIMITED = Reason(
    "outbound_rate_limited",
    Reply(450, "4.7.1", "outbound rate limit exceeded, try again later"),
    429,
    "outbound_rate_limited",
    "Outbound rate limit exceeded, try again later",
)
OVER_QUOTA = Reason(
    "mailbox_over_quota",
    Reply(552, "5.2.2", "mailbox over quota"),
    413,
    "mailbox_over_quota",
    "The message does not fit in the mailbox's quota",
)


class SubmissionRefused(Exception):
    def __init__(self, reason: Reason, detail: str = ""):
        super().__init__(f"{reason.token}: {detail}" if detail else reason.token)
        self.reason = reason
        self.detail = detail


_HOUR_NS = 3600 * 1_000_000_000


def _limit(mailbox, config, key: str) -> int:
    """A mailbox's outbound limit ``key``: its own ``outbound_limits`` value when set (0 =
    unlimited), else ``limits.default_outbound_<key>`` (0 = unlimited)."""
    own = (mailbox.outbound_limits or {}).get(key)
    if own is not None:
        return int(own)
    return int(getattr(config.limits, f"default_outbound_{key}"))


def recipient_limit(mailbox, config) -> int:
    """Recipients one message may have (0: unlimited): the mailbox's ``recipients_per_message``
    and the server's ``limits.max_submission_recipients``, whichever is smaller."""
    limits = [
        n
        for n in (
            _limit(mailbox, config, "recipients_per_message"),
            config.limits.max_submission_recipients,
        )
        if n > 0
    ]
    return min(limits) if limits else 0


def rate_limits(mailbox, config) -> tuple[int, int]:
    """``(per_hour, per_day)`` for the mailbox; 0 is unlimited."""
    return _limit(mailbox, config, "per_hour"), _limit(mailbox, config, "per_day")


class SubmissionPipeline:
    """``store`` provides ``IMailStore``; ``get_config()`` the live ``Config``; ``reactor`` the
    clock (Date, DKIM ``t=``) and the thread pool the finishing step runs in; finished messages
    are written under ``spool_dir`` (the store splits them into blobs from there)."""

    _log = Logger()

    def __init__(self, store, get_config, reactor, spool_dir: str, threadpool=None):
        self.store = store
        self.get_config = get_config
        self.reactor = reactor
        self.spool_dir = os.path.abspath(spool_dir)
        self._threadpool = threadpool

    def _thread(self, fn, *args, **kwargs):
        pool = self._threadpool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, fn, *args, **kwargs)

    # -- checks, each usable on its own (SMTP makes them at MAIL FROM) --------------------------

    async def check_sender(self, mailbox_id: str, mail_from: str):
        """The active mailbox, if it may send as ``mail_from`` and the sender's domain has a
        DKIM key; else ``SubmissionRefused``."""
        mailbox = await self.store.get_mailbox(mailbox_id)
        if mailbox is None:
            raise SubmissionRefused(MAILBOX_NOT_FOUND)
        if not mailbox.active:
            raise SubmissionRefused(MAILBOX_INACTIVE, mailbox.status)
        if messagemod.parse_address(mail_from) is None:
            raise SubmissionRefused(BAD_SENDER, mail_from)
        if not await self.store.may_send_as(mailbox.id, mail_from):
            raise SubmissionRefused(SENDER_NOT_ALLOWED, mail_from)
        if await self.store.signing_key(address_domain(mail_from)) is None:
            raise SubmissionRefused(NO_DKIM_KEY, address_domain(mail_from))
        return mailbox

    async def check_rate(self, mailbox, config) -> None:
        """``RATE_LIMITED`` when the mailbox queued its hourly or daily allowance already."""
        now = now_ns()
        for limit, window in zip(rate_limits(mailbox, config), (1, 24), strict=True):
            if (
                limit
                and await self.store.count_outbound_since(mailbox.id, now - window * _HOUR_NS)
                >= limit
            ):
                raise SubmissionRefused(RATE_LIMITED, f"{limit} per {window} h")

    def check_recipients(self, mailbox, config, count: int) -> None:
        limit = recipient_limit(mailbox, config)
        if limit and count > limit:
            raise SubmissionRefused(TOO_MANY_RECIPIENTS, f"{count} > {limit}")

    # -- the whole pipeline -------------------------------------------------------------------

    async def submit(
        self,
        mailbox_id: str,
        mail_from: str,
        recipients,
        spool_path: str,
        trace_id: str | None = None,
        config=None,
    ):
        """Check, finish and store the client's message at ``spool_path`` (left in place) for
        ``recipients``; fire with the store's ``Submitted``. ``SubmissionRefused`` says why
        not; any other failure is temporary (``StorageUnavailable`` or a bug)."""
        config = config or self.get_config()
        trace_id = trace_id or str(ulid.ULID())
        recipients = _unique(recipients)
        mailbox = await self.check_sender(mailbox_id, mail_from)
        self.check_recipients(mailbox, config, len(recipients))
        await self.check_rate(mailbox, config)
        if mailbox.quota_bytes > 0:
            size = os.path.getsize(spool_path)
            if mailbox.used_bytes + size > mailbox.quota_bytes:
                # An early answer; the store decides on the finished size, in its transaction.
                raise SubmissionRefused(OVER_QUOTA, f"{mailbox.used_bytes} + {size}")
        key = await self.store.signing_key(address_domain(mail_from))
        if key is None:
            raise SubmissionRefused(NO_DKIM_KEY, address_domain(mail_from))
        local, remote = [], []
        for address in recipients:
            found = await self.store.resolve_recipient(address)
            if found is None:
                remote.append(address)
            else:
                local.append(
                    Delivery(
                        mailbox_id=found.mailbox_id,
                        folder="INBOX",
                        original_rcpt=found.original_rcpt,
                        base_rcpt=found.base_rcpt,
                        plus_tag=found.plus_tag,
                        route_id=found.route_id,
                    )
                )
        finished_path = None
        try:
            finished_path, finished = await self._thread(
                _finish_to_spool,
                self.spool_dir,
                spool_path,
                mail_from=mail_from,
                message_id=f"<{ulid.ULID()}@{config.server.public_hostname}>",
                trace_id=trace_id,
                node=config.server.instance_name,
                when=self.reactor.seconds(),
                key=dkim.SigningKey(key.domain, key.selector, key.algorithm, key.private_key),
            )
            per_hour, per_day = rate_limits(mailbox, config)
            try:
                submitted = await self.store.submit(
                    finished_path,
                    mailbox.id,
                    mail_from,
                    local,
                    remote,
                    trace_id,
                    per_hour=per_hour,
                    per_day=per_day,
                    disposable=True,
                )
            except OverQuota as e:
                raise SubmissionRefused(OVER_QUOTA, str(e)) from None
            except OutboundLimitExceeded as e:
                raise SubmissionRefused(RATE_LIMITED, str(e)) from None
        finally:
            if finished_path is not None:
                # Removed in a thread: a directory change can wait on the file system journal.
                self._thread(_remove, finished_path).addErrback(
                    lambda f: self._log.failure("removing {path} failed", f, path=finished_path)
                )
        self._log.info(
            "submitted {trace_id} from {mailbox_id} as {mail_from}: {local} local, "
            "{remote} remote, {requeued} requeued ({size} bytes, {message_id})",
            trace_id=trace_id,
            mailbox_id=mailbox.id,
            mail_from=mail_from,
            local=len(submitted.delivered),
            remote=len(remote),
            requeued=len(submitted.requeued),
            size=finished.size,
            message_id=finished.message_id,
        )
        METRICS.messages_sent.inc()
        return submitted


def _finish_to_spool(spool_dir: str, in_path: str, **kwargs):
    """``message.finish`` into a new file of ``spool_dir`` (made here, in the thread, not on
    the reactor); return its path and the ``Finished``."""
    fd, path = tempfile.mkstemp(prefix="submit-", suffix=".eml", dir=spool_dir)
    os.close(fd)
    try:
        return path, messagemod.finish(in_path, path, **kwargs)
    except BaseException:
        _remove(path)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unique(addresses) -> list[str]:
    """Addresses in order, each once, compared without case (API.md 1.8)."""
    seen, out = set(), []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out
