"""Real POP3 clients over a loopback socket: Python's poplib and Debian's fetchmail."""

from __future__ import annotations

import os
import poplib
import shutil
import subprocess
import sys
import textwrap

from twisted.internet import reactor, threads

from tests.pop3.helpers import ADDRESS, DOTS, SIMPLE, POP3TestCase, d

EIGHT_BIT = (
    "From: Jürgen <juergen@example.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: Grüße\r\n"
    "\r\n"
    "Schöne Grüße!\r\n"
).encode()

FETCHMAIL = shutil.which("fetchmail")

#: The MDA fetchmail runs per message: stdin to the next numbered file in a directory.
SAVE_MDA = textwrap.dedent(
    """
    import os, sys
    directory = sys.argv[1]
    n = len(os.listdir(directory))
    with open(os.path.join(directory, "%04d.eml" % n), "wb") as f:
        f.write(sys.stdin.buffer.read())
    """
)


class POP3ClientTestCase(POP3TestCase):
    def listen(self) -> int:
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        # The sessions' idle timers run on the test clock; nothing is left on the reactor.
        return port.getHost().port

    async def inbox_uids(self):
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        return [m.uid for m in await self.store.list_folder_messages(folder.id)]


class PoplibTests(POP3ClientTestCase):
    @d
    async def test_retrieve_delete_reconnect(self):
        for message in (SIMPLE, DOTS, EIGHT_BIT):
            await self.deliver(message)
        port = self.listen()
        password = self.password

        def first_session():
            conn = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                welcome = conn.getwelcome()
                caps = conn.capa()
                conn.user(ADDRESS)
                conn.pass_(password)
                count, size = conn.stat()
                uidl = conn.uidl()[1]
                bodies = [b"\r\n".join(conn.retr(i)[1]) + b"\r\n" for i in (1, 2, 3)]
                top = conn.top(1, 0)[1]
                conn.dele(1)
                conn.dele(3)
                return welcome, caps, count, size, uidl, bodies, top
            finally:
                conn.quit()

        welcome, caps, count, size, uidl, bodies, top = await threads.deferToThread(first_session)
        self.assertEqual(welcome, b"+OK haitatsu POP3 server ready")
        self.assertEqual(
            sorted(caps),
            ["AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"],
        )
        self.assertEqual((count, size), (3, len(SIMPLE) + len(DOTS) + len(EIGHT_BIT)))
        # poplib splits lines and un-stuffs dots; a message without a final newline gets one
        self.assertEqual(bodies, [SIMPLE, DOTS + b"\r\n", EIGHT_BIT])
        self.assertEqual(top, SIMPLE.split(b"\r\n\r\n")[0].split(b"\r\n") + [b""])
        self.assertEqual(await self.inbox_uids(), [2])

        def second_session():
            conn = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                conn.user(ADDRESS)
                conn.pass_(password)
                return conn.stat(), conn.uidl()[1], b"\r\n".join(conn.retr(1)[1])
            finally:
                conn.quit()

        stat, uidl_after, body = await threads.deferToThread(second_session)
        self.assertEqual(stat, (1, len(DOTS)))
        # the surviving message keeps its unique id
        self.assertEqual(uidl_after[0].split()[1], uidl[1].split()[1])
        self.assertEqual(body + b"\r\n", DOTS + b"\r\n")

    @d
    async def test_wrong_password_is_an_auth_error(self):
        port = self.listen()

        def session():
            conn = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                conn.user(ADDRESS)
                with self.assertRaises(poplib.error_proto) as caught:
                    conn.pass_("wrong")
                return caught.exception.args[0]
            finally:
                conn.quit()

        self.assertEqual(await threads.deferToThread(session), b"-ERR [AUTH] Invalid credentials")


class FetchmailTests(POP3ClientTestCase):
    skip = None if FETCHMAIL else "fetchmail is not installed (apt-get install -y fetchmail)"

    def fetchmail(
        self, port: int, options: str, name: str, server_options: str = ""
    ) -> tuple[int, list[bytes], str]:
        """Run fetchmail once with its own rcfile (the UID file is shared between runs); return
        its exit code, the messages its MDA wrote (in order), and its output."""
        work = os.path.join(self.root, name)
        out = os.path.join(work, "out")
        os.makedirs(out)
        mda = os.path.join(work, "save.py")
        with open(mda, "w") as f:
            f.write(SAVE_MDA)
        rcfile = os.path.join(work, "fetchmailrc")
        with open(rcfile, "w") as f:
            f.write(
                "set invisible\nset no bouncemail\n"
                f"poll 127.0.0.1 service {port} proto POP3 auth password timeout 20 "
                f"{server_options}\n"
                f'  user "{ADDRESS}" password "{self.password}"\n'
                f'  mda "{sys.executable} {mda} {out}"\n'
                f"  sslproto '' no rewrite no stripcr {options}\n"
            )
        os.chmod(rcfile, 0o600)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": work,
            "FETCHMAILHOME": work,
            "LANG": "C",
        }
        result = subprocess.run(
            [
                FETCHMAIL,
                "-f",
                rcfile,
                "--nodetach",
                "--nosyslog",
                "--idfile",
                # shared by the runs of a test: what fetchmail has seen (by UIDL)
                os.path.join(self.root, "fetchmail.ids"),
                "--pidfile",
                os.path.join(work, "pid"),
                "-v",
            ],
            env=env,
            capture_output=True,
            timeout=60,
        )
        messages = []
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name), "rb") as f:
                messages.append(f.read())
        return (
            result.returncode,
            messages,
            (result.stdout + result.stderr).decode("utf-8", "replace"),
        )

    @d
    async def test_keep_then_fetch_and_delete_byte_exact(self):
        for message in (SIMPLE, DOTS, EIGHT_BIT):
            await self.deliver(message)
        port = self.listen()
        # keep + uidl: everything fetched, nothing deleted; a second run finds nothing new,
        # which only works when the UIDLs are the same in the next session
        code, messages, log = await threads.deferToThread(
            self.fetchmail, port, "keep", "keep", "uidl"
        )
        self.assertEqual(code, 0, log)
        self.assertEqual(messages, [SIMPLE, DOTS + b"\r\n", EIGHT_BIT])
        self.assertEqual(len(await self.inbox_uids()), 3)
        code, messages, log = await threads.deferToThread(
            self.fetchmail, port, "keep", "again", "uidl"
        )
        self.assertEqual((code, messages), (1, []), log)  # 1: no new mail

        code, messages, log = await threads.deferToThread(
            self.fetchmail, port, "fetchall nokeep", "nokeep"
        )
        self.assertEqual(code, 0, log)
        self.assertEqual(messages, [SIMPLE, DOTS + b"\r\n", EIGHT_BIT])
        self.assertIn("POP3> RETR 1", log)
        self.assertIn("POP3> DELE 3", log)
        self.assertEqual(await self.inbox_uids(), [])
        trash = await self.store.get_folder(self.mailbox.id, "Trash")
        self.assertEqual(len(await self.store.list_folder_messages(trash.id)), 3)
