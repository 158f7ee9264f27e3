"""The submission session on a ``StringTransport`` against a real store: EHLO, AUTH PLAIN and
LOGIN (RFC 4954) with app passwords and login throttling, the TLS rule, 530 before AUTH, the
sender, recipient, rate and quota checks, and the replies at the end of DATA."""

from __future__ import annotations

from twisted.trial import unittest

from haitatsu import dkim as dkimmod
from tests.submission.helpers import SubmissionSession, b64, make_config, plain
from tests.support import PG_SKIP, make_pg_store, make_store

_KEYS: dict[str, dkimmod.KeyPair] = {}


def key_pair(algorithm: str = "rsa") -> dkimmod.KeyPair:
    """One generated key per algorithm for the whole test run: RSA generation takes a while."""
    if algorithm not in _KEYS:
        _KEYS[algorithm] = dkimmod.generate_key(algorithm)
    return _KEYS[algorithm]


async def add_key(store, domain: str, algorithm: str = "rsa", selector: str = "zpr1"):
    pair = key_pair(algorithm)
    return await store.create_dkim_key(
        domain, selector, algorithm, pair.private_pem, pair.public_pem
    )


EHLO = [
    b"250-mail.example.test Hello client.example [192.0.2.7]",
    b"250-PIPELINING",
    b"250-SIZE 100000",
    b"250-8BITMIME",
    b"250-ENHANCEDSTATUSCODES",
    b"250 AUTH PLAIN LOGIN",
]


class SubmissionTestCase(unittest.TestCase):
    config = None
    make_store = staticmethod(make_store)

    async def setUp(self):
        self.store = await self.make_store(self)
        self.alice = await self.store.create_mailbox("alice@example.com")
        self.bob = await self.store.create_mailbox("bob@example.com")
        _, self.password = await self.store.create_app_password(self.alice.id, "mua", ["smtp"])
        _, self.imap_password = await self.store.create_app_password(
            self.alice.id, "imap only", ["imap"]
        )
        self.key = await add_key(self.store, "example.com")
        self.session = self.new_session()

    def new_session(self, **kwargs):
        session = SubmissionSession(self, self.store, config=self.config, **kwargs)
        self.assertEqual(session.lines(), [b"220 mail.example.test ESMTP Haitatsu"])
        session.command(b"EHLO client.example\r\n")
        return session

    async def login(self, session=None):
        session = session or self.session
        lines = await session.converse(
            b"AUTH PLAIN " + plain("alice@example.com", self.password) + b"\r\n"
        )
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])


class EhloAndTLSTests(SubmissionTestCase):
    async def test_ehlo_offers_auth_plain_login(self):
        self.assertEqual(self.session.command(b"EHLO client.example\r\n"), EHLO)

    async def test_auth_not_offered_again_after_login(self):
        await self.login()
        self.assertEqual(
            self.session.command(b"EHLO client.example\r\n"),
            EHLO[:-2] + [b"250 ENHANCEDSTATUSCODES"],
        )

    async def test_tls_configured_and_not_active(self):
        """With TLS configured, a connection without TLS gets no AUTH keyword, and AUTH is
        refused with 530 5.7.0 until STARTTLS."""
        self.config = make_config(tls_mode="manual")
        session = self.new_session()
        lines = session.command(b"EHLO client.example\r\n")
        self.assertNotIn(b"AUTH", b"\n".join(lines))
        self.assertEqual(
            session.command(b"AUTH PLAIN " + plain("alice@example.com", self.password) + b"\r\n"),
            [b"530 5.7.0 Must issue a STARTTLS command first"],
        )

    async def test_tls_active_allows_auth(self):
        """On the implicit TLS port (``tls_active`` from the start) AUTH is offered and works."""
        self.config = make_config(tls_mode="manual")
        session = self.new_session(implicit_tls=True)
        self.assertIn(b"250 AUTH PLAIN LOGIN", session.command(b"EHLO client.example\r\n"))
        await self.login(session)


