"""Driving a ``SubmissionESMTP`` over a ``StringTransport`` against a real store, and the DKIM
and message helpers the submission tests share."""

from __future__ import annotations

import base64
import os

import dkim
from twisted.internet import reactor, task
from twisted.internet.testing import StringTransport

from haitatsu import dkim as dkimmod
from haitatsu.auth import LoginThrottle
from haitatsu.config.model import Config, LimitsConfig, ServerConfig, SMTPConfig, TLSConfig
from haitatsu.smtp.spool import SpoolDirectory
from haitatsu.submission import SubmissionFactory
from tests.smtp.helpers import PEER, Session, temp_dir

HOST = "mail.example.test"
NODE = "node-1"


def make_config(
    max_message_size: int = 100_000,
    max_submission_recipients: int = 100,
    per_hour: int = 0,
    per_day: int = 0,
    recipients_per_message: int = 0,
    tls_mode: str = "off",
) -> Config:
    return Config(
        server=ServerConfig(public_hostname=HOST, instance_name=NODE),
        smtp=SMTPConfig(idle_timeout_seconds=60, max_line_length=4000),
        tls=TLSConfig(mode=tls_mode, cert_file="c.pem", key_file="k.pem"),
        limits=LimitsConfig(
            max_message_size_bytes=max_message_size,
            max_submission_recipients=max_submission_recipients,
            default_outbound_per_hour=per_hour,
            default_outbound_per_day=per_day,
            default_outbound_recipients_per_message=recipients_per_message,
        ),
    )


def plain(username: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{username}\0{password}".encode())


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


class SubmissionSession(Session):
    """A ``Session`` (tests/smtp/helpers.py) on a ``SubmissionFactory``; the login throttle's
    clock is ``self.clock`` too."""

    def __init__(self, testcase, store, config=None, throttle=None, implicit_tls=False):
        self.clock = task.Clock()
        self.config = config or make_config()
        self.spool_dir = os.path.join(temp_dir(testcase), "spool")
        self.throttle = throttle or LoginThrottle(store, self.clock)
        self.factory = SubmissionFactory(
            lambda: self.config,
            store,
            reactor,
            self.spool_dir,
            throttle=self.throttle,
            implicit_tls=implicit_tls,
        )
        # Spool files made and removed at once, not in threads, so ``spool_files()`` shows
        # what is left the moment a reply is out (tests/smtp/test_spool.py covers the threads).
        self.factory.spool = SpoolDirectory(self.spool_dir)
        self.factory.doStart()
        testcase.addCleanup(self.factory.doStop)
        self.protocol = self.factory.buildProtocol(PEER)
        # The idle timer on the test's clock; the pipeline (Date, t=) on the real reactor.
        self.protocol.clock = self.clock
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)
        self._seen = 0


def dns_for(keys):
    """A dkimpy ``dnsfunc`` answering the TXT records of ``keys`` (DkimKey records): dkimpy's
    own hook for where its DNS answers come from."""
    records = {
        dkimmod.dns_name(k.selector, k.domain).encode() + b".": dkimmod.dns_record(
            k.algorithm, k.public_key
        ).encode()
        for k in keys
    }

    def dnsfunc(name, timeout=5):
        name = name if name.endswith(b".") else name + b"."
        return records.get(name)

    return dnsfunc


def verify(message: bytes, keys) -> bool:
    return dkim.verify(message, dnsfunc=dns_for(keys))
