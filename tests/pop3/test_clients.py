"""Real POP3 clients over a loopback socket: Python's poplib and Debian's fetchmail."""

from __future__ import annotations

import os
import poplib

from twisted.internet import threads

from tests.client_tools import FETCHMAIL_SKIP, listen, run_fetchmail
from tests.pop3.helpers import ADDRESS, DOTS, SIMPLE, POP3TestCase, d

EIGHT_BIT = (
    "From: Jürgen <juergen@example.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: Grüße\r\n"
    "\r\n"
    "Schöne Grüße!\r\n"
).encode()


class POP3ClientTestCase(POP3TestCase):
    def listen(self) -> int:
        return listen(self, self.factory)

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
    skip = FETCHMAIL_SKIP

    def fetchmail(
        self, port: int, options: str, name: str, server_options: str = ""
    ) -> tuple[int, list[bytes], str]:
        """Run fetchmail once with its own rcfile (the UID file is shared between runs); return
        its exit code, the messages its MDA wrote (in order), and its output."""
        return run_fetchmail(
            os.path.join(self.root, name),
            f"127.0.0.1 service {port} proto POP3 auth password timeout 20 {server_options}",
            f'user "{ADDRESS}" password "{self.password}"',
            options,
            # shared by the runs of a test: what fetchmail has seen (by UIDL)
            args=("--idfile", os.path.join(self.root, "fetchmail.ids")),
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
