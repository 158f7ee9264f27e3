"""STARTTLS on the MX (RFC 3207): real clients over 127.0.0.1 with a test CA, and the protocol
rules on a ``StringTransport``."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess
import warnings

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from haitatsu.smtp import InboundSMTPFactory
from haitatsu.tls import TLSService
from tests.smtp.helpers import Session, make_config, temp_dir
from tests.support import make_store
from tests.tls.ca import TLSFixture, common_name, peer_certificate

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: over TLS\r\n"
    b"\r\n"
    b"Hello inside TLS.\r\n"
)

SWAKS = shutil.which("swaks")


def read_reply(sock) -> bytes:
    """One complete SMTP reply (all its lines) from a blocking socket."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-1] == b"" and lines[-2][3:4] == b" ":
            return data


class StartTLSProtocolTests(unittest.TestCase):
    """What the session says about STARTTLS, without a handshake."""

    def setUp(self):
        self.fixture = TLSFixture(temp_dir(self))

    def session(self, tls):
        session = Session(self)
        session.protocol.tls = tls
        session.lines()  # greeting
        return session

    def test_not_offered_without_tls(self):
        s = self.session(None)
        self.assertNotIn(b"STARTTLS", b"\n".join(s.command(b"EHLO client.example\r\n")))
        self.assertEqual(s.command(b"STARTTLS\r\n"), [b"502 5.5.1 command not implemented"])

    def test_offered_with_tls(self):
        s = self.session(self.fixture.service(reactor))
        lines = s.command(b"EHLO client.example\r\n")
        self.assertEqual(lines[-1], b"250 STARTTLS")
        self.assertEqual(
            s.command(b"STARTTLS now\r\n"), [b"501 5.5.4 STARTTLS takes no parameters"]
        )

    def test_454_when_no_certificate_is_loaded(self):
        # TLS configured but nothing to serve yet (an ACME order still pending): not advertised,
        # and a client that tries anyway gets RFC 3207's temporary failure.
        s = self.session(TLSService(reactor, None))
        self.assertNotIn(b"STARTTLS", b"\n".join(s.command(b"EHLO client.example\r\n")))
        self.assertEqual(
            s.command(b"STARTTLS\r\n"), [b"454 4.7.0 TLS not available due to temporary reason"]
        )


