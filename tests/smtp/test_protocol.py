"""The MX session's exact replies to commands that need no store: greeting, EHLO keywords,
HELO, NOOP, RSET, HELP, VRFY, QUIT, sequence and syntax errors, SIZE, line limits, idle timeout."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from haitatsu.smtp import InboundESMTP, InboundSMTPFactory
from tests.smtp.helpers import HOST, PEER, Session, make_config

GREETING = b"220 mx.example.test ESMTP Haitatsu"
EHLO_REPLY = [
    b"250-mx.example.test Hello client.example [192.0.2.7]",
    b"250-PIPELINING",
    b"250-SIZE 10000",
    b"250-8BITMIME",
    b"250 ENHANCEDSTATUSCODES",
]


class GreetingAndHelloTests(SynchronousTestCase):
    def test_greeting(self):
        """The greeting names the public host name; RFC 2034 puts no enhanced code on it."""
        session = Session(self)
        self.assertEqual(session.lines(), [GREETING])

    def test_ehlo_keywords(self):
        """EHLO lists PIPELINING, SIZE with the configured limit, 8BITMIME and
        ENHANCEDSTATUSCODES, and nothing else: no AUTH on the MX, no STARTTLS without TLS."""
        session = Session(self)
        session.lines()
        self.assertEqual(session.command(b"EHLO client.example\r\n"), EHLO_REPLY)

    def test_ehlo_extra_extensions(self):
        """The extension hook adds keywords (X-RESTMAIL of FEDERATION.md) after ours, and the
        hook sees the session's config."""
        seen = []

        def extra(config):
            seen.append(config)
            return {"X-RESTMAIL": ["v1", "https://mx.example.test/v1"], "X-EMPTY": None}

        session = Session(self, extra_extensions=extra)
        session.lines()
        self.assertEqual(
            session.command(b"EHLO client.example\r\n"),
            EHLO_REPLY[:-1]
            + [
                b"250-ENHANCEDSTATUSCODES",
                b"250-X-RESTMAIL v1 https://mx.example.test/v1",
                b"250 X-EMPTY",
            ],
        )
        self.assertIs(seen[0], session.config)

    def test_helo(self):
        session = Session(self)
        session.lines()
        self.assertEqual(
            session.command(b"HELO client.example\r\n"),
            [b"250 mx.example.test Hello client.example [192.0.2.7]"],
        )

    def test_helo_without_domain(self):
        session = Session(self)
        session.lines()
        self.assertEqual(
            session.command(b"HELO\r\nEHLO\r\n"),
            [
                b"501 5.5.4 HELO requires a domain name or address literal",
                b"501 5.5.4 EHLO requires a domain name or address literal",
            ],
        )

    def test_helo_with_8bit_name(self):
        session = Session(self)
        session.lines()
        self.assertEqual(
            session.command(b"EHLO caf\xc3\xa9.example\r\n"),
            [b"501 5.5.4 EHLO requires a domain name or address literal"],
        )

    def test_size_follows_config(self):
        """SIZE advertises ``limits.max_message_size_bytes`` of the session's config."""
        session = Session(self, config=make_config(max_message_size=52428800))
        session.lines()
        self.assertIn(b"250-SIZE 52428800", session.command(b"EHLO a.example\r\n"))


class SimpleCommandTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(self)
        self.session.lines()

    def test_noop(self):
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])
        self.assertEqual(self.session.command(b"noop anything\r\n"), [b"250 2.0.0 OK"])

    def test_rset(self):
        self.assertEqual(self.session.command(b"RSET\r\n"), [b"250 2.0.0 OK"])

    def test_rset_with_argument(self):
        self.assertEqual(
            self.session.command(b"RSET now\r\n"), [b"501 5.5.4 RSET takes no parameters"]
        )

    def test_rset_clears_sender(self):
        """After RSET a new MAIL is accepted instead of 503."""
        self.session.command(b"EHLO a.example\r\n")
        self.assertEqual(
            self.session.command(b"MAIL FROM:<a@b.example>\r\nRSET\r\nMAIL FROM:<c@d.example>\r\n"),
            [b"250 2.1.0 sender OK", b"250 2.0.0 OK", b"250 2.1.0 sender OK"],
        )

    def test_help(self):
        self.assertEqual(
            self.session.command(b"HELP\r\n"),
            [
                b"214 2.0.0 commands: DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY; "
                b"see RFC 5321"
            ],
        )

    def test_vrfy(self):
        """VRFY gives RFC 5321's 252: we neither confirm nor deny an address."""
        self.assertEqual(
            self.session.command(b"VRFY someone@example.test\r\n"),
            [b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"],
        )
        self.assertEqual(self.session.command(b"VRFY\r\n"), [b"501 5.5.4 syntax: VRFY <address>"])

    def test_quit(self):
        self.assertEqual(
            self.session.command(b"QUIT\r\n"), [b"221 2.0.0 mx.example.test closing connection"]
        )
        self.assertTrue(self.session.transport.disconnecting)

    def test_lines_after_quit_are_ignored(self):
        """Commands pipelined after QUIT get no reply."""
        self.assertEqual(
            self.session.command(b"QUIT\r\nNOOP\r\n"),
            [b"221 2.0.0 mx.example.test closing connection"],
        )


class MalformedCommandTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(self)
        self.session.lines()

    def test_unknown_command(self):
        self.assertEqual(self.session.command(b"FROB x\r\n"), [b"500 5.5.1 command not recognized"])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    def test_unimplemented_commands(self):
        """AUTH (twisted's ESMTP would offer it), STARTTLS without TLS and EXPN are 502."""
        self.assertEqual(
            self.session.command(b"AUTH PLAIN AGFAYg==\r\nSTARTTLS\r\nEXPN list\r\n"),
            [b"502 5.5.1 command not implemented"] * 3,
        )

    def test_empty_line(self):
        self.assertEqual(self.session.command(b"\r\n"), [b"500 5.5.2 syntax error"])

    def test_nul_bytes(self):
        self.assertEqual(
            self.session.command(b"NO\x00OP\r\nNOOP\r\n"),
            [b"500 5.5.2 syntax error: control character in command", b"250 2.0.0 OK"],
        )

    def test_8bit_garbage(self):
        """Bytes that are not a command verb are a syntax error and the session goes on."""
        self.assertEqual(
            self.session.command(b"\xff\xfe\xfa\x80 \xc3\xa9\r\nNOOP\r\n"),
            [b"500 5.5.2 syntax error", b"250 2.0.0 OK"],
        )

    def test_bare_lf_is_not_a_line_end(self):
        """RFC 5321 2.3.8: only CRLF ends a line; a bare LF inside a command is refused."""
        self.assertEqual(
            self.session.command(b"NOOP\nNOOP\r\n"),
            [b"500 5.5.2 syntax error: control character in command"],
        )

    def test_over_long_command_line(self):
        """A line over ``smtp.max_line_length`` is answered 500 5.5.2 and the session
        continues with the next line, even when the long line arrives in pieces."""
        self.assertEqual(
            self.session.command(b"NOOP " + b"x" * 500 + b"\r\nNOOP\r\n"),
            [b"500 5.5.2 line too long", b"250 2.0.0 OK"],
        )
        self.session.send(b"NOOP " + b"y" * 300)
        self.session.send(b"y" * 300 + b"\r")
        self.assertEqual(self.session.lines(), [])
        self.assertLessEqual(len(self.session.protocol._buffer), 201)
        self.assertEqual(
            self.session.command(b"\nNOOP\r\n"), [b"500 5.5.2 line too long", b"250 2.0.0 OK"]
        )

    def test_line_at_the_limit(self):
        """A line of exactly ``max_line_length`` octets (CRLF not counted) is processed."""
        line = b"NOOP " + b"z" * 195
        self.assertEqual(len(line), 200)
        self.assertEqual(self.session.command(line + b"\r\n"), [b"250 2.0.0 OK"])


class SequenceTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(self)
        self.session.lines()

    def test_mail_before_helo(self):
        self.assertEqual(
            self.session.command(b"MAIL FROM:<a@b.example>\r\n"),
            [b"503 5.5.1 send HELO/EHLO first"],
        )

    def test_rcpt_before_mail(self):
        self.session.command(b"EHLO a.example\r\n")
        self.assertEqual(
            self.session.command(b"RCPT TO:<x@y.example>\r\n"),
            [b"503 5.5.1 need MAIL before RCPT"],
        )

    def test_data_before_mail(self):
        self.session.command(b"EHLO a.example\r\n")
        self.assertEqual(self.session.command(b"DATA\r\n"), [b"503 5.5.1 need MAIL before DATA"])

    def test_data_before_rcpt(self):
        self.session.command(b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\n")
        self.assertEqual(self.session.command(b"DATA\r\n"), [b"503 5.5.1 need RCPT before DATA"])
        self.assertEqual(self.session.spool_files(), [])

    def test_data_with_argument(self):
        self.session.command(b"EHLO a.example\r\n")
        self.assertEqual(
            self.session.command(b"DATA now\r\n"), [b"501 5.5.4 DATA takes no parameters"]
        )

    def test_second_mail(self):
        self.session.command(b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\n")
        self.assertEqual(
            self.session.command(b"MAIL FROM:<a@b.example>\r\n"),
            [b"503 5.5.1 sender already specified"],
        )

    def test_ehlo_resets_transaction(self):
        """RFC 5321 4.1.4: EHLO in the middle of a transaction starts afresh."""
        self.session.command(b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\n")
        self.session.command(b"EHLO a.example\r\n")
        self.assertEqual(
            self.session.command(b"MAIL FROM:<a@b.example>\r\n"), [b"250 2.1.0 sender OK"]
        )


class MailFromTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(self)
        self.session.command(b"EHLO client.example\r\n")
        self.session.lines()

    def mail(self, rest: bytes) -> list[bytes]:
        lines = self.session.command(b"MAIL " + rest + b"\r\n")
        self.session.command(b"RSET\r\n")
        return lines

    def test_accepted_forms(self):
        ok = [b"250 2.1.0 sender OK"]
        self.assertEqual(self.mail(b"FROM:<alice@example.org>"), ok)
        self.assertEqual(self.mail(b"from:<alice@example.org>"), ok)
        self.assertEqual(self.mail(b"FROM: <alice@example.org>"), ok)
        self.assertEqual(self.mail(b"FROM:alice@example.org"), ok)
        self.assertEqual(self.mail(b'FROM:<"a b"@example.org>'), ok)
        self.assertEqual(self.mail(b"FROM:<@relay.example:alice@example.org>"), ok)

    def test_null_sender(self):
        self.assertEqual(self.mail(b"FROM:<>"), [b"250 2.1.0 sender OK"])
        self.assertEqual(self.session.protocol.sender, None)
        self.session.command(b"MAIL FROM:<>\r\n")
        self.assertEqual(self.session.protocol.sender, "")

    def test_size_and_body_parameters(self):
        ok = [b"250 2.1.0 sender OK"]
        self.assertEqual(self.mail(b"FROM:<a@b.example> SIZE=10000"), ok)
        self.assertEqual(self.mail(b"FROM:<a@b.example> BODY=8BITMIME SIZE=12"), ok)
        self.assertEqual(self.mail(b"FROM:<a@b.example> body=7bit"), ok)

    def test_size_over_limit(self):
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> SIZE=10001"),
            [b"552 5.3.4 message size exceeds fixed maximum message size"],
        )

    def test_malformed_parameters(self):
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> SIZE=big"),
            [b"501 5.5.4 SIZE requires a number of octets"],
        )
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> SIZE"), [b"501 5.5.4 SIZE requires a number of octets"]
        )
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> BODY=BINARYMIME"),
            [b"501 5.5.4 BODY must be 7BIT or 8BITMIME"],
        )
        self.assertEqual(self.mail(b"FROM:<a@b.example> =x"), [b"501 5.5.4 malformed parameter"])
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> SIZE=1 SIZE=2"),
            [b"501 5.5.4 duplicate parameter SIZE"],
        )

    def test_unknown_parameter(self):
        """RFC 5321 4.1.1.11: a parameter we do not implement is 555."""
        self.assertEqual(
            self.mail(b"FROM:<a@b.example> RET=HDRS"),
            [b"555 5.5.4 parameter RET not supported"],
        )

    def test_bad_syntax(self):
        self.assertEqual(
            self.mail(b"alice@example.org"),
            [b"501 5.5.4 syntax: MAIL FROM:<address> [parameters]"],
        )
        self.assertEqual(
            self.mail(b"FROM:"), [b"501 5.5.4 syntax: MAIL FROM:<address> [parameters]"]
        )
        self.assertEqual(
            self.mail(b"FROM:<a@b@c.example>"), [b"501 5.1.7 bad sender address syntax"]
        )
        self.assertEqual(
            self.mail(b"FROM:<a@b.example"), [b"501 5.5.4 syntax: MAIL FROM:<address> [parameters]"]
        )

    def test_8bit_address(self):
        self.assertEqual(
            self.mail(b"FROM:<caf\xc3\xa9@example.org>"),
            [b"553 5.6.7 non-ASCII address requires SMTPUTF8, which is not offered"],
        )

    def test_rcpt_bad_syntax(self):
        """RCPT syntax is checked before any lookup, so no store is needed to refuse it."""
        self.session.command(b"MAIL FROM:<a@b.example>\r\n")
        self.assertEqual(
            self.session.command(
                b"RCPT x@y.example\r\nRCPT TO:<>\r\nRCPT TO:<a@@b>\r\n"
                b"RCPT TO:<x@y.example> NOTIFY=NEVER\r\n"
            ),
            [
                b"501 5.5.4 syntax: RCPT TO:<address> [parameters]",
                b"501 5.1.3 bad recipient address syntax",
                b"501 5.1.3 bad recipient address syntax",
                b"555 5.5.4 parameter NOTIFY not supported",
            ],
        )


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_timeout(self):
        """After ``smtp.idle_timeout_seconds`` without input: 421 4.4.2, then close."""
        session = Session(self, config=make_config(idle_timeout=60))
        session.lines()
        session.clock.advance(59)
        session.command(b"NOOP\r\n")
        session.clock.advance(59)
        self.assertFalse(session.transport.disconnecting)
        session.clock.advance(1)
        self.assertEqual(session.lines(), [b"421 4.4.2 mx.example.test idle timeout"])
        self.assertTrue(session.transport.disconnecting)

    def test_timer_cancelled_on_disconnect(self):
        session = Session(self)
        session.protocol.connectionLost(None)
        self.assertEqual(session.clock.getDelayedCalls(), [])


class FactoryTests(SynchronousTestCase):
    def test_new_connection_reads_live_config(self):
        """A reload (a new Config from ``get_config``) applies to the next connection; a
        session keeps the config it started with."""
        configs = [make_config(max_message_size=1000)]
        factory = InboundSMTPFactory(lambda: configs[0], None, None, self.mktemp())
        first = factory.buildProtocol(PEER)
        configs[0] = make_config(max_message_size=2000)
        second = factory.buildProtocol(PEER)
        self.assertIsInstance(first, InboundESMTP)
        self.assertEqual(first.extensions()[b"SIZE"], [b"1000"])
        self.assertEqual(second.extensions()[b"SIZE"], [b"2000"])
        self.assertEqual(second.host, HOST.encode())
