"""What the queue tests share: a scripted relay written with twisted.mail's ESMTP server, a
test CA, and jobs queued the way submission queues them (a Sent copy plus ``_enqueue``)."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import os
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.protocol import ServerFactory
from twisted.mail import smtp
from zope.interface import implementer

from haitatsu.config.model import (
    Config,
    NotificationsConfig,
    RelayConfig,
    ServerConfig,
    WorkersConfig,
)
from haitatsu.queue import OutboundQueue, verp_address
from tests.support import deliver_bytes

HOST = "mx.example.test"
SENDER = "alice@example.com"

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@remote.test>\r\n"
    b"Subject: hello from the queue\r\n"
    b"Message-ID: <queue-test-1@example.com>\r\n"
    b"Date: Thu, 01 May 2025 10:20:30 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b"\r\n"
    b"Bye.\r\n"
)


def make_config(relay_addr: str = "", **relay) -> Config:
    return Config(
        server=ServerConfig(public_hostname=HOST, instance_name="node-1"),
        relay=RelayConfig(addr=relay_addr, **relay),
        workers=WorkersConfig(enabled=True, concurrency=1),
        notifications=NotificationsConfig(),
    )


def make_clock() -> task.Clock:
    """A clock at the real time, a little ahead: jobs queued just now are due, even when the
    test gets to queue them some seconds later (a loaded machine; a second was not enough)."""
    clock = task.Clock()
    clock.advance(time.time() + 20)
    return clock


def make_queue(testcase, store, config, clock=None, node="node-1", lease_seconds=300):
    spool = tempfile.mkdtemp(prefix="haitatsu-queue-")
    testcase.addCleanup(lambda: __import__("shutil").rmtree(spool, ignore_errors=True))
    holder = {"config": config}
    queue = OutboundQueue(
        store,
        lambda: holder["config"],
        reactor,
        spool,
        clock=clock if clock is not None else make_clock(),
        node=node,
        lease_seconds=lease_seconds,
    )
    queue.holder = holder
    return queue


async def queue_message(store, recipients, data: bytes = MESSAGE, address: str = SENDER):
    """Queue ``data`` from ``address`` (mailbox created when missing) for ``recipients`` as
    submission does: the Sent copy, then ``_enqueue`` with the VERP return path."""
    mailbox = await store.find_mailbox(address) or await store.create_mailbox(address)
    (placed,) = await deliver_bytes(store, data, mailbox.id, folder="Sent")
    domain = address.rpartition("@")[2]

    async def enqueue(txn):
        return await store._enqueue(
            txn,
            placed.message_id,
            mailbox.id,
            verp_address(placed.message_id, domain),
            recipients,
            trace_id="TRACE-" + placed.message_id,
        )

    job_id = await store.db.run("enqueue", enqueue)
    return mailbox, placed.message_id, job_id


async def inbox_messages(store, mailbox_id):
    """``(MailboxMessage, MessageInfo, bytes)`` of every INBOX message, oldest first."""
    folder = await store.get_folder(mailbox_id, "INBOX")
    out = []
    for mm in await store.list_folder_messages(folder.id):
        (pair,) = await store.get_messages(folder.id, [mm.uid])
        out.append((mm, pair[1], await store.read_message(pair[1])))
    return out


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# -- a scripted relay -------------------------------------------------------------------------


@implementer(smtp.IMessage)
class _Collector:
    def __init__(self):
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        return defer.succeed(None)

    def connectionLost(self):
        pass


class RelaySession(smtp.ESMTP):
    """twisted.mail's ESMTP server answering as the relay's script says: RCPT answers per
    address, end-of-DATA answers in turn (twisted itself answers any failure there 550, so
    ``_messageHandled`` is ours), AUTH PLAIN against one user, STARTTLS with a test
    certificate."""

    def connectionMade(self):
        super().connectionMade()
        self.relay = self.factory.relay
        self.relay.sessions += 1
        self.user = None
        self._collectors = []

    def receivedHeader(self, helo, origin, recipients):
        return None

    def extensions(self):
        ext = super().extensions()
        if not self.relay.auth:
            ext.pop(b"AUTH", None)
        return ext

    def ext_AUTH(self, rest):
        mechanism, _, initial = rest.partition(b" ")
        if mechanism.upper() != b"PLAIN" or not initial:
            self.sendCode(504, b"5.5.4 only PLAIN with an initial response")
            return
        _, user, password = base64.b64decode(initial).split(b"\0")
        if (user.decode(), password.decode()) == self.relay.auth:
            self.user = user.decode()
            self.sendCode(235, b"2.7.0 authenticated")
        else:
            self.sendCode(535, b"5.7.8 authentication failed")

    def validateFrom(self, helo, origin):
        if self.relay.auth and self.user is None:
            raise smtp.SMTPServerError(530, "5.7.0 authentication required")
        self._collectors = []
        self.mail_from = str(origin)
        return origin

    def validateTo(self, user):
        address = str(user.dest)
        code, text = self.relay.rcpt_replies.get(address, (250, "2.1.5 ok"))
        if code >= 400:
            raise smtp.SMTPServerError(code, text)

        def collector():
            c = _Collector()
            c.address = address
            self._collectors.append(c)
            return c

        return collector

    def _messageHandled(self, resultList):
        relay = self.relay
        relay.data_count += 1
        if relay.stall:
            return
        code, text = relay.data_replies.pop(0) if relay.data_replies else (250, "2.0.0 queued")
        if code == 250:
            data = b"".join(line + b"\r\n" for line in self._collectors[0].lines)
            relay.received.append(
                {
                    "rcpts": [c.address for c in self._collectors],
                    "data": data,
                    "tls": self.startedTLS,
                    "user": self.user,
                    "from": self.mail_from,
                }
            )
            relay.arrived.callback(None) if not relay.arrived.called else None
        self.sendCode(code, text.encode())


class ScriptedRelay(ServerFactory):
    protocol = RelaySession

    def __init__(self, rcpt_replies=None, data_replies=None, tls=None, auth=None, stall=False):
        self.relay = self
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_replies = list(data_replies or [])
        self.tls = tls
        self.auth = auth
        self.stall = stall
        self.sessions = 0
        self.data_count = 0
        self.received = []
        self.arrived = defer.Deferred()
        self.port = None

    def buildProtocol(self, addr):
        proto = RelaySession(contextFactory=self.tls)
        if self.auth:
            proto.challengers = {b"PLAIN": None}
        proto.factory = self
        proto.host = b"relay.test"
        return proto

    def listen(self, testcase):
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        return self.port.getHost().port


# -- a test CA ----------------------------------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: str, server_name: str = "localhost"):
    """A CA (its PEM written to ``<directory>/ca.pem``) and a server certificate for
    ``server_name`` signed by it; return the CA file and the server's TLS options."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("haitatsu test CA"))
        .issuer_name(_name("haitatsu test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(server_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = os.path.join(directory, "ca.pem")
    with open(ca_file, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ca_file, ssl.PrivateCertificate.loadPEM(pem).options()