class StartTLSLoopbackTests(unittest.TestCase):
    async def setUp(self):
        root = temp_dir(self)
        self.fixture = TLSFixture(root + "/ca")
        self.tls = self.fixture.service(reactor)
        self.store = await make_store(self, root + "/store")
        self.bob = await self.store.create_mailbox("bob@example.com")
        factory = InboundSMTPFactory(
            lambda: make_config(max_message_size=100_000, max_line_length=4000),
            self.store,
            reactor,
            root + "/spool",
            tls=self.tls,
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def stored(self) -> tuple[bytes, dict]:
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        [mm] = await self.store.list_folder_messages(folder.id)
        [(_, info)] = await self.store.get_messages(folder.id, [mm.uid])
        return await self.store.read_message(info), info.auth_results

    def smtplib_session(self, server_name):
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example", timeout=10) as c:
            c.ehlo()
            before = dict(c.esmtp_features)
            c.starttls(context=self.fixture.ca.client_context(server_name))
            cert = peer_certificate(c.sock)
            c.ehlo()
            after = dict(c.esmtp_features)
            version = c.sock.version()
            c.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
        return before, after, cert, version

    async def test_smtplib_starttls_verifies_and_delivers(self):
        before, after, cert, version = await deferToThread(
            self.smtplib_session, TLSFixture.DEFAULT_NAME
        )
        self.assertIn("starttls", before)
        self.assertNotIn("starttls", after)
        self.assertEqual(common_name(cert), TLSFixture.DEFAULT_NAME)
        self.assertEqual(cert.serial_number, self.fixture.default_serial)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        raw, auth_results = await self.stored()
        self.assertIn(b"\twith ESMTPS id ", raw)
        self.assertTrue(raw.endswith(MESSAGE))
        self.assertIs(auth_results["tls"], True)

    async def test_sni_chooses_the_certificate(self):
        _, _, cert, _ = await deferToThread(self.smtplib_session, TLSFixture.OTHER_NAME)
        self.assertEqual(common_name(cert), TLSFixture.OTHER_NAME)
        self.assertEqual(cert.serial_number, self.fixture.other_serial)

    async def test_sni_wildcard_name(self):
        _, _, cert, _ = await deferToThread(self.smtplib_session, "anything.wild.test")
        self.assertEqual(cert.serial_number, self.fixture.other_serial)

    def raw_session(self, payload_after_starttls: bytes):
        """EHLO, then STARTTLS with ``payload_after_starttls`` in the same packet; then TLS,
        EHLO and RCPT. Returns the plaintext replies and the replies inside TLS."""
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            plain = [read_reply(sock)]
            sock.sendall(b"EHLO client.example\r\n")
            plain.append(read_reply(sock))
            sock.sendall(b"STARTTLS\r\n" + payload_after_starttls)
            plain.append(read_reply(sock))
            with context.wrap_socket(sock) as tls:
                secure = []
                for command in (
                    b"RCPT TO:<bob@example.com>\r\n",
                    b"EHLO client.example\r\n",
                    b"RCPT TO:<bob@example.com>\r\n",
                    b"STARTTLS\r\n",
                    b"QUIT\r\n",
                ):
                    tls.sendall(command)
                    secure.append(read_reply(tls))
        return plain, secure

    async def test_commands_pipelined_after_starttls_are_not_executed(self):
        plain, secure = await deferToThread(
            self.raw_session, b"EHLO evil.example\r\nMAIL FROM:<evil@example.org>\r\n"
        )
        self.assertEqual(plain[2], b"220 2.0.0 ready to start TLS\r\n")
        # Had the injected EHLO and MAIL run, RCPT would be accepted inside TLS, and their
        # replies would be the first thing read there.
        self.assertEqual(secure[0], b"503 5.5.1 send HELO/EHLO first\r\n")
        self.assertTrue(secure[1].startswith(b"250-"), secure[1])
        self.assertNotIn(b"STARTTLS", secure[1])
        self.assertEqual(secure[2], b"503 5.5.1 need MAIL before RCPT\r\n")
        self.assertEqual(secure[3], b"503 5.5.1 TLS already active\r\n")
        self.assertTrue(secure[4].startswith(b"221 "), secure[4])

    async def test_transaction_does_not_survive_starttls(self):
        def session():
            context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                read_reply(sock)
                replies = []
                for command in (b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n"):
                    sock.sendall(command)
                    replies.append(read_reply(sock))
                sock.sendall(b"STARTTLS\r\n")
                replies.append(read_reply(sock))
                with context.wrap_socket(sock) as tls:
                    for command in (b"EHLO client.example\r\n", b"RCPT TO:<bob@example.com>\r\n"):
                        tls.sendall(command)
                        replies.append(read_reply(tls))
            return replies

        replies = await deferToThread(session)
        self.assertEqual(replies[1], b"250 2.1.0 sender OK\r\n")
        self.assertEqual(replies[4], b"503 5.5.1 need MAIL before RCPT\r\n")

    async def test_tls_1_1_client_is_refused(self):
        def handshake():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1_1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                read_reply(sock)
                sock.sendall(b"EHLO client.example\r\n")
                read_reply(sock)
                sock.sendall(b"STARTTLS\r\n")
                read_reply(sock)
                context.wrap_socket(sock, server_hostname=TLSFixture.DEFAULT_NAME)

        failure = await self.assertFailure(deferToThread(handshake), ssl.SSLError)
        self.assertIn("VERSION", str(failure).upper())

    async def test_swaks_tls(self):
        if SWAKS is None:
            raise unittest.SkipTest("Debian's swaks is not installed (apt-get install -y swaks)")

        def run():
            return subprocess.run(
                [
                    SWAKS,
                    "--server",
                    f"127.0.0.1:{self.port}",
                    "--ehlo",
                    "client.example",
                    "--from",
                    "alice@example.org",
                    "--to",
                    "bob@example.com",
                    "--tls",
                    "--tls-verify",
                    "--tls-ca-path",
                    self.fixture.ca.ca_file,
                    "--tls-sni",
                    TLSFixture.OTHER_NAME,
                    "--tls-get-peer-cert",
                    "--header",
                    "Subject: swaks over TLS",
                ],
                capture_output=True,
                timeout=30,
            )

        result = await deferToThread(run)
        output = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, output + result.stderr.decode())
        self.assertIn("STARTTLS", output)
        self.assertIn("TLS started", output)
        self.assertIn(TLSFixture.OTHER_NAME, output)
        raw, auth_results = await self.stored()
        self.assertIn(b"Subject: swaks over TLS", raw)
        self.assertIs(auth_results["tls"], True)
