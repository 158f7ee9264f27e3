"""Explicit wiring: the live config, the store, and one listener service per configured address.

``HaitatsuService`` is the root of the service tree ``twistd haitatsu`` runs. Listener ports bind
in ``privilegedStartService`` (so ``twistd --uid`` can open port 25 and drop root); the store opens
in ``startService``. A connection that arrives before the store is open gets the protocol's
temporary failure, exactly as when the database is down later.
"""

from __future__ import annotations

import os

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from haitatsu import log
from haitatsu.auth.throttle import LoginThrottle
from haitatsu.config.model import Config
from haitatsu.config.watcher import ConfigWatcher
from haitatsu.housekeeping import Housekeeping
from haitatsu.storage import build_store


class HaitatsuService(MultiService):
    """Owns the hub: config watcher, store, housekeeping and listeners."""

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
        )
        self.housekeeping.setServiceParent(self)
        self.ready = defer.Deferred()
        self._build_listeners(config)

    def get_config(self) -> Config:
        return self.watcher.current

    def _build_listeners(self, config: Config):
        from haitatsu.api import HaitatsuAPI
        from haitatsu.imap import IMAPFactory
        from haitatsu.pop3 import POP3Factory
        from haitatsu.smtp import InboundSMTPFactory
        from haitatsu.submission import SubmissionFactory
        from haitatsu.submission.pipeline import SubmissionPipeline

        # One pipeline for SMTP submission and the REST API's outbound route.
        submission = SubmissionPipeline(self.store, self.get_config, self.reactor, self.spool_dir)

        listeners = {
            "smtp.inbound_addr": lambda: InboundSMTPFactory(
                self.get_config, self.store, self.reactor, self.spool_dir
            ),
            "imap.addr": lambda: IMAPFactory(
                self.get_config, self.store, self.reactor, self.spool_dir, self.login_throttle
            ),
            "pop3.addr": lambda: POP3Factory(
                self.get_config, self.store, self.reactor, self.login_throttle
            ),
            "submission.starttls_addr": lambda: SubmissionFactory(
                self.get_config,
                self.store,
                self.reactor,
                self.spool_dir,
                throttle=self.login_throttle,
                pipeline=submission,
            ),
            # TODO(tls): "pop3.tls_addr" and "submission.tls_addr" (implicit TLS) once
            # listeners get a TLS context; the latter with SubmissionFactory(implicit_tls=True).
            "server.api_addr": lambda: HaitatsuAPI(
                self.get_config,
                self.store,
                self.watcher,
                self.reactor,
                spool_dir=self.spool_dir,
                submission=submission,
            ).site(),
        }
        if config.pop3.tls_addr:
            self._log.warn("pop3.tls_addr is set, but implicit TLS is not built yet: not listening")
        if config.submission.tls_addr:
            self._log.warn(
                "submission.tls_addr is set, but implicit TLS is not built yet: not listening"
            )
        for key, make_factory in listeners.items():
            endpoint = config.endpoint(key)
            if not endpoint:
                continue
            service = strports.service(endpoint, make_factory())
            service.setName(key)
            service.setServiceParent(self)

    def startService(self):
        os.makedirs(self.spool_dir, exist_ok=True)
        super().startService()
        d = defer.Deferred.fromCoroutine(self.store.open())
        d.addCallbacks(self._opened, self._failed_to_open)

    def _opened(self, _):
        self._log.info("storage open; haitatsu is ready")
        self.ready.callback(self)

    def _failed_to_open(self, failure):
        self._log.failure("could not open storage; stopping", failure)
        self.ready.errback(failure)
        self.ready.addErrback(lambda _: None)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield defer.Deferred.fromCoroutine(self.store.close())
