"""POP3 session basics: greeting, CAPA, USER/PASS, AUTH PLAIN, states, framing, idle timeout."""

from __future__ import annotations

import base64

from zope.interface.verify import verifyObject

from haitatsu.pop3 import Maildrop
from tests.pop3.helpers import ADDRESS, SIMPLE, POP3TestCase, Session, d

CAPA = (
    b"+OK Capability list follows\r\n"
    b"TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nPIPELINING\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
    b".\r\n"
)
AUTH_FAILED = b"-ERR [AUTH] Invalid credentials\r\n"


def plain(authzid: bytes, user: bytes, password: bytes) -> bytes:
    return base64.b64encode(authzid + b"\0" + user + b"\0" + password)


class GreetingAndCapaTests(POP3TestCase):
    def test_greeting(self):
        session = Session(self, self.factory)
        self.assertEqual(session.transport.value(), b"+OK haitatsu POP3 server ready\r\n")

    @d
    async def test_capa_before_and_after_login_no_stls_without_tls(self):
        session = self.connect()
        self.assertEqual(await session.command(b"CAPA", multiline=True), CAPA)
        await self.login(session)
        self.assertEqual(await session.command(b"capa", multiline=True), CAPA)

    @d
    async def test_apop_is_not_offered_and_stls_is_refused(self):
        session = self.connect()
        self.assertEqual(await session.command(b"APOP alice abc"), b"-ERR Unknown command\r\n")
        self.assertEqual(await session.command(b"STLS"), b"-ERR TLS is not available\r\n")


class UserPassTests(POP3TestCase):
    @d
    async def test_user_pass_ok(self):
        await self.deliver(SIMPLE)
        session = self.connect()
        self.assertEqual(
            await session.command(b"USER " + ADDRESS.upper().encode()),
            b"+OK Send your password\r\n",
        )
        self.assertEqual(
            await session.command(b"PASS " + self.password.encode()),
            b"+OK Logged in, 1 messages (%d octets)\r\n" % len(SIMPLE),
        )
        [password] = await self.store.list_app_passwords(self.mailbox.id)
        self.assertIsNotNone(password.last_used_at)

    @d
    async def test_wrong_password_keeps_authorization_state(self):
        session = self.connect()
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await session.command(b"PASS wrong-password"), AUTH_FAILED)
        self.assertEqual(
            await session.command(b"STAT"), b"-ERR Command not valid in this state\r\n"
        )
        # USER must come again: the failed PASS consumed it
        self.assertEqual(
            await session.command(b"PASS " + self.password.encode()), b"-ERR USER first\r\n"
        )
        await self.login(session)

    @d
    async def test_unknown_user(self):
        session = self.connect()
        await session.command(b"USER nobody@example.test")
        self.assertEqual(await session.command(b"PASS " + self.password.encode()), AUTH_FAILED)

    @d
    async def test_password_without_pop3_scope(self):
        _, imap_only = await self.store.create_app_password(self.mailbox.id, "imap", ["imap"])
        session = self.connect()
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await session.command(b"PASS " + imap_only.encode()), AUTH_FAILED)

    @d
    async def test_suspended_mailbox(self):
        await self.store.update_mailbox(self.mailbox.id, status="suspended")
        session = self.connect()
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await session.command(b"PASS " + self.password.encode()), AUTH_FAILED)

    @d
    async def test_revoked_password(self):
        [record] = await self.store.list_app_passwords(self.mailbox.id)
        await self.store.revoke_app_password(record.id)
        session = self.connect()
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await session.command(b"PASS " + self.password.encode()), AUTH_FAILED)

    @d
    async def test_user_and_pass_syntax(self):
        session = self.connect()
        self.assertEqual(await session.command(b"USER"), b"-ERR Syntax: USER name\r\n")
        self.assertEqual(await session.command(b"USER a b"), b"-ERR Syntax: USER name\r\n")
        self.assertEqual(await session.command(b"PASS x"), b"-ERR USER first\r\n")
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(await session.command(b"PASS"), b"-ERR Syntax: PASS password\r\n")

    @d
    async def test_commands_of_the_wrong_state(self):
        session = self.connect()
        for command in (b"STAT", b"LIST", b"UIDL", b"RETR 1", b"TOP 1 0", b"DELE 1", b"RSET"):
            self.assertEqual(
                await session.command(command), b"-ERR Command not valid in this state\r\n"
            )
        self.assertEqual(
            await session.command(b"NOOP"), b"-ERR Command not valid in this state\r\n"
        )
        await self.login(session)
        for command in (b"USER x", b"PASS y", b"AUTH PLAIN"):
            self.assertEqual(
                await session.command(command), b"-ERR Command not valid in this state\r\n"
            )

    @d
    async def test_storage_down_at_login_is_sys_temp(self):
        await self.store.close()
        session = self.connect()
        await session.command(b"USER " + ADDRESS.encode())
        self.assertEqual(
            await session.command(b"PASS " + self.password.encode()),
            b"-ERR [SYS/TEMP] Storage is temporarily unavailable, try again\r\n",
        )


