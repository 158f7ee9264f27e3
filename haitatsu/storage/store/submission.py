"""Submission: who may send as which address, and storing an outgoing message in one
transaction (the Sent copy, local deliveries and the outbound job together).

Built on the delivery internals of ``messages`` (blob leases, the message row, placements,
quota charging) and ``outbound._enqueue``, so a submitted message is stored exactly like a
delivered one and the queue sees its job only once everything else is committed.
"""

from __future__ import annotations

from twisted.internet import defer

from haitatsu.interfaces import OutboundLimitExceeded, OverQuota
from haitatsu.storage.records import Delivery, Submitted, address_domain, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _MSG_COLUMNS, _log, _message_info, new_id

_HOUR_NS = 3600 * 1_000_000_000
_DAY_NS = 24 * _HOUR_NS


def bounce_address(message_id: str, sender: str) -> str:
    """The VERP return path of a submitted message (API.md 5.4)."""
    return f"bounces+{message_id}@{address_domain(sender)}"


class SubmissionMixin(StoreBase):
    def submit(
        self,
        spool_path,
        mailbox_id,
        mail_from,
        local_deliveries,
        remote_recipients,
        trace_id,
        per_hour=0,
        per_day=0,
        disposable=False,
    ):
        """Store the finished message at ``spool_path`` for sending, in one transaction: the
        message row; its copy in the sender's Sent folder, flagged ``\\Seen`` and charged to the
        sender's quota; one INBOX placement per mailbox of ``local_deliveries``; and, if any
        recipient is remote, an outbound job from ``bounces+<message id>@<sender domain>``.

        A local mailbox that cannot take the message now (its quota or its domain's) is not
        skipped: its recipient joins the job, so it is retried and, in the end, bounced like
        any remote recipient (``Submitted.requeued``).

        Fails with ``OverQuota`` if the Sent copy does not fit, ``OutboundLimitExceeded`` if the
        mailbox queued ``per_hour`` jobs in the last hour or ``per_day`` in the last day
        (0: no limit; counted after the mailbox row is locked, so concurrent submissions from
        one mailbox cannot both slip under it), ``StorageUnavailable`` otherwise; in each case
        nothing is visible. ``disposable`` as for ``deliver``: the caller only removes the
        file afterwards, so the blob store may take it instead of a copy.
        """
        local_deliveries = list(local_deliveries)
        remote_recipients = list(remote_recipients)

        def commit(prepared, parsed, generations):
            return self._commit_submission(
                prepared,
                parsed,
                generations,
                mailbox_id,
                mail_from,
                local_deliveries,
                remote_recipients,
                trace_id,
                per_hour,
                per_day,
            )

        async def run():
            submitted, prepared = await self._store_message(
                spool_path, trace_id, commit, disposable
            )
            _log.info(
                "stored submitted message {message_id} ({size} bytes) from {mailbox_id}: "
                "{local} local, job {job_id}",
                message_id=submitted.message.id,
                size=prepared.size,
                mailbox_id=mailbox_id,
                local=len(submitted.delivered),
                job_id=submitted.job_id,
                trace_id=trace_id,
            )
            return submitted

        return defer.Deferred.fromCoroutine(run())

    def _commit_submission(
        self,
        prepared,
        parsed,
        generations,
        mailbox_id,
        mail_from,
        local_deliveries,
        remote_recipients,
        trace_id,
        per_hour,
        per_day,
    ):
        message_id = new_id()
        size = prepared.size
        local, seen = [], set()
        for delivery in local_deliveries:
            # One INBOX copy per mailbox; the sender's own address as a recipient gets one too.
            key = (delivery.mailbox_id, delivery.folder)
            if key not in seen:
                seen.add(key)
                local.append(delivery)

        async def txn_fn(txn):
            now = now_ns()
            await self._reference_blobs(txn, generations, now)
            await self._insert_message(txn, message_id, prepared, parsed, trace_id, {}, now)
            # Charging the Sent copy first locks the sender's row (docs/storage.md on quota
            # locks): the job count below is then exact against concurrent submissions.
            refusals = await self._charge_quota(
                txn, [mailbox_id] + [d.mailbox_id for d in local], size
            )
            if refusals[0]:
                raise OverQuota(f"{mailbox_id} ({refusals[0]} quota)")
            for limit, window in ((per_hour, _HOUR_NS), (per_day, _DAY_NS)):
                if limit:
                    row = await txn.execute_one(
                        "SELECT COUNT(*) AS n FROM outbound_jobs "
                        "WHERE mailbox_id = ? AND created_at >= ?",
                        (mailbox_id, now - window),
                    )
                    if row["n"] >= limit:
                        raise OutboundLimitExceeded(
                            f"{row['n']} messages in the last {window // _HOUR_NS} h"
                        )
            sent = await self._place_message(
                txn,
                message_id,
                Delivery(mailbox_id=mailbox_id, folder="Sent", flags=("\\Seen",)),
                size,
                now,
                now,
            )
            delivered, requeued = [], []
            for delivery, refused in zip(local, refusals[1:], strict=True):
                if refused:
                    requeued.append(delivery.original_rcpt or delivery.base_rcpt)
                    continue
                delivered.append(
                    await self._place_message(txn, message_id, delivery, size, now, now)
                )
            job_id = None
            remote = remote_recipients + requeued
            if remote:
                job_id = await self._enqueue(
                    txn,
                    message_id,
                    mailbox_id,
                    bounce_address(message_id, mail_from),
                    remote,
                    trace_id,
                )
            row = await txn.execute_one(
                f"SELECT {_MSG_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
            )
            return Submitted(
                message=_message_info(row),
                sent=sent,
                delivered=tuple(delivered),
                job_id=job_id,
                requeued=tuple(requeued),
            )

        return self._run_grouped("submit", txn_fn)
