"""Explicit wiring: the live config, the store, and one listener service per configured address.

``HaitatsuService`` is the root of the service tree ``twistd haitatsu`` runs. Listener ports bind
in ``privilegedStartService`` (so ``twistd --uid`` can open port 25 and drop root); the store opens
in ``startService``. A connection that arrives before the store is open gets the protocol's
temporary failure, exactly as when the database is down later.
"""

from __future__ import annotations

import os
import time

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from haitatsu import log
from haitatsu.auth.throttle import LoginThrottle
from haitatsu.config.model import Config
from haitatsu.config.watcher import ConfigWatcher
from haitatsu.filtering.registry import Filtering
from haitatsu.housekeeping import Housekeeping
from haitatsu.jobs import JobWorker
from haitatsu.limits import PeerCounter
from haitatsu.queue import BounceHandler, OutboundQueue
from haitatsu.storage import build_store
from haitatsu.tls import TLSService

#: A file in the spool directory this old at start-up was left by a crash (live transfers write
#: to theirs all the time).
SPOOL_LEFTOVER_SECONDS = 3600


class HaitatsuService(MultiService):
    """Owns the hub: config watcher, store, housekeeping, webhook workers and listeners."""

    _log = Logger()

    def __init__(self, config_path: str, config: Config, reactor):
        super().__init__()
        self.reactor = reactor
        self.watcher = ConfigWatcher(config_path, reactor, config)
        self.watcher.setServiceParent(self)
        self.watcher.add_listener(log.apply_reload)
        self.store = build_store(config, reactor)
        # One throttle for every login listener: failures on IMAP count for POP3 and back.
        self.login_throttle = LoginThrottle(self.store, reactor)
        self.spool_dir = os.path.join(config.data_dir, "spool")
        self.housekeeping = Housekeeping(
            self.store,
            reactor,
            gc_interval=config.storage.blob_gc_interval_seconds,
            gc_grace=config.storage.blob_gc_grace_seconds,
            retention=lambda: self.get_config().retention,
        )
        self.housekeeping.setServiceParent(self)
        # None when tls.mode is off. Built here, before the reactor runs and before twistd drops
        # privileges, so unusable certificate files stop the start with their error.
        self.tls = TLSService.from_config(config, reactor)
        if self.tls is not None:
            self.tls.setServiceParent(self)
            self.watcher.add_reload_check(self.tls.prepare_reload)
        # The filter chain, built now so that a bad filter or plugin stops the start with its
        # error; rebuilt on every reload (a failure refuses the reload, the chain stays).
        self.filtering = Filtering(self.store, reactor, config)
        self.watcher.add_reload_check(self.filtering.prepare_reload)
        self.ready = defer.Deferred()
        self.bounces = BounceHandler(self.store, reactor)
        #: Started once the store is open, when ``workers.enabled`` (restart-only).
        self.queue = None
        #: Export and import jobs (API.md 1.13); started like the queue.
        self.jobs = None
        if config.workers.enabled:
            self.queue = OutboundQueue(self.store, self.get_config, reactor, self.spool_dir)
            self.jobs = JobWorker(self.store, self.get_config, reactor, self.spool_dir)
        self.webhooks = self._build_webhooks(config)
        self._build_listeners(config)

    def get_config(self) -> Config:
        return self.watcher.current

    def _build_listeners(self, config: Config):
        from haitatsu.api import HaitatsuAPI
        from haitatsu.imap import IMAPFactory
        from haitatsu.pop3 import POP3Factory
        from haitatsu.sieve.managesieve import ManageSieveFactory
        from haitatsu.smtp import InboundSMTPFactory
        from haitatsu.submission import SubmissionFactory
        from haitatsu.submission.pipeline import SubmissionPipeline

        # One pipeline for SMTP submission and the REST API's outbound route.
        submission = SubmissionPipeline(self.store, self.get_config, self.reactor, self.spool_dir)

        tls = self.tls
        # Per-IP limits (haitatsu/limits.py): the plaintext and the implicit-TLS listener of a
        # protocol count against one limit.
        imap_sessions, pop3_sessions, submission_connections = (
            PeerCounter(),
            PeerCounter(),
            PeerCounter(),
        )

        def imap():
            return IMAPFactory(
                self.get_config,
                self.store,
                self.reactor,
                self.spool_dir,
                self.login_throttle,
                tls=tls,
                sessions=imap_sessions,
            )

        def pop3():
            return POP3Factory(
                self.get_config,
                self.store,
                self.reactor,
                self.login_throttle,
                tls=tls,
                sessions=pop3_sessions,
            )

        def submission_factory(implicit_tls):
            return SubmissionFactory(
                self.get_config,
                self.store,
                self.reactor,
                self.spool_dir,
                throttle=self.login_throttle,
                implicit_tls=implicit_tls,
                pipeline=submission,
                tls=None if implicit_tls else tls,
                connections=submission_connections,
            )

        listeners = {
            "smtp.inbound_addr": lambda: InboundSMTPFactory(
                self.get_config,
                self.store,
                self.reactor,
                self.spool_dir,
                tls=tls,
                bounces=self.bounces,
                chain=self.filtering.get_chain,
            ),
            "imap.addr": imap,
            "pop3.addr": pop3,
            "managesieve.addr": lambda: ManageSieveFactory(
                self.get_config, self.store, self.reactor, self.login_throttle, tls=tls
            ),
            "submission.starttls_addr": lambda: submission_factory(implicit_tls=False),
            "server.api_addr": lambda: HaitatsuAPI(
                self.get_config,
                self.store,
                self.watcher,
                self.reactor,
                spool_dir=self.spool_dir,
                submission=submission,
                acme_http01=tls.acme.http01 if tls is not None and tls.acme else None,
                resolver=lambda: self.filtering.resolver,
            ).site(),
        }
        # Implicit TLS: the same protocols, TLS from the first byte (and so no STARTTLS and no
        # plaintext-login refusal on them). Served only when TLS is configured.
        implicit = {
            "imap.tls_addr": imap,
            "pop3.tls_addr": pop3,
            "submission.tls_addr": lambda: submission_factory(implicit_tls=True),
        }
        for key, make_factory in listeners.items():
            self.listen(config, key, make_factory)
        for key, make_factory in implicit.items():
            self.listen(config, key, make_factory, implicit_tls=True)

    def listen(self, config: Config, key: str, make_factory, implicit_tls: bool = False):
        """Add a listener service for the address under ``key`` (nothing if it is empty).

        With ``implicit_tls`` the connections speak TLS from the first byte; without TLS
        configured such a listener is not opened (logged), as API.md says of
        ``submission.tls_addr``.
        """
        endpoint = config.endpoint(key)
        if not endpoint:
            return None
        factory = make_factory()
        if implicit_tls:
            if self.tls is None:
                self._log.warn("{key} is set but tls.mode is off: not listening on it", key=key)
                return None
            factory = self.tls.wrap_factory(factory)
        service = strports.service(endpoint, factory)
        service.setName(key)
        service.setServiceParent(self)
        return service

    def startService(self):
        os.makedirs(self.spool_dir, exist_ok=True)
        super().startService()
        self._sweep_spool()
        d = defer.Deferred.fromCoroutine(self.store.open())
        d.addCallbacks(self._opened, self._failed_to_open)

    def _sweep_spool(self):
        """Remove what a crash left in the spool directory (files older than an hour)."""
        from twisted.internet.threads import deferToThreadPool

        from haitatsu.smtp import spool

        d = deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            spool.sweep,
            self.spool_dir,
            SPOOL_LEFTOVER_SECONDS,
            time.time(),
        )

        def swept(count):
            if count:
                self._log.info(
                    "removed {count} files left in {spool} by an earlier process",
                    count=count,
                    spool=self.spool_dir,
                )

        d.addCallbacks(
            swept,
            lambda f: self._log.failure("sweeping the spool directory failed", failure=f),
        )
        self.spool_swept = d

    def _opened(self, _):
        if self.queue is not None and self.running:
            self.queue.setServiceParent(self)  # starts it: the parent is running
        if self.jobs is not None and self.running:
            self.jobs.setServiceParent(self)
        if self.webhooks is not None and self.running:
            # Like the queue: started once the store is open (a running MultiService starts a
            # child it gains); stopped with the other children, before the store closes.
            self.webhooks.setServiceParent(self)
        self._log.info("storage open; haitatsu is ready")
        self.ready.callback(self)

    def _build_webhooks(self, config: Config):
        """The webhook workers (``workers.enabled``), each POSTing through one treq client."""
        if not config.workers.enabled:
            return None
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        from haitatsu.webhooks import WebhookWorker

        pool = HTTPConnectionPool(self.reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        return WebhookWorker(
            self.store,
            self.get_config,
            HTTPClient(Agent(self.reactor, pool=pool)),
            self.reactor,
            node=config.server.instance_name,
            loops=config.workers.concurrency or 1,
        )

    def _failed_to_open(self, failure):
        self._log.failure("could not open storage; stopping", failure)
        self.ready.errback(failure)
        self.ready.addErrback(lambda _: None)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        self.filtering.current.retire()  # filters with a close() are told, once idle
        yield defer.Deferred.fromCoroutine(self.store.close())