class AuthPlainTests(POP3TestCase):
    @d
    async def test_initial_response(self):
        session = self.connect()
        answer = await session.command(
            b"AUTH PLAIN " + plain(b"", ADDRESS.encode(), self.password.encode())
        )
        self.assertEqual(answer, b"+OK Logged in, 0 messages (0 octets)\r\n")

    @d
    async def test_continuation(self):
        session = self.connect()
        self.assertEqual(await session.command(b"AUTH PLAIN"), b"+ \r\n")
        answer = await session.command(
            plain(ADDRESS.encode(), ADDRESS.encode(), self.password.encode())
        )
        self.assertEqual(answer, b"+OK Logged in, 0 messages (0 octets)\r\n")
        self.assertEqual(await session.command(b"STAT"), b"+OK 0 0\r\n")

    @d
    async def test_wrong_password_and_other_authzid(self):
        session = self.connect()
        answer = await session.command(b"AUTH PLAIN " + plain(b"", ADDRESS.encode(), b"nope"))
        self.assertEqual(answer, AUTH_FAILED)
        answer = await session.command(
            b"AUTH PLAIN " + plain(b"bob@example.test", ADDRESS.encode(), self.password.encode())
        )
        self.assertEqual(answer, AUTH_FAILED)

    @d
    async def test_cancel_bad_base64_and_malformed(self):
        session = self.connect()
        await session.command(b"AUTH PLAIN")
        self.assertEqual(await session.command(b"*"), b"-ERR AUTH cancelled\r\n")
        self.assertEqual(
            await session.command(b"AUTH PLAIN !!!"), b"-ERR Invalid base64 in SASL response\r\n"
        )
        self.assertEqual(
            await session.command(b"AUTH PLAIN " + base64.b64encode(b"no-nuls")),
            b"-ERR Malformed SASL PLAIN response\r\n",
        )
        self.assertEqual(
            await session.command(b"AUTH PLAIN ="), b"-ERR Malformed SASL PLAIN response\r\n"
        )
        # the session is still usable
        await self.login(session)

    @d
    async def test_mechanisms(self):
        session = self.connect()
        self.assertEqual(
            await session.command(b"AUTH", multiline=True),
            b"+OK Supported SASL mechanisms\r\nPLAIN\r\n.\r\n",
        )
        self.assertEqual(
            await session.command(b"AUTH CRAM-MD5"), b"-ERR Unsupported SASL mechanism\r\n"
        )
        self.assertEqual(
            await session.command(b"AUTH LOGIN"), b"-ERR Unsupported SASL mechanism\r\n"
        )


