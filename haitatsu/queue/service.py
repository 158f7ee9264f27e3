"""The outbound queue service: worker loops that claim due jobs and deliver them.

Each of ``workers.concurrency`` loops (0 means 1) claims one due job at a time with a lease
(``locked_until = now + lease``), delivers it, records the attempt and settles the job. An idle
loop polls with a back-off from 250 ms to 30 s and is woken at once when a job is queued (on any
node: ``_enqueue`` announces on the change bus). While a delivery runs its lease is renewed every
third of the lease; a delivery whose lease cannot be renewed is dropped before it can finish, so
no other node sends a job while one holds it. docs/queue.md has the states, the retry schedule
and the argument.

The job's ``route`` chooses how it is delivered: ``relay`` (the smarthost) today; the planned
REST upgrade (FEDERATION.md) adds a route beside it.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from haitatsu.interfaces import OverQuota
from haitatsu.metrics import METRICS
from haitatsu.polling import LeasedWorkers
from haitatsu.queue.dsn import build_dsn
from haitatsu.queue.relay import RelayResult, deliver_via_relay, session_error
from haitatsu.storage.records import Delivery
from haitatsu.storage.store.outbound import OUTBOUND_CHANNEL

MIN_POLL = 0.25
MAX_POLL = 30.0
DEFAULT_LEASE_SECONDS = LeasedWorkers.DEFAULT_LEASE_SECONDS
DEFAULT_MAX_ATTEMPTS = 30
DEFAULT_MAX_RETRY_MINUTES = 240
#: The original header block kept in a bounce is cut here.
MAX_HEADER_BYTES = 64 * 1024


def retry_delay_seconds(attempts: int, max_retry_minutes: int) -> float:
    """The pause after the ``attempts``-th attempt failed temporarily (API.md 5.4):
    ``min(1 min * 2^(attempts - 1), max_retry_minutes)``: 1, 2, 4, ... minutes, then the cap."""
    cap = (max_retry_minutes or DEFAULT_MAX_RETRY_MINUTES) * 60.0
    exponent = max(attempts - 1, 0)
    if exponent > 40:
        return cap
    return min(60.0 * 2**exponent, cap)


def retry_window_seconds(max_attempts: int, max_retry_minutes: int) -> float:
    """From the first attempt to the last one: the sum of the pauses between them."""
    attempts = max_attempts or DEFAULT_MAX_ATTEMPTS
    return sum(retry_delay_seconds(n, max_retry_minutes) for n in range(1, attempts))


class OutboundQueue(LeasedWorkers):
    """The queue workers of one node.

    ``reactor`` makes connections and runs threads; ``clock`` (the reactor unless given) is the
    time: claims, leases, retry times, idle polls. ``node`` names the lease owner (default
    ``server.instance_name``). Finished bounces are spooled under ``spool_dir``.
    """

    name = "outbound-queue"
    channel = OUTBOUND_CHANNEL
    label = "outbound queue"
    min_poll = MIN_POLL
    max_poll = MAX_POLL
    _log = Logger()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: How each route delivers: ``async def (job, config, started) -> RelayResult``.
        self.routes = {"relay": self._deliver_relay}
        self._clients: dict[str, object] = {}
        self._warned_no_relay = False

    # -- loops ------------------------------------------------------------------------------

    def lanes(self):
        return [None] * max(1, self.get_config().workers.concurrency)

    def startService(self):
        super().startService()
        self._log.info(
            "outbound queue started: {loops} workers on {node}",
            loops=len(self._loops),
            node=self.node,
        )

    def stop_overdue(self):
        for client in list(self._clients.values()):
            client.abort()

    # -- one job ----------------------------------------------------------------------------

    async def run_once(self, lane=None) -> bool:
        """Claim one due job and deliver it; False when nothing was due (or no relay is
        configured, in which case jobs wait, queued, until one is)."""
        config = self.get_config()
        if config.relay.host_port is None:
            if not self._warned_no_relay:
                self._warned_no_relay = True
                self._log.warn("relay.addr is empty: outbound mail waits in the queue")
            return False
        self._warned_no_relay = False
        jobs = await self.store.claim_outbound(
            self.node, int(self.lease_seconds * 1e9), now=self.now_ns()
        )
        if not jobs:
            return False
        await self.deliver(jobs[0])
        return True

    async def process_due(self) -> int:
        """Deliver every job due now, one after the other; return how many (for tests and
        tools)."""
        count = 0
        while await self.run_once():
            count += 1
        return count

    async def deliver(self, job):
        """Deliver a claimed job, record the attempt and settle the job."""
        config = self.get_config()
        lease = _Lease(self, job)
        lease.start()
        try:
            if job.message is None:
                result = RelayResult({}, session_error("the message is no longer stored"), "")
                result = _permanent(result, job.pending)
            else:
                route = self.routes.get(job.route)
                if route is None:
                    result = RelayResult({}, session_error(f"no route {job.route!r}"), "")
                else:
                    result = await route(job, config, lease.track)
        except Exception as e:
            self._log.failure(
                "delivery of job {job_id} failed", job_id=job.id, trace_id=job.trace_id
            )
            result = RelayResult({}, session_error(f"internal error: {e}"), "")
        finally:
            lease.stop()
        await self._settle(job, result, config)

    async def _deliver_relay(self, job, config, started) -> RelayResult:
        message_file = await self.store.open_message(job.message)
        try:
            return await deliver_via_relay(
                self.reactor,
                config.relay,
                identity=config.server.public_hostname,
                mail_from=job.mail_from,
                recipients=job.pending,
                message_file=message_file,
                started=started,
            )
        finally:
            message_file.close()

    async def _settle(self, job, result: RelayResult, config):
        max_attempts = config.relay.max_attempts or DEFAULT_MAX_ATTEMPTS
        answers = {rcpt: result.answer_for(rcpt) for rcpt in job.pending}
        sent = [r for r, a in answers.items() if a.classification == "success"]
        failed = [r for r, a in answers.items() if a.classification == "permanent"]
        retry = [r for r, a in answers.items() if a.classification == "temporary"]
        expired = bool(retry) and job.attempts >= max_attempts
        if expired:
            failed, retry = failed + retry, []
        dsn_id = ""
        if failed:
            try:
                dsn_id = await self._file_bounce(job, config, result, failed, answers, expired)
            except Exception:
                # Never lose a bounce: try these recipients again later, and bounce then.
                self._log.failure(
                    "could not file the bounce for job {job_id}; retrying it later",
                    job_id=job.id,
                    trace_id=job.trace_id,
                )
                retry, failed = retry + failed, []
        now = self.now_ns()
        recipients = {}
        for rcpt, answer in answers.items():
            state = "sent" if rcpt in sent else "failed" if rcpt in failed else "pending"
            recipients[rcpt] = (state, answer.code, answer.enhanced, answer.response)
        worst = next((answers[r] for r in (*failed, *retry)), None) or result.error
        result_json = {
            **(worst.as_dict() if worst else answers[sent[0]].as_dict() if sent else {}),
            "remote_mta": result.remote_mta,
            "tls": result.tls,
            "recipients": {rcpt: a.as_dict() for rcpt, a in answers.items()},
        }
        if expired:
            result_json["expired"] = True
        if retry:
            status = "retry"
            delay = retry_delay_seconds(job.attempts, config.relay.max_retry_minutes)
            next_attempt_at = now + int(delay * 1e9)
        else:
            status = (
                "failed"
                if any(
                    r.status in ("failed", "bounced")
                    for r in job.recipients
                    if r.rcpt not in answers
                )
                or failed
                else "sent"
            )
            next_attempt_at = now
        last_error = worst.as_dict() if worst is not None and status != "sent" else {}
        kept = await self.store.finish_outbound(
            job.id,
            self.node,
            job.attempts,
            status=status,
            result=result_json,
            recipients=recipients,
            last_error=last_error,
            next_attempt_at=next_attempt_at,
            dsn_message_id=dsn_id,
            now=now,
        )
        fields = dict(
            job_id=job.id,
            trace_id=job.trace_id,
            mailbox_id=job.mailbox_id,
            attempt=job.attempts,
            sent=sent,
            failed=failed,
            retry=retry,
        )
        if kept:
            METRICS.worker_jobs.labels(type="outbound", status=status).inc()
            if status == "sent":
                METRICS.messages_delivered.inc()
            elif status == "failed":
                METRICS.messages_bounced.inc()
        if not kept:
            self._log.warn(
                "job {job_id} was taken over by another node during attempt {attempt}; "
                "its outcome is theirs",
                **fields,
            )
        elif status == "retry":
            self._log.info(
                "job {job_id} attempt {attempt}: {retry} deferred ({response}); next try in "
                "{delay}s",
                response=worst.response if worst else "",
                delay=delay,
                **fields,
            )
        else:
            self._log.info("job {job_id} {status} after attempt {attempt}", status=status, **fields)

    # -- bounces ----------------------------------------------------------------------------

    async def _file_bounce(self, job, config, result, failed, answers, expired) -> str:
        """Deliver a DSN for ``failed`` to the sender's INBOX; return its message id ("" when
        the sender's mailbox can take nothing more: gone, or over quota)."""
        mailbox = await self.store.get_mailbox(job.mailbox_id)
        if mailbox is None or not mailbox.active:
            self._log.warn(
                "job {job_id} failed but mailbox {mailbox_id} is gone: no bounce filed",
                job_id=job.id,
                mailbox_id=job.mailbox_id,
            )
            return ""
        info = job.message
        header_size = info.header_size or min(info.size_bytes, MAX_HEADER_BYTES)
        headers = await self.store.read_message(info, 0, min(header_size, MAX_HEADER_BYTES))
        end = headers.find(b"\r\n\r\n")
        if end >= 0:
            headers = headers[: end + 2]
        host = config.server.public_hostname
        data = build_dsn(
            reporting_mta=host,
            from_address=config.notifications.from_address or f"postmaster@{host}",
            to_address=mailbox.primary_address,
            failures=[(rcpt, answers[rcpt], result.remote_mta) for rcpt in failed],
            original_headers=headers,
            envelope_id=job.id,
            arrival=job.created_at / 1e9,
            now=self.clock.seconds(),
            expired=expired,
        )
        path = await deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _write_temp, self.spool_dir, data
        )
        try:
            placed = await self.store.deliver(
                path, [Delivery(mailbox_id=mailbox.id, folder="INBOX")], trace_id=job.trace_id
            )
        except OverQuota:
            self._log.warn(
                "job {job_id} failed; mailbox {mailbox_id} is over quota: no bounce filed",
                job_id=job.id,
                mailbox_id=job.mailbox_id,
            )
            return ""
        finally:
            await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), _remove, path)
        self._log.info(
            "bounce filed for job {job_id} in {mailbox_id}: {failed}",
            job_id=job.id,
            mailbox_id=mailbox.id,
            failed=failed,
            trace_id=job.trace_id,
        )
        return placed[0].message_id


