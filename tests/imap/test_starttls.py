"""IMAP with TLS configured: STARTTLS on the plain port (RFC 3501 6.2.1), LOGINDISABLED and
``NO [PRIVACYREQUIRED]`` before it, and implicit TLS (port 993) through the TLS service, with
imaplib over 127.0.0.1 and a test CA."""

from __future__ import annotations

import imaplib
import shutil
import socket
import tempfile

from twisted.internet import reactor, threads

from haitatsu.imap import IMAPFactory
from tests.imap.helpers import ADDRESS, SIMPLE, IMAPTestCase
from tests.imap.test_session import d
from tests.tls.ca import TLSFixture, common_name, peer_certificate


def read_until(sock, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class IMAPTLSTests(IMAPTestCase):
    async def _setUp(self):
        await super()._setUp()
        ca_dir = tempfile.mkdtemp(prefix="haitatsu-imap-ca-")
        self.addCleanup(shutil.rmtree, ca_dir, True)
        self.fixture = TLSFixture(ca_dir)
        self.tls = self.fixture.service(reactor)
        self.factory = IMAPFactory(
            lambda: self.config, self.store, self.clock, spool_dir=self.spool_dir, tls=self.tls
        )

    def listen(self, implicit=False) -> int:
        factory = self.tls.wrap_factory(self.factory) if implicit else self.factory
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @d
    async def test_login_refused_until_starttls(self):
        await self.deliver(SIMPLE)
        port = self.listen()
        password = self.password
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)

        def client():
            seen = {}
            conn = imaplib.IMAP4("127.0.0.1", port)
            with conn:
                seen["before"] = set(conn.capabilities)
                try:
                    conn.login(ADDRESS, password)
                except imaplib.IMAP4.error as e:
                    seen["login"] = str(e)
                typ, data = conn._simple_command("AUTHENTICATE", "PLAIN", "AGFsaWNlAHNlY3JldA==")
                seen["authenticate"] = (typ, data)
                conn.starttls(context)
                seen["cert"] = peer_certificate(conn.sock)
                seen["after"] = set(conn.capabilities)
                seen["login_ok"] = conn.login(ADDRESS, password)[0]
                conn.select("INBOX")
                typ, data = conn.fetch("1", "(BODY.PEEK[])")
                seen["body"] = data[0][1]
            return seen

        seen = await threads.deferToThread(client)
        self.assertIn("STARTTLS", seen["before"])
        self.assertIn("LOGINDISABLED", seen["before"])
        self.assertNotIn("AUTH=PLAIN", seen["before"])
        self.assertIn("[PRIVACYREQUIRED]", seen["login"])
        self.assertEqual(seen["authenticate"][0], "NO")
        self.assertIn(b"[PRIVACYREQUIRED]", seen["authenticate"][1][0])
        self.assertEqual(common_name(seen["cert"]), TLSFixture.DEFAULT_NAME)
        self.assertNotIn("STARTTLS", seen["after"])
        self.assertNotIn("LOGINDISABLED", seen["after"])
        self.assertIn("AUTH=PLAIN", seen["after"])
        self.assertEqual(seen["login_ok"], "OK")
        self.assertEqual(seen["body"], SIMPLE)
        # A refused plaintext LOGIN never reached the checker: no failure counted for the IP.
        self.assertNotIn("127.0.0.1", self.factory.throttle._entries)

    @d
    async def test_implicit_tls_port_with_sni(self):
        await self.deliver(SIMPLE)
        port = self.listen(implicit=True)
        password = self.password
        context = self.fixture.ca.client_context(TLSFixture.OTHER_NAME)

        def client():
            with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context) as conn:
                caps = set(conn.capabilities)
                cert = peer_certificate(conn.sock)
                conn.login(ADDRESS, password)
                typ, data = conn.select("INBOX")
                return caps, cert, data

        caps, cert, data = await threads.deferToThread(client)
        self.assertNotIn("STARTTLS", caps)
        self.assertNotIn("LOGINDISABLED", caps)
        self.assertIn("AUTH=PLAIN", caps)
        self.assertEqual(common_name(cert), TLSFixture.OTHER_NAME)
        self.assertEqual(data, [b"1"])

    @d
    async def test_commands_pipelined_after_starttls_are_discarded(self):
        port = self.listen()
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)
        login = b"b LOGIN %s %s\r\n" % (ADDRESS.encode(), self.password.encode())

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                read_until(sock, b"\r\n")
                sock.sendall(b"a STARTTLS\r\n" + login)
                plain = read_until(sock, b"a OK")
                with context.wrap_socket(sock) as tls:
                    tls.sendall(b"c STARTTLS\r\n")
                    again = read_until(tls, b"c ")
                    tls.sendall(b"d NOOP\r\n")
                    secure = read_until(tls, b"d OK")
            return plain, again, secure

        plain, again, secure = await threads.deferToThread(client)
        self.assertEqual(plain, b"a OK Begin TLS negotiation now\r\n")
        self.assertEqual(again, b"c BAD TLS is already active\r\n")
        # No answer to the pipelined LOGIN anywhere, and the session is still unauthenticated.
        self.assertNotIn(b"b ", secure)
        self.assertEqual(secure, b"d OK NOOP completed\r\n")

    @d
    async def test_without_tls_login_stays_plaintext(self):
        self.factory = IMAPFactory(
            lambda: self.config, self.store, self.clock, spool_dir=self.spool_dir
        )
        session = self.connect()
        caps = await session.command(b"a CAPABILITY")
        self.assertNotIn(b"STARTTLS", caps)
        self.assertNotIn(b"LOGINDISABLED", caps)
        self.assertIn(b"AUTH=PLAIN", caps)
        answer = await session.command(b"b STARTTLS")
        self.assertEqual(answer, b"b BAD STARTTLS is not available\r\n")
        await self.login(session)
