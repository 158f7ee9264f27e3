"""ManageSieve (RFC 5804) on loopback: a socket client speaking the protocol, malformed input,
and Debian's sieve-connect as a real client."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile

from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from haitatsu.config.model import Config, SieveConfig
from haitatsu.sieve.managesieve import ManageSieveFactory, tokenize
from tests.support import make_store

SIEVE_CONNECT = shutil.which("sieve-connect")


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def authenticate(password: str, user: str = "bob@example.com", authzid: str = "") -> bytes:
    return f'AUTHENTICATE "PLAIN" "{plain(user, password, authzid)}"\r\n'.encode()


class Client:
    """A blocking ManageSieve client on a socket (run it in a thread)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes):
        self.sock.sendall(data)

    def response(self) -> list[bytes]:
        """Lines up to and including the OK/NO/BYE line (literals read whole)."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                lines.append(b"<closed>")
                return lines
            line = line.rstrip(b"\r\n")
            if line.endswith(b"}") and line.startswith(b"{"):
                size = int(line[1:-1])
                lines.append(self.file.read(size))
                continue
            lines.append(line)
            if line.split(b" ", 1)[0] in (b"OK", b"NO", b"BYE"):
                return lines

    def command(self, data: bytes) -> list[bytes]:
        self.send(data)
        return self.response()

    def close(self):
        self.file.close()
        self.sock.close()


class ManageSieveTests(unittest.TestCase):
    timeout = 60

    async def setUp(self):
        self.store = await make_store(self)
        self.mailbox = await self.store.create_mailbox("bob@example.com")
        _, self.password = await self.store.create_app_password(self.mailbox.id, "sieve", ["sieve"])
        _, self.imap_password = await self.store.create_app_password(
            self.mailbox.id, "imap", ["imap"]
        )
        self.config = Config(sieve=SieveConfig(max_script_bytes=1000, max_scripts=3))
        factory = ManageSieveFactory(lambda: self.config, self.store, reactor)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def session(self, steps):
        """Run ``steps(client)`` in a thread on a fresh connection; fire with its result."""

        def run():
            client = Client(self.port)
            try:
                greeting = client.response()
                return steps(client, greeting)
            finally:
                client.close()

        return threads.deferToThread(run)

    def login(self, client):
        answer = client.command(
            f'AUTHENTICATE "PLAIN" "{plain("bob@example.com", self.password)}"\r\n'.encode()
        )
        assert answer[-1].startswith(b"OK"), answer
        return answer

    async def test_greeting_and_capability(self):
        def steps(client, greeting):
            return greeting, client.command(b"CAPABILITY\r\n")

        greeting, caps = await self.session(steps)
        self.assertEqual(greeting[0], b'"IMPLEMENTATION" "haitatsu"')
        self.assertIn(b'"SASL" "PLAIN"', greeting)
        sieve = next(line for line in greeting if line.startswith(b'"SIEVE"'))
        for ext in (b"fileinto", b"vacation", b"imap4flags", b"variables", b"relational"):
            self.assertIn(ext, sieve)
        self.assertIn(b'"VERSION" "1.0"', greeting)
        self.assertNotIn(b'"STARTTLS"', b"\n".join(greeting))  # no TLS configured
        self.assertTrue(greeting[-1].startswith(b"OK"))
        self.assertEqual(caps[:-1], greeting[:-1])

    async def test_script_management(self):
        script = b'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "X"; }\r\n'

        def steps(client, greeting):
            out = {}
            out["before"] = client.command(b"LISTSCRIPTS\r\n")
            self.login(client)
            out["space"] = client.command(b'HAVESPACE "main" 500\r\n')
            out["nospace"] = client.command(b'HAVESPACE "main" 5000\r\n')
            out["put"] = client.command(
                b'PUTSCRIPT "main" {%d+}\r\n' % len(script) + script + b"\r\n"
            )
            out["put2"] = client.command(b'PUTSCRIPT "other" {5}\r\nkeep;\r\n')
            out["active"] = client.command(b'SETACTIVE "main"\r\n')
            out["list"] = client.command(b"LISTSCRIPTS\r\n")
            out["get"] = client.command(b'GETSCRIPT "main"\r\n')
            out["del_active"] = client.command(b'DELETESCRIPT "main"\r\n')
            out["rename_clash"] = client.command(b'RENAMESCRIPT "other" "main"\r\n')
            out["rename"] = client.command(b'RENAMESCRIPT "other" "third"\r\n')
            out["missing"] = client.command(b'GETSCRIPT "other"\r\n')
            out["check_bad"] = client.command(b'CHECKSCRIPT "fileinto \\"x\\";"\r\n')
            out["check_ok"] = client.command(b'CHECKSCRIPT "keep;"\r\n')
            out["put_bad"] = client.command(b'PUTSCRIPT "bad" {11}\r\nif true {\r\n\r\n')
            out["noop"] = client.command(b'NOOP "t1"\r\n')
            out["deactivate"] = client.command(b'SETACTIVE ""\r\n')
            out["delete"] = client.command(b'DELETESCRIPT "main"\r\n')
            out["logout"] = client.command(b"LOGOUT\r\n")
            return out

        out = await self.session(steps)
        self.assertEqual(out["before"], [b'NO "authenticate first"'])
        self.assertEqual(out["space"], [b"OK"])
        self.assertTrue(out["nospace"][0].startswith(b"NO (QUOTA/MAXSIZE)"))
        self.assertEqual(out["put"], [b"OK"])
        self.assertEqual(out["active"], [b"OK"])
        self.assertEqual(out["list"], [b'"main" ACTIVE', b'"other"', b"OK"])
        self.assertEqual(out["get"], [script, b"", b"OK"])
        self.assertTrue(out["del_active"][0].startswith(b"NO (ACTIVE)"))
        self.assertTrue(out["rename_clash"][0].startswith(b"NO (ALREADYEXISTS)"))
        self.assertEqual(out["rename"], [b"OK"])
        self.assertTrue(out["missing"][0].startswith(b"NO (NONEXISTENT)"))
        self.assertTrue(out["check_bad"][0].startswith(b'NO "line 1: '), out["check_bad"])
        self.assertEqual(out["check_ok"], [b"OK"])
        self.assertTrue(out["put_bad"][0].startswith(b'NO "line '), out["put_bad"])
        self.assertEqual(out["noop"], [b'OK (TAG "t1") "Done"'])
        self.assertEqual(out["delete"], [b"OK"])
        self.assertEqual(out["logout"][0], b'OK "Logout"')
        stored = await self.store.get_sieve_script(self.mailbox.id, "third")
        self.assertEqual(stored.content, "keep;")
        self.assertIsNone(await self.store.active_sieve_script(self.mailbox.id))

    async def test_authentication(self):
        def steps(client, greeting):
            out = {}
            out["wrong"] = client.command(authenticate("nope"))
            out["scope"] = client.command(authenticate(self.imap_password))
            out["authzid"] = client.command(authenticate(self.password, authzid="eve@example.com"))
            out["mech"] = client.command(b'AUTHENTICATE "LOGIN"\r\n')
            out["garbage"] = client.command(b'AUTHENTICATE "PLAIN" "!!!"\r\n')
            # Without an initial response: the server asks with an empty string.
            client.send(b'AUTHENTICATE "PLAIN"\r\n')
            out["challenge"] = client.file.readline()
            out["cancel"] = client.command(b'"*"\r\n')
            client.send(b'AUTHENTICATE "PLAIN"\r\n')
            client.file.readline()
            out["continued"] = client.command(
                f'"{plain("bob@example.com", self.password)}"\r\n'.encode()
            )
            out["again"] = client.command(b'AUTHENTICATE "PLAIN" "x"\r\n')
            return out

        out = await self.session(steps)
        for key in ("wrong", "scope", "authzid", "mech", "garbage", "cancel"):
            self.assertTrue(out[key][0].startswith(b"NO"), (key, out[key]))
        self.assertEqual(out["challenge"], b'""\r\n')
        self.assertEqual(out["continued"], [b'OK "logged in"'])
        self.assertTrue(out["again"][0].startswith(b"NO"))

    async def test_malformed_input(self):
        big = b"x" * 2000

        def steps(client, greeting):
            out = {}
            self.login(client)
            out["unknown"] = client.command(b"FROB\r\n")
            out["quote"] = client.command(b'PUTSCRIPT "unterminated\r\n')
            out["args"] = client.command(b"GETSCRIPT\r\n")
            out["toomany"] = client.command(b'GETSCRIPT "a" "b" "c"\r\n')
            out["brace"] = client.command(b"PUTSCRIPT {x}\r\n")
            # A literal over the limit is read in full and refused; the session goes on.
            out["big"] = client.command(b'PUTSCRIPT "big" {%d+}\r\n' % len(big) + big + b"\r\n")
            out["utf8"] = client.command(b'PUTSCRIPT "bad" {2+}\r\n\xff\xfe\r\n')
            out["name"] = client.command(b'PUTSCRIPT "a/b" "keep;"\r\n')
            out["after"] = client.command(b"LISTSCRIPTS\r\n")
            out["limit"] = [client.command(b'PUTSCRIPT "s%d" "keep;"\r\n' % i) for i in range(4)]
            return out

        out = await self.session(steps)
        for key in ("unknown", "quote", "args", "toomany", "brace", "name"):
            self.assertTrue(out[key][0].startswith(b"NO"), (key, out[key]))
        self.assertTrue(out["big"][0].startswith(b"NO (QUOTA/MAXSIZE)"), out["big"])
        self.assertTrue(out["utf8"][0].startswith(b"NO"))
        self.assertEqual(out["after"], [b"OK"])
        self.assertEqual([r[0][:2] for r in out["limit"]], [b"OK", b"OK", b"OK", b"NO"])
        self.assertIn(b"QUOTA/MAXSCRIPTS", out["limit"][3][0])

    async def test_too_many_errors_say_bye(self):
        def steps(client, greeting):
            answers = [client.command(b"FROB\r\n") for _ in range(10)]
            return answers, client.file.readline()

        answers, after = await self.session(steps)
        self.assertTrue(answers[-1][0].startswith(b"BYE"))
        self.assertEqual(after, b"")

    def test_tokenize(self):
        self.assertEqual(tokenize(b'PUTSCRIPT "a b" {12+}'), (["PUTSCRIPT", "a b"], 12))
        self.assertEqual(tokenize(b'X "q\\"uote\\\\"'), (["X", 'q"uote\\'], None))
        self.assertEqual(tokenize(b"A {0}"), (["A"], 0))

    async def test_sieve_connect(self):
        if SIEVE_CONNECT is None:
            raise unittest.SkipTest("sieve-connect (Debian) is not installed")
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, True)
        local = os.path.join(root, "vacation.sieve")
        with open(local, "w") as f:
            f.write('require "vacation";\nvacation :days 3 "Away.";\n')

        def connect(*args):
            read, write = os.pipe()
            os.write(write, self.password.encode() + b"\n")
            os.close(write)
            try:
                return subprocess.run(
                    [
                        SIEVE_CONNECT,
                        "--server",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--user",
                        "bob@example.com",
                        "--passwordfd",
                        str(read),
                        "--authmech",
                        "PLAIN",
                        "--clearchan",
                        *args,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    pass_fds=(read,),
                )
            finally:
                os.close(read)

        done = await threads.deferToThread(
            connect, "--upload", "--localsieve", local, "--remotesieve", "away"
        )
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        done = await threads.deferToThread(connect, "--activate", "--remotesieve", "away")
        self.assertEqual(done.returncode, 0, done.stderr + done.stdout)
        done = await threads.deferToThread(connect, "--list")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("away", done.stdout)
        active = await self.store.active_sieve_script(self.mailbox.id)
        self.assertEqual(active.content, 'require "vacation";\nvacation :days 3 "Away.";\n')


class ManageSieveTLSTests(unittest.TestCase):
    """With TLS configured: STARTTLS offered, AUTHENTICATE refused before it, capabilities
    again over TLS (RFC 5804 2.2)."""

    timeout = 60

    async def setUp(self):
        from tests.tls.ca import TLSFixture

        self.store = await make_store(self)
        self.mailbox = await self.store.create_mailbox("bob@example.com")
        _, self.password = await self.store.create_app_password(self.mailbox.id, "s", ["sieve"])
        ca_dir = tempfile.mkdtemp(prefix="haitatsu-sieve-ca-")
        self.addCleanup(shutil.rmtree, ca_dir, True)
        self.fixture = TLSFixture(ca_dir)
        tls = self.fixture.service(reactor)
        factory = ManageSieveFactory(lambda: Config(), self.store, reactor, tls=tls)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.context = self.fixture.ca.client_context(TLSFixture.DEFAULT_NAME)

    async def test_starttls(self):
        from tests.tls.ca import TLSFixture

        DEFAULT_NAME = TLSFixture.DEFAULT_NAME
        context = self.context
        password = self.password

        def run():
            client = Client(self.port)
            out = {"greeting": client.response()}
            out["early"] = client.command(authenticate(password))
            out["starttls"] = client.command(b"STARTTLS\r\n")
            client.file.close()
            client.sock = context.wrap_socket(client.sock, server_hostname=DEFAULT_NAME)
            client.file = client.sock.makefile("rb")
            out["caps"] = client.response()
            out["auth"] = client.command(authenticate(password))
            out["again"] = client.command(b"STARTTLS\r\n")
            client.close()
            return out

        out = await threads.deferToThread(run)
        self.assertIn(b'"STARTTLS"', out["greeting"])
        self.assertNotIn(b'"SASL" "PLAIN"', out["greeting"])
        self.assertTrue(out["early"][0].startswith(b"NO (ENCRYPT-NEEDED)"))
        self.assertEqual(out["starttls"], [b'OK "Begin TLS negotiation now"'])
        self.assertIn(b'"SASL" "PLAIN"', out["caps"])
        self.assertNotIn(b'"STARTTLS"', out["caps"])
        self.assertEqual(out["auth"], [b'OK "logged in"'])
        self.assertTrue(out["again"][0].startswith(b"NO"))
