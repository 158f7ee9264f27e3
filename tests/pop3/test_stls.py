"""POP3 with TLS configured: STLS (RFC 2595), USER/PASS/AUTH refused before it with
``-ERR [AUTH]`` (RFC 3206), and implicit TLS (port 995); poplib over 127.0.0.1, a test CA."""

from __future__ import annotations

import poplib
import shutil
import socket
import tempfile

from twisted.internet import reactor, threads

from haitatsu.pop3 import POP3Factory
from tests.pop3.helpers import ADDRESS, SIMPLE, POP3TestCase, d
from tests.tls.ca import TLSFixture, common_name, peer_certificate


def read_until(sock, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class POP3TLSTests(POP3TestCase):
    async def _setUp(self):
        await super()._setUp()
        ca_dir = tempfile.mkdtemp(prefix="haitatsu-pop3-ca-")
        self.addCleanup(shutil.rmtree, ca_dir, True)
        self.fixture = TLSFixture(ca_dir)
        self.tls = self.fixture.service(reactor)
        self.factory = POP3Factory(lambda: self.config, self.store, self.clock, tls=self.tls)

    def listen(self, implicit=False) -> int:
        factory = self.tls.wrap_factory(self.factory) if implicit else self.factory
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @d
    async def test_user_refused_until_stls(self):
        await self.deliver(SIMPLE)
        port = self.listen()
        password = self.password
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)

        def client():
            seen = {}
            conn = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                seen["before"] = conn.capa()
                for command in ("USER " + ADDRESS, "PASS " + password, "AUTH PLAIN"):
                    try:
                        conn._shortcmd(command)
                    except poplib.error_proto as e:
                        seen.setdefault("refused", []).append(e.args[0])
                conn.stls(context)
                seen["cert"] = peer_certificate(conn.sock)
                seen["after"] = conn.capa()
                try:
                    conn._shortcmd("STLS")
                except poplib.error_proto as e:
                    seen["again"] = e.args[0]
                conn.user(ADDRESS)
                conn.pass_(password)
                seen["stat"] = conn.stat()
                seen["body"] = b"\r\n".join(conn.retr(1)[1]) + b"\r\n"
            finally:
                conn.quit()
            return seen

        seen = await threads.deferToThread(client)
        self.assertIn("STLS", seen["before"])
        self.assertNotIn("USER", seen["before"])
        self.assertNotIn("SASL", seen["before"])
        self.assertEqual(
            seen["refused"],
            [b"-ERR [AUTH] Plaintext authentication is disabled before STLS"] * 3,
        )
        self.assertEqual(common_name(seen["cert"]), TLSFixture.DEFAULT_NAME)
        self.assertNotIn("STLS", seen["after"])
        self.assertIn("USER", seen["after"])
        self.assertEqual(seen["again"], b"-ERR Command not permitted when TLS active")
        self.assertEqual(seen["stat"], (1, len(SIMPLE)))
        self.assertEqual(seen["body"], SIMPLE)

    @d
    async def test_implicit_tls_port_with_sni(self):
        await self.deliver(SIMPLE)
        port = self.listen(implicit=True)
        password = self.password
        context = self.fixture.ca.client_context(TLSFixture.OTHER_NAME)

        def client():
            conn = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=10)
            try:
                caps = conn.capa()
                cert = peer_certificate(conn.sock)
                conn.user(ADDRESS)
                conn.pass_(password)
                return caps, cert, conn.stat()
            finally:
                conn.quit()

        caps, cert, stat = await threads.deferToThread(client)
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        self.assertEqual(common_name(cert), TLSFixture.OTHER_NAME)
        self.assertEqual(stat, (1, len(SIMPLE)))

    @d
    async def test_commands_pipelined_after_stls_are_discarded(self):
        port = self.listen()
        context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                read_until(sock, b"\r\n")
                sock.sendall(b"STLS\r\nCAPA\r\n")
                plain = read_until(sock, b"\r\n")
                with context.wrap_socket(sock) as tls:
                    tls.sendall(b"NOOP\r\n")
                    secure = read_until(tls, b"\r\n")
            return plain, secure

        plain, secure = await threads.deferToThread(client)
        self.assertEqual(plain, b"+OK Begin TLS negotiation now\r\n")
        # The first answer inside TLS is NOOP's (refused: not logged in), not a capability list.
        self.assertEqual(secure, b"-ERR Command not valid in this state\r\n")

    @d
    async def test_without_tls_user_stays_plaintext(self):
        self.factory = POP3Factory(lambda: self.config, self.store, self.clock)
        session = self.connect()
        caps = await session.command(b"CAPA", multiline=True)
        self.assertNotIn(b"STLS", caps)
        self.assertIn(b"USER", caps)
        self.assertEqual(await session.command(b"STLS"), b"-ERR TLS is not available\r\n")
        await self.login(session)