class FramingTests(POP3TestCase):
    @d
    async def test_pipelined_commands_are_answered_in_order(self):
        await self.deliver(SIMPLE)
        session = self.connect()
        session.send(
            b"USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nQUIT\r\nSTAT\r\n"
            % (ADDRESS.encode(), self.password.encode())
        )
        n = len(SIMPLE)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        answer = await session.wait_for(rb".*signing off[^\r\n]*\r\n")
        self.assertEqual(
            answer,
            b"+OK Send your password\r\n"
            b"+OK Logged in, 1 messages (%d octets)\r\n"
            b"+OK 1 %d\r\n"
            b"+OK 1 messages (%d octets)\r\n1 %d\r\n.\r\n"
            b"+OK 1 %d.1\r\n"
            b"+OK\r\n"
            b"+OK haitatsu POP3 server signing off (0 deleted)\r\n"
            % (n, n, n, n, folder.uid_validity),
        )
        self.assertTrue(session.transport.disconnecting)

    @d
    async def test_over_long_line_is_refused_and_the_session_survives(self):
        session = self.connect()
        session.send(b"USER " + b"x" * 5000 + b"\r\n")
        self.assertEqual(await session.wait_for(rb"-ERR[^\n]*\n"), b"-ERR Line too long\r\n")
        # the same, arriving in pieces with no newline for a while
        session.send(b"NOOP " + b"y" * 3000)
        session.send(b"y" * 3000)
        session.send(b"y" * 3000 + b"\r\nCAPA\r\n")
        answer = await session.wait_for(rb"-ERR Line too long\r\n\+OK.*\r\n\.\r\n")
        self.assertTrue(answer.startswith(b"-ERR Line too long\r\n+OK Capability list"))
        await self.login(session)

    @d
    async def test_malformed_commands(self):
        await self.deliver(SIMPLE)
        session = self.connect()
        self.assertEqual(await session.command(b""), b"-ERR Unknown command\r\n")
        self.assertEqual(await session.command(b"\xff\xfe garbage"), b"-ERR Unknown command\r\n")
        self.assertEqual(await session.command(b"CAPA now"), b"-ERR Syntax: CAPA\r\n")
        await self.login(session)
        cases = [
            (b"LIST 1 2", b"-ERR Syntax: LIST [message]\r\n"),
            (b"LIST x", b"-ERR Invalid message number\r\n"),
            (b"LIST 0", b"-ERR Invalid message number\r\n"),
            (b"LIST -1", b"-ERR Invalid message number\r\n"),
            (b"LIST 2", b"-ERR No such message\r\n"),
            (b"LIST 99999999999999999999", b"-ERR Invalid message number\r\n"),
            (b"RETR", b"-ERR Syntax: RETR message\r\n"),
            (b"TOP 1", b"-ERR Syntax: TOP message lines\r\n"),
            (b"TOP 1 x", b"-ERR Invalid line count\r\n"),
            (b"TOP 1 -1", b"-ERR Invalid line count\r\n"),
            (b"DELE", b"-ERR Syntax: DELE message\r\n"),
            (b"UIDL 1 1", b"-ERR Syntax: UIDL [message]\r\n"),
            (b"STAT 1", b"-ERR Syntax: STAT\r\n"),
            (b"XYZZY", b"-ERR Unknown command\r\n"),
        ]
        for command, expected in cases:
            self.assertEqual(await session.command(command), expected, command)
        self.assertEqual(await session.command(b"STAT"), b"+OK 1 %d\r\n" % len(SIMPLE))

    @d
    async def test_idle_timeout_closes_without_deleting(self):
        await self.deliver(SIMPLE)
        session = await self.login()
        await session.command(b"DELE 1")
        self.clock.advance(599)
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(session.output(), b"-ERR Autologout; idle for too long\r\n")
        self.assertTrue(session.transport.disconnecting)
        session.close()
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(len(await self.store.list_folder_messages(folder.id)), 1)

    @d
    async def test_activity_resets_the_idle_timer(self):
        session = await self.login()
        self.clock.advance(500)
        await session.command(b"NOOP")
        self.clock.advance(500)
        self.assertFalse(session.transport.disconnecting)

    @d
    async def test_quit_before_login(self):
        session = self.connect()
        self.assertEqual(
            await session.command(b"QUIT"), b"+OK haitatsu POP3 server signing off\r\n"
        )
        self.assertTrue(session.transport.disconnecting)


class InterfaceTests(POP3TestCase):
    @d
    async def test_maildrop_provides_imailbox(self):
        from twisted.mail import pop3

        await self.deliver(SIMPLE)
        maildrop = await Maildrop.load(self.store, self.mailbox.id)
        self.assertTrue(verifyObject(pop3.IMailbox, maildrop))
        self.assertEqual(maildrop.listMessages(), [len(SIMPLE)])
        maildrop.deleteMessage(0)
        self.assertEqual(maildrop.listMessages(), [0])
        self.assertEqual(maildrop.listMessages(0), 0)
        maildrop.undeleteMessages()
        f = await maildrop.getMessage(0)
        try:
            self.assertEqual(f.read(), SIMPLE)
        finally:
            f.close()
