"""The MX on loopback with a filter chain built as the server builds it, a real SQLite store and a
twisted.names server on loopback serving the test zones; smtplib as the client."""

from __future__ import annotations

import os
import smtplib

import dkim
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from haitatsu import dkim as dkimkeys
from haitatsu.config.model import Config, DNSConfig, FilterSpec, ServerConfig
from haitatsu.filtering.registry import Filtering
from haitatsu.smtp import InboundSMTPFactory
from tests.filters.zones import start_zone_server
from tests.smtp.helpers import temp_dir
from tests.support import make_store

HOSTNAME = "mx.auth.test"


def message(
    sender="Alice <alice@example.org>", subject="hello", body=b"Hello Bob,\r\n\r\nsee you.\r\n"
):
    return (
        f"From: {sender}\r\n"
        "To: bob@example.com\r\n"
        f"Subject: {subject}\r\n"
        "Date: Thu, 01 May 2025 10:20:30 +0000\r\n"
        "Message-ID: <m1@example.org>\r\n"
        "\r\n"
    ).encode() + body


MESSAGE = message()

_KEY: list = []


def signing_key():
    """``(private_pem, dns_record)`` of one RSA key for the whole run."""
    if not _KEY:
        pair = dkimkeys.generate_key("rsa")
        _KEY.append((pair.private_pem.encode(), dkimkeys.dns_record("rsa", pair.public_pem)))
    return _KEY[0]


def dkim_sign(data: bytes, domain: str = "example.org", selector: str = "sel") -> bytes:
    pem, _ = signing_key()
    return dkim.sign(data, selector.encode(), domain.encode(), pem) + data


def spec(name, **options):
    return FilterSpec(name, options=options)


class AuthMX(unittest.TestCase):
    """``serve(zones, *filters)``: the MX on 127.0.0.1 with those filters, asking DNS of a
    zone server for ``zones``; mailboxes bob@ and carol@example.com."""

    timeout = 60

    async def setUp(self):
        self.root = temp_dir(self)
        self.store = await make_store(self, os.path.join(self.root, "store"))
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("carol@example.com")

    async def serve(self, zones: dict, *filters, dns_timeout: float = 1.0, **config):
        port, self.zone = start_zone_server(self, zones)
        self.config = Config(
            server=ServerConfig(public_hostname=HOSTNAME),
            dns=DNSConfig(nameservers=(f"127.0.0.1:{port}",), timeout_seconds=dns_timeout),
            filters=tuple(filters),
            **config,
        )
        self.filtering = Filtering(self.store, reactor, self.config)
        factory = InboundSMTPFactory(
            lambda: self.config,
            self.store,
            reactor,
            os.path.join(self.root, "spool"),
            chain=self.filtering.get_chain,
        )
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    def client(self, helo="client.test") -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname=helo, timeout=15)

    def _sendmail(self, rcpts, data, sender, helo):
        with self.client(helo) as c:
            try:
                return c.sendmail(sender, rcpts, data)
            except smtplib.SMTPRecipientsRefused as e:
                return dict(e.recipients)
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
                return (e.smtp_code, e.smtp_error)

    def sendmail(
        self, data=MESSAGE, sender="alice@example.org", rcpts=("bob@example.com",), helo=None
    ):
        """smtplib's ``sendmail`` in a thread: {} when every recipient took it, the refused
        recipients, or ``(code, text)`` of a refused MAIL or DATA."""
        return threads.deferToThread(
            self._sendmail, list(rcpts), data, sender, helo or "client.test"
        )

    async def stored(self, mailbox=None, folder="INBOX"):
        """``[(MessageInfo, raw bytes)]`` in one folder of bob's (or ``mailbox``'s)."""
        f = await self.store.get_folder((mailbox or self.bob).id, folder)
        rows = await self.store.list_folder_messages(f.id)
        if not rows:
            return []
        infos = [info for _, info in await self.store.get_messages(f.id, [r.uid for r in rows])]
        return [(info, await self.store.read_message(info)) for info in infos]

    async def only(self, folder="INBOX"):
        """The one message in bob's ``folder``: ``(auth_results, raw, spam_score)``."""
        [(info, raw)] = await self.stored(folder=folder)
        return info.auth_results, raw, info.spam_score


def auth_header(raw: bytes) -> str:
    """Our Authentication-Results field, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    fields = head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
    [ours] = [f for f in fields if f.startswith(f"Authentication-Results: {HOSTNAME}")]
    return ours