class AuthTests(SubmissionTestCase):
    async def test_plain_with_initial_response(self):
        await self.login()
        self.assertEqual(self.session.protocol.mailbox_id, self.alice.id)

    async def test_plain_username_is_case_insensitive(self):
        lines = await self.session.converse(
            b"AUTH PLAIN " + plain("ALICE@Example.com", self.password) + b"\r\n"
        )
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])

    async def test_plain_with_challenge(self):
        self.assertEqual(self.session.command(b"AUTH PLAIN\r\n"), [b"334 "])
        lines = await self.session.converse(plain("alice@example.com", self.password) + b"\r\n")
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])

    async def test_login(self):
        self.assertEqual(self.session.command(b"AUTH LOGIN\r\n"), [b"334 VXNlcm5hbWU6"])
        self.assertEqual(
            self.session.command(b64("alice@example.com") + b"\r\n"), [b"334 UGFzc3dvcmQ6"]
        )
        lines = await self.session.converse(b64(self.password) + b"\r\n")
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])

    async def test_login_with_initial_response(self):
        self.assertEqual(
            self.session.command(b"auth login " + b64("alice@example.com") + b"\r\n"),
            [b"334 UGFzc3dvcmQ6"],
        )
        lines = await self.session.converse(b64(self.password) + b"\r\n")
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])

    async def test_pipelined_plain_and_mail(self):
        """AUTH and MAIL in one packet: MAIL waits for the login's answer."""
        lines = await self.session.converse(
            b"AUTH PLAIN "
            + plain("alice@example.com", self.password)
            + b"\r\nMAIL FROM:<alice@example.com>\r\n",
            replies=2,
        )
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful", b"250 2.1.0 sender OK"])

    async def test_malformed_base64(self):
        self.assertEqual(
            self.session.command(b"AUTH PLAIN not*base64\r\n"),
            [b"501 5.5.2 Cannot decode response"],
        )
        self.assertEqual(self.session.command(b"AUTH LOGIN\r\n"), [b"334 VXNlcm5hbWU6"])
        self.assertEqual(self.session.command(b"%%%\r\n"), [b"501 5.5.2 Cannot decode response"])
        # The session goes on.
        await self.login()

    async def test_malformed_plain_response(self):
        self.assertEqual(
            self.session.command(b"AUTH PLAIN " + b64("alice@example.com\0pw") + b"\r\n"),
            [b"501 5.5.2 Malformed authentication response"],
        )

    async def test_cancelled(self):
        self.assertEqual(self.session.command(b"AUTH PLAIN\r\n"), [b"334 "])
        self.assertEqual(self.session.command(b"*\r\n"), [b"501 5.0.0 Authentication cancelled"])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    async def test_authzid_must_equal_username(self):
        lines = await self.session.converse(
            b"AUTH PLAIN " + plain("alice@example.com", self.password, "bob@example.com") + b"\r\n"
        )
        self.assertEqual(lines, [b"535 5.7.8 Authentication credentials invalid"])
        self.assertIsNone(self.session.protocol.mailbox_id)
        lines = await self.session.converse(
            b"AUTH PLAIN "
            + plain("alice@example.com", self.password, "alice@example.com")
            + b"\r\n"
        )
        self.assertEqual(lines, [b"235 2.7.0 Authentication successful"])

    async def test_wrong_password_scope_user_and_status(self):
        """Wrong password, an app password without the smtp scope, an unknown user and a
        suspended mailbox all get the same 535."""
        suspended = await self.store.create_mailbox("carol@example.com", status="suspended")
        _, carol_pw = await self.store.create_app_password(suspended.id, "mua", ["smtp"])
        for username, password in (
            ("alice@example.com", "wrong"),
            ("alice@example.com", self.imap_password),
            ("nobody@example.com", self.password),
            ("carol@example.com", carol_pw),
        ):
            lines = await self.session.converse(
                b"AUTH PLAIN " + plain(username, password) + b"\r\n"
            )
            self.assertEqual(lines, [b"535 5.7.8 Authentication credentials invalid"], username)

    async def test_unknown_mechanism_and_syntax(self):
        self.assertEqual(
            self.session.command(b"AUTH CRAM-MD5\r\n"),
            [b"504 5.5.4 unrecognized authentication type"],
        )
        self.assertEqual(
            self.session.command(b"AUTH\r\n"),
            [b"501 5.5.4 syntax: AUTH mechanism [initial-response]"],
        )

    async def test_auth_twice(self):
        await self.login()
        self.assertEqual(
            self.session.command(b"AUTH PLAIN " + plain("a", "b") + b"\r\n"),
            [b"503 5.5.1 already authenticated"],
        )

    async def test_auth_before_ehlo(self):
        session = SubmissionSession(self, self.store)
        session.lines()
        self.assertEqual(session.command(b"AUTH PLAIN\r\n"), [b"503 5.5.1 send HELO/EHLO first"])

    async def test_throttling_locks_the_ip(self):
        """Ten failures lock the IP for 15 minutes (API.md 5.3): then even the right password
        is refused, until the lockout is over."""
        for _ in range(10):
            lines = await self.session.converse(
                b"AUTH PLAIN " + plain("alice@example.com", "wrong") + b"\r\n"
            )
            self.assertEqual(lines, [b"535 5.7.8 Authentication credentials invalid"])
        lines = await self.session.converse(
            b"AUTH PLAIN " + plain("alice@example.com", self.password) + b"\r\n"
        )
        self.assertEqual(lines, [b"535 5.7.8 Authentication credentials invalid"])
        self.assertIsNotNone(await self.store.login_locked("192.0.2.7", 1))
        # The lockout holds in the database for every node: a new session (new throttle
        # memory, same clock) is refused too.
        other = self.new_session()
        lines = await other.converse(
            b"AUTH PLAIN " + plain("alice@example.com", self.password) + b"\r\n"
        )
        self.assertEqual(lines, [b"535 5.7.8 Authentication credentials invalid"])


