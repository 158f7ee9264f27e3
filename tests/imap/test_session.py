"""IMAP session basics: greeting, capabilities, login, folders, selection, framing."""

from __future__ import annotations

import base64

from twisted.internet import defer

from tests.imap.helpers import ADDRESS, SIMPLE, IMAPTestCase

_EXTENSIONS = (
    b"ENABLE ID IDLE NAMESPACE CHILDREN SPECIAL-USE UNSELECT UIDPLUS MOVE CONDSTORE QRESYNC "
    b"ESEARCH SEARCHRES WITHIN SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES LIST-EXTENDED "
    b"LIST-STATUS STATUS=SIZE MULTIAPPEND BINARY UTF8=ACCEPT CREATE-SPECIAL-USE "
    b"APPENDLIMIT=100000 QUOTA QUOTA=RES-STORAGE"
)
CAPS_UNAUTH = b"IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN " + _EXTENSIONS
CAPS_AUTH = b"IMAP4rev1 LITERAL+ SASL-IR " + _EXTENSIONS


def d(coro_fn):
    """Run an ``async def`` test method as a Deferred (trial waits on it)."""

    def wrapper(self):
        return defer.ensureDeferred(coro_fn(self))

    wrapper.__name__ = coro_fn.__name__
    return wrapper


class GreetingAndCapabilityTests(IMAPTestCase):
    def test_greeting_lists_capabilities(self):
        session = self.connect()
        self.assertEqual(
            session.transport.value(),
            b"* OK [CAPABILITY " + CAPS_UNAUTH + b"] haitatsu IMAP4rev1 ready\r\n",
        )

    @d
    async def test_capability_before_and_after_login(self):
        session = self.connect()
        self.assertEqual(
            await session.command(b"a CAPABILITY"),
            b"* CAPABILITY " + CAPS_UNAUTH + b"\r\na OK CAPABILITY completed\r\n",
        )
        await self.login(session)
        self.assertEqual(
            await session.command(b"b CAPABILITY"),
            b"* CAPABILITY " + CAPS_AUTH + b"\r\nb OK CAPABILITY completed\r\n",
        )


