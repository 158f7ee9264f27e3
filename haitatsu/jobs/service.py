"""The job workers: loops that claim export and import jobs and run them (API.md 1.13).

``workers.concurrency`` loops per job kind (0 means one) on each node claim the oldest due job
with a lease (``IMailStore.claim_job``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so nodes share
the jobs) and renew it every third of its length while the job runs. Idle loops poll with a
back-off from 250 ms to 30 s and are woken at once when any node queues a job.

What can happen to a job:

- it finishes: ``completed`` (an export with its object, size and 15-day expiry) or ``failed``
  with the reason in ``last_error`` (the source cannot be read, the mailbox is gone);
- storage is unavailable: back to ``queued``, due again after 1, 2, 4, 8, 16 minutes (by
  attempt);
- the node stops: the job goes back to ``queued`` at once, without using up an attempt, after
  the message in hand is stored;
- the node dies or stalls: the lease runs out and another worker claims the job; an import
  resumes after the last message it stored, an export is written again from the start;
- the lease is lost (renewal failed for longer than the margin, or another worker took the job
  over): the worker drops the job and writes nothing more about it.

A job claimed ``MAX_ATTEMPTS`` times without finishing fails.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, task
from twisted.internet.defer import CancelledError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from haitatsu.interfaces import StorageUnavailable
from haitatsu.jobs import exporter, spool
from haitatsu.jobs.common import SourceError
from haitatsu.jobs.importer import Importer, open_source
from haitatsu.metrics import METRICS
from haitatsu.polling import LeasedWorkers
from haitatsu.storage.store.importing import ImportTargetGone
from haitatsu.storage.store.jobs import JOB_KINDS, JOBS_CHANNEL, JobLeaseLost

MIN_POLL = 0.25
MAX_POLL = 30.0
DEFAULT_LEASE_SECONDS = LeasedWorkers.DEFAULT_LEASE_SECONDS
#: Claims of one job before it fails (a job that keeps killing its node must not loop forever).
MAX_ATTEMPTS = 5
#: Pause before a job that met unavailable storage is due again, doubled with each attempt
#: (1, 2, 4, 8, 16 minutes: a job rides out half an hour of outage before it fails).
RETRY_DELAY_SECONDS = 60


class _Stopping(Exception):
    """The node is stopping: hand the job back."""


class JobFailed(Exception):
    """The job cannot be done; the text goes to ``last_error``."""


class JobWorker(LeasedWorkers):
    """The export and import workers of one node.

    ``reactor`` runs threads and connections; ``clock`` (the reactor unless given) is the time
    of claims, leases and polls. ``node`` names the lease owner (default
    ``server.instance_name``). ZIPs and messages in transit are spooled under ``spool_dir``.
    """

    name = "jobs"
    channel = JOBS_CHANNEL
    label = "job worker"
    min_poll = MIN_POLL
    max_poll = MAX_POLL
    _log = Logger()

    # -- loops ------------------------------------------------------------------------------

    def lanes(self):
        loops = max(1, self.get_config().workers.concurrency)
        return [kind for kind in JOB_KINDS for _ in range(loops)]

    def startService(self):
        super().startService()
        self._log.info(
            "job workers started: {loops} per kind on {node}",
            loops=len(self._loops) // len(JOB_KINDS),
            node=self.node,
        )

    # -- one job ----------------------------------------------------------------------------

    def _thread(self, fn, *args):
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    async def run_once(self, kind: str) -> bool:
        """Claim one due job of ``kind`` and run it; False when none was due."""
        claimed = await self.store.claim_job(
            kind, self.node, int(self.lease_seconds * 1e9), now=self.now_ns()
        )
        if claimed is None:
            return False
        job, fence = claimed
        await self.run_job(job, fence)
        return True

    async def process_due(self) -> int:
        """Run every due job of both kinds, one after the other; how many (for tests)."""
        count = 0
        while True:
            ran = [await self.run_once(kind) for kind in JOB_KINDS]
            if not any(ran):
                return count
            count += sum(ran)

    async def run_job(self, job, fence):
        fields = dict(
            job_id=job.id, kind=job.kind, mailbox_id=job.mailbox_id, attempt=fence.attempt
        )
        if fence.attempt > MAX_ATTEMPTS:
            await self._fail(job, fence, f"gave up after {MAX_ATTEMPTS} attempts")
            return
        self._log.info("{kind} job {job_id} started (attempt {attempt})", **fields)
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        lease = _Lease(self, fence)
        lease.start()

        def check():
            if lease.lost:
                raise JobLeaseLost(job.id)
            if self._stopping:
                raise _Stopping()

        try:
            if job.kind == "export":
                await self._export(job, fence, check)
            else:
                await self._import(job, fence, check)
        except JobLeaseLost:
            self._log.warn("{kind} job {job_id}: lease lost; another worker has it", **fields)
        except (_Stopping, CancelledError):
            await self._hand_back(fence, fields)
        except StorageUnavailable as e:
            if self._stopping:
                await self._hand_back(fence, fields)
                return
            delay = min(RETRY_DELAY_SECONDS * 2 ** (fence.attempt - 1), 3600)
            self._log.warn(
                "{kind} job {job_id}: storage unavailable ({error}); again in {delay}s",
                error=str(e),
                delay=delay,
                **fields,
            )
            await self.store.requeue_job(
                fence,
                error=f"storage unavailable: {e}",
                next_attempt_at=self.now_ns() + delay * 1_000_000_000,
            )
        except (JobFailed, SourceError, ImportTargetGone) as e:
            text = str(e) if not isinstance(e, ImportTargetGone) else "mailbox not found"
            await self._fail(job, fence, text)
        except Exception as e:
            if self._stopping:
                await self._hand_back(fence, fields)
                return
            self._log.failure("{kind} job {job_id} failed", **fields)
            await self._fail(job, fence, f"internal error: {type(e).__name__}: {e}")
        finally:
            lease.stop()

    async def _hand_back(self, fence, fields):
        try:
            await self.store.requeue_job(fence, count_attempt=False)
            self._log.info("{kind} job {job_id} handed back: the node is stopping", **fields)
        except Exception as e:
            self._log.warn(
                "{kind} job {job_id}: could not hand it back ({error}); its lease will run out",
                error=str(e),
                **fields,
            )

    async def _fail(self, job, fence, text):
        if job.kind == "export":
            kept = await self.store.finish_export_job(fence, error=text)
        else:
            kept = await self.store.finish_import_job(fence, error=text)
        if kept:
            METRICS.worker_jobs.labels(type=job.kind, status="failed").inc()
        self._log.warn(
            "{kind} job {job_id} failed: {error}",
            kind=job.kind,
            job_id=job.id,
            error=text,
            mailbox_id=job.mailbox_id,
        )

    async def _export(self, job, fence, check):
        mailbox = await self.store.get_mailbox(job.mailbox_id)
        if mailbox is None:
            raise JobFailed("mailbox not found")
        fd, path = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=self.spool_dir)
        os.close(fd)
        try:
            count = await exporter.write_export(
                self.store, job.mailbox_id, path, self._thread, check
            )
            check()
            key = exporter.object_key(job.id)
            size = await self.store.blobs.put_object(key, path)
        finally:
            await self._thread(spool.remove, path)
        expires = self.now_ns() + exporter.EXPORT_LIFETIME_SECONDS * 1_000_000_000
        if await self.store.finish_export_job(fence, key, size, expires):
            METRICS.worker_jobs.labels(type="export", status="completed").inc()
            self._log.info(
                "export job {job_id} completed: {count} messages, {size} bytes in {key}",
                job_id=job.id,
                count=count,
                size=size,
                key=key,
                mailbox_id=job.mailbox_id,
            )

    async def _import(self, job, fence, check):
        config = self.get_config()
        mailbox = await self.store.get_mailbox(job.mailbox_id)
        if mailbox is None or mailbox.deleted_at is not None:
            raise JobFailed("mailbox not found")
        source = open_source(
            job,
            config.imports.root,
            self.store,
            self.spool_dir,
            config.max_message_size,
            self.reactor,
        )
        importer = Importer(self.store, job, fence, source, check)
        await importer.run()
        final = await self.store.get_job("import", job.id)
        note = None
        if final is not None and final.skipped_count:
            note = (
                f"skipped {final.skipped_count} messages larger than "
                f"{config.max_message_size} bytes (limits.max_message_size_bytes)"
            )
        if await self.store.finish_import_job(fence, note=note):
            METRICS.worker_jobs.labels(type="import", status="completed").inc()
            self._log.info(
                "import job {job_id} completed: {imported} messages stored this attempt",
                job_id=job.id,
                imported=importer.imported,
                mailbox_id=job.mailbox_id,
            )


class _Lease:
    """Renews a job's lease every third of its length while the job runs. When renewal says
    the lease is gone, or has failed until the lease is about to run out, ``lost`` turns true
    and the job stops at its next check."""

    def __init__(self, worker: JobWorker, fence):
        self.worker = worker
        self.fence = fence
        self.lost = False
        self.until = worker.now_ns() + int(worker.lease_seconds * 1e9)
        self._loop = task.LoopingCall(self._renew)
        self._loop.clock = worker.clock

    def start(self):
        self._loop.start(self.worker.lease_seconds / 3, now=False).addErrback(
            lambda f: self.worker._log.failure("job lease renewal stopped", f)
        )

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _renew(self):
        return defer.Deferred.fromCoroutine(self._renew_async())

    async def _renew_async(self):
        worker = self.worker
        until = worker.now_ns() + int(worker.lease_seconds * 1e9)
        try:
            held = await worker.store.renew_job_lease(self.fence, until)
        except Exception as e:
            held = None
            worker._log.warn(
                "cannot renew the lease of job {job_id}: {error}",
                job_id=self.fence.job_id,
                error=str(e),
            )
        if held:
            self.until = until
            return
        margin = int(worker.lease_seconds * 1e9 / 6)
        if held is False or worker.now_ns() >= self.until - margin:
            self.lost = True