class BeforeAuthTests(SubmissionTestCase):
    async def test_mail_rcpt_data_need_auth(self):
        self.assertEqual(
            self.session.command(
                b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            ),
            [b"530 5.7.0 Authentication required"] * 3,
        )


class SenderTests(SubmissionTestCase):
    async def setUp(self):
        await super().setUp()
        await self.login()

    async def mail(self, arg: bytes) -> list[bytes]:
        return await self.session.converse(b"MAIL FROM:" + arg + b"\r\n")

    async def test_own_address(self):
        self.assertEqual(await self.mail(b"<Alice@EXAMPLE.com>"), [b"250 2.1.0 sender OK"])

    async def test_auth_parameter_accepted(self):
        self.assertEqual(
            await self.mail(b"<alice@example.com> AUTH=<> SIZE=100"), [b"250 2.1.0 sender OK"]
        )

    async def test_other_address(self):
        self.assertEqual(await self.mail(b"<bob@example.com>"), [b"553 5.7.1 sender not allowed"])

    async def test_null_sender(self):
        self.assertEqual(await self.mail(b"<>"), [b"553 5.7.1 sender not allowed"])

    async def test_unparseable_sender(self):
        self.assertEqual(await self.mail(b"<a b@@c>"), [b"553 5.1.7 bad sender address syntax"])

    async def test_no_dkim_key(self):
        other = await self.store.create_mailbox("dave@nokey.example")
        _, password = await self.store.create_app_password(other.id, "mua", ["smtp"])
        session = self.new_session()
        await session.converse(b"AUTH PLAIN " + plain("dave@nokey.example", password) + b"\r\n")
        lines = await session.converse(b"MAIL FROM:<dave@nokey.example>\r\n")
        self.assertEqual(lines, [b"550 5.7.0 no DKIM key for the sender's domain"])

    async def test_bad_recipient(self):
        await self.mail(b"<alice@example.com>")
        self.assertEqual(
            self.session.command(b"RCPT TO:<a b@@c>\r\n"),
            [b"553 5.1.3 bad recipient address syntax"],
        )

    async def test_recipient_limit_from_mailbox(self):
        """The mailbox's ``recipients_per_message`` caps recipients: 452 4.5.3 beyond it;
        the same address twice counts once."""
        await self.store.update_mailbox(
            self.alice.id, outbound_limits={"recipients_per_message": 2}
        )
        await self.mail(b"<alice@example.com>")
        self.assertEqual(
            self.session.command(
                b"RCPT TO:<a@x.example>\r\nRCPT TO:<A@x.example>\r\nRCPT TO:<b@x.example>\r\n"
                b"RCPT TO:<c@x.example>\r\n"
            ),
            [b"250 2.1.5 recipient OK"] * 3 + [b"452 4.5.3 too many recipients"],
        )