class LoginTests(IMAPTestCase):
    @d
    async def test_login_ok(self):
        session = self.connect()
        answer = await session.command(b"a " + self.login_args())
        self.assertEqual(answer, b"a OK LOGIN completed\r\n")

    @d
    async def test_login_username_case_insensitive_and_quoted(self):
        session = self.connect()
        answer = await session.command(
            b'a LOGIN "%s" "%s"' % (ADDRESS.upper().encode(), self.password.encode())
        )
        self.assertEqual(answer, b"a OK LOGIN completed\r\n")

    @d
    async def test_login_wrong_password(self):
        session = self.connect()
        answer = await session.command(b"a LOGIN %s wrong-password" % ADDRESS.encode())
        self.assertEqual(answer, b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        # still unauthenticated, session alive
        answer = await session.command(b"b SELECT INBOX")
        self.assertEqual(answer, b"b BAD Command not valid in this state\r\n")

    @d
    async def test_login_password_without_imap_scope(self):
        _, smtp_only = await self.store.create_app_password(self.mailbox.id, "smtp", ["smtp"])
        session = self.connect()
        answer = await session.command(b"a LOGIN %s %s" % (ADDRESS.encode(), smtp_only.encode()))
        self.assertEqual(answer, b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")

    @d
    async def test_login_with_literals(self):
        session = self.connect()
        user, password = ADDRESS.encode(), self.password.encode()
        session.send(b"a LOGIN {%d}\r\n" % len(user))
        await session.wait_for(rb"^\+ Ready for literal data\r\n")
        session.send(user + b" {%d+}\r\n" % len(password) + password + b"\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a OK LOGIN completed\r\n")

    @d
    async def test_authenticate_plain_with_continuation(self):
        session = self.connect()
        session.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(await session.wait_for(rb"^\+ "), b"+ \r\n")
        token = base64.b64encode(b"\0" + ADDRESS.encode() + b"\0" + self.password.encode())
        session.send(token + b"\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a OK AUTHENTICATE completed\r\n")

    @d
    async def test_authenticate_plain_initial_response(self):
        session = self.connect()
        token = base64.b64encode(
            ADDRESS.encode() + b"\0" + ADDRESS.encode() + b"\0" + self.password.encode()
        )
        answer = await session.command(b"a AUTHENTICATE PLAIN " + token)
        self.assertEqual(answer, b"a OK AUTHENTICATE completed\r\n")

    @d
    async def test_authenticate_plain_wrong_password_and_other_authzid(self):
        session = self.connect()
        token = base64.b64encode(b"\0" + ADDRESS.encode() + b"\0nope")
        answer = await session.command(b"a AUTHENTICATE PLAIN " + token)
        self.assertEqual(answer, b"a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        token = base64.b64encode(b"bob@example.test\0" + ADDRESS.encode() + b"\0" + b"x")
        answer = await session.command(b"b AUTHENTICATE PLAIN " + token)
        self.assertEqual(answer, b"b NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")

    @d
    async def test_authenticate_cancelled_and_bad_base64(self):
        session = self.connect()
        session.send(b"a AUTHENTICATE PLAIN\r\n")
        await session.wait_for(rb"^\+ ")
        session.send(b"*\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a BAD AUTHENTICATE cancelled\r\n")
        answer = await session.command(b"b AUTHENTICATE PLAIN !!!notbase64")
        self.assertEqual(answer, b"b BAD Invalid base64 in SASL response\r\n")
        answer = await session.command(b"c AUTHENTICATE CRAM-MD5")
        self.assertEqual(answer, b"c NO Unsupported authentication mechanism\r\n")


class FolderTests(IMAPTestCase):
    @d
    async def test_list_all_with_special_use(self):
        session = await self.login()
        answer = await session.command(b'a LIST "" "*"')
        self.assertEqual(
            answer,
            b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
            b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"\r\n'
            b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n'
            b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n'
            b"a OK LIST completed\r\n",
        )

    @d
    async def test_list_inbox_case_insensitive_and_delimiter(self):
        session = await self.login()
        answer = await session.command(b'a LIST "" inbox')
        self.assertEqual(answer, b'* LIST (\\HasNoChildren) "/" "INBOX"\r\na OK LIST completed\r\n')
        answer = await session.command(b'b LIST "" ""')
        self.assertEqual(answer, b'* LIST (\\Noselect) "/" ""\r\nb OK LIST completed\r\n')
        answer = await session.command(b'c LIST "" "T%"')
        self.assertEqual(
            answer, b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\nc OK LIST completed\r\n'
        )

    @d
    async def test_lsub(self):
        session = await self.login()
        answer = await session.command(b'a LSUB "" "S*"')
        self.assertEqual(
            answer, b'* LSUB (\\HasNoChildren \\Sent) "/" "Sent"\r\na OK LSUB completed\r\n'
        )

    @d
    async def test_namespace(self):
        session = await self.login()
        answer = await session.command(b"a NAMESPACE")
        self.assertEqual(answer, b'* NAMESPACE (("" "/")) NIL NIL\r\na OK NAMESPACE completed\r\n')

    @d
    async def test_select_and_examine(self):
        await self.deliver(SIMPLE, flags=["\\Seen"])
        await self.deliver(SIMPLE)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.login()
        answer = await session.command(b"a SELECT inbox")
        self.assertEqual(
            answer,
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
            b" Flags permitted\r\n"
            b"* 2 EXISTS\r\n"
            b"* 0 RECENT\r\n"
            b"* OK [UNSEEN 2] First unseen message\r\n"
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
            b"* OK [UIDNEXT 3] Predicted next UID\r\n"
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
            b"a OK [READ-WRITE] SELECT completed\r\n"
            % (folder.uid_validity, folder.highest_modseq),
        )
        answer = await session.command(b"b EXAMINE Sent")
        self.assertEqual(
            answer,
            b"* OK [CLOSED] Previous mailbox closed\r\n"
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
            b"* 0 EXISTS\r\n"
            b"* 0 RECENT\r\n"
            b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
            b"* OK [UIDNEXT 1] Predicted next UID\r\n"
            b"* OK [HIGHESTMODSEQ 1] Highest\r\n"
            b"b OK [READ-ONLY] EXAMINE completed\r\n"
            % (await self.store.get_folder(self.mailbox.id, "Sent")).uid_validity,
        )
        answer = await session.command(b"c SELECT Nowhere")
        self.assertEqual(
            answer,
            b"* OK [CLOSED] Previous mailbox closed\r\nc NO [NONEXISTENT] No such mailbox\r\n",
        )
        answer = await session.command(b"d FETCH 1 FLAGS")
        self.assertEqual(answer, b"d BAD Command not valid in this state\r\n")

    @d
    async def test_status(self):
        await self.deliver(SIMPLE, flags=["\\Seen"])
        await self.deliver(SIMPLE)
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.login()
        answer = await session.command(
            b"a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"
        )
        self.assertEqual(
            answer,
            b'* STATUS "INBOX" (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY %d UNSEEN 1)\r\n'
            b"a OK STATUS completed\r\n" % folder.uid_validity,
        )
        answer = await session.command(b"b STATUS Nope (MESSAGES)")
        self.assertEqual(answer, b"b NO [NONEXISTENT] No such mailbox\r\n")
        answer = await session.command(b"c STATUS INBOX (BOGUS)")
        self.assertEqual(answer, b"c BAD unknown STATUS item\r\n")

    @d
    async def test_close_expunges_and_unselect_does_not(self):
        await self.deliver(SIMPLE, flags=["\\Deleted"])
        session = await self.selected()
        self.assertEqual(await session.command(b"a UNSELECT"), b"a OK UNSELECT completed\r\n")
        self.assertEqual(
            len(
                await self.store.list_folder_messages(
                    (await self.store.get_folder(self.mailbox.id, "INBOX")).id
                )
            ),
            1,
        )
        await session.command(b"b SELECT INBOX")
        self.assertEqual(await session.command(b"c CLOSE"), b"c OK CLOSE completed\r\n")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(await self.store.list_folder_messages(inbox.id), [])


class RobustnessTests(IMAPTestCase):
    @d
    async def test_malformed_commands_get_bad_and_session_survives(self):
        session = await self.login()
        self.assertEqual(await session.command(b"a FROBNICATE"), b"a BAD Unknown command\r\n")
        session.send(b"b\r\n")
        self.assertEqual(await session.wait_for(rb"^\* BAD"), b"* BAD missing command\r\n")
        self.assertEqual(
            await session.command(b'c LOGIN "unterminated'),
            b"c BAD unterminated quoted string\r\n",
        )
        self.assertEqual(await session.command(b"d LIST (("), b"d BAD unbalanced parenthesis\r\n")
        self.assertEqual(await session.command(b"e NOOP"), b"e OK NOOP completed\r\n")

    @d
    async def test_overlong_line_is_bad_and_session_kept(self):
        session = await self.login()
        session.send(b"a NOOP " + b"x" * 70000 + b"\r\n")
        self.assertEqual(await session.wait_for(rb"^a "), b"a BAD Command line too long\r\n")
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")

    @d
    async def test_pipelined_commands_answer_in_order(self):
        session = await self.login()
        session.send(b'a NOOP\r\nb LIST "" INBOX\r\nc NOOP\r\n')
        self.assertEqual(
            await session.wait_for(rb"^c "),
            b"a OK NOOP completed\r\n"
            b'* LIST (\\HasNoChildren) "/" "INBOX"\r\nb OK LIST completed\r\n'
            b"c OK NOOP completed\r\n",
        )

    @d
    async def test_idle_timeout_says_bye(self):
        session = await self.login()
        self.clock.advance(1801)
        self.assertEqual(session.output(), b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(session.transport.disconnecting)

    @d
    async def test_logout(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"z LOGOUT"),
            b"* BYE haitatsu logging out\r\nz OK LOGOUT completed\r\n",
        )
        self.assertTrue(session.transport.disconnecting)