class _Lease:
    """Keeps a claimed job's lease alive while it is delivered; if it cannot, drops the
    delivery before another node may take the job."""

    def __init__(self, queue: OutboundQueue, job):
        self.queue = queue
        self.job = job
        self.until = job.locked_until or queue.now_ns()
        self.client = None
        self._loop = task.LoopingCall(self._renew)
        self._loop.clock = queue.clock

    def start(self):
        self._loop.start(self.queue.lease_seconds / 3, now=False).addErrback(
            lambda f: self.queue._log.failure("lease renewal stopped", f)
        )

    def stop(self):
        if self._loop.running:
            self._loop.stop()
        self.queue._clients.pop(self.job.id, None)

    def track(self, client):
        self.client = client
        self.queue._clients[self.job.id] = client

    async def _renew_async(self):
        queue, job = self.queue, self.job
        until = queue.now_ns() + int(queue.lease_seconds * 1e9)
        try:
            held = await queue.store.renew_outbound_lease(job.id, queue.node, job.attempts, until)
        except Exception as e:
            held = None
            queue._log.warn(
                "cannot renew the lease of job {job_id}: {error}", job_id=job.id, error=str(e)
            )
        if held:
            self.until = until
            return
        margin = int(queue.lease_seconds * 1e9 / 6)
        if held is False or queue.now_ns() >= self.until - margin:
            queue._log.warn("lost the lease of job {job_id}: dropping its delivery", job_id=job.id)
            if self.client is not None:
                self.client.abort()

    def _renew(self):
        return defer.Deferred.fromCoroutine(self._renew_async())


def _permanent(result: RelayResult, recipients) -> RelayResult:
    from haitatsu.queue.relay import Answer

    answer = Answer(554, "5.6.0", "554 5.6.0 the message is no longer stored")
    return RelayResult({r: answer for r in recipients}, None, result.remote_mta)


def _write_temp(spool_dir: str, data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="dsn-", suffix=".eml", dir=spool_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _remove(path: str):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