class LimitTests(SubmissionTestCase):
    config = make_config(per_day=5, max_submission_recipients=3)

    async def setUp(self):
        await super().setUp()
        await self.login()

    async def send(self, rcpts=(b"carol@remote.example",), body=b"Subject: t\r\n\r\nHi\r\n"):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.com>\r\n"
            + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts)
            + b"DATA\r\n",
            replies=len(rcpts) + 2,
        )
        if lines[-1].startswith(b"354"):
            lines += await self.session.converse(body + b".\r\n")
        return lines

    async def test_server_recipient_limit(self):
        lines = await self.send([b"a@x.example", b"b@x.example", b"c@x.example", b"d@x.example"])
        self.assertEqual(lines[4], b"452 4.5.3 too many recipients")
        self.assertTrue(lines[-1].startswith(b"250 2.0.0 OK"), lines)

    async def test_per_hour_from_mailbox_overrides_default(self):
        """``per_hour = 1`` on the mailbox: the first message is queued, the next MAIL gets
        450 4.7.1. The default per_day (5) still applies alongside."""
        await self.store.update_mailbox(self.alice.id, outbound_limits={"per_hour": 1})
        self.assertTrue((await self.send())[-1].startswith(b"250 2.0.0 OK"))
        self.assertEqual(
            await self.session.converse(b"MAIL FROM:<alice@example.com>\r\n"),
            [b"450 4.7.1 outbound rate limit exceeded, try again later"],
        )

    async def test_zero_on_mailbox_is_unlimited(self):
        """``per_day = 0`` on the mailbox overrides the default of 5: unlimited."""
        await self.store.update_mailbox(self.alice.id, outbound_limits={"per_day": 0})
        for _ in range(6):
            self.assertTrue((await self.send())[-1].startswith(b"250 2.0.0 OK"))

    async def test_default_per_day(self):
        for _ in range(5):
            self.assertTrue((await self.send())[-1].startswith(b"250 2.0.0 OK"))
        self.assertEqual(
            await self.session.converse(b"MAIL FROM:<alice@example.com>\r\n"),
            [b"450 4.7.1 outbound rate limit exceeded, try again later"],
        )

    async def test_over_quota(self):
        await self.store.update_mailbox(self.alice.id, quota_bytes=100)
        lines = await self.send(body=b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n")
        self.assertEqual(lines[-1], b"552 5.2.2 mailbox over quota")
        self.assertEqual((await self.store.get_mailbox(self.alice.id)).used_bytes, 0)
        sent = await self.store.get_folder(self.alice.id, "Sent")
        self.assertEqual(await self.store.list_folder_messages(sent.id), [])
        self.assertEqual(await self.store.count_outbound_since(self.alice.id, 0), 0)
        self.assertEqual(self.session.spool_files(), [])


class PostgresLimitTests(LimitTests):
    """Limits and quota on PostgreSQL: the in-transaction count and the quota charge."""

    skip = PG_SKIP
    make_store = staticmethod(make_pg_store)
