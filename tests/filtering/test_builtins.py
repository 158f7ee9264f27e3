"""The built-in filters through the chain, each with smtplib against the MX on loopback and the
real store; DNSBL against a twisted.names server on loopback."""

from __future__ import annotations

import os
import smtplib

import attrs
from twisted.internet import reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from haitatsu.config.model import Config, DNSConfig, FilterSpec, ServerConfig, SpamConfig
from haitatsu.filtering.registry import Filtering
from haitatsu.smtp import InboundSMTPFactory
from tests.filtering.helpers import soa, start_dns_server, start_silent_server
from tests.smtp.helpers import temp_dir
from tests.support import make_store

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Date: Thu, 01 May 2025 10:20:30 +0000\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Hello\r\n"
)


def spec(name, **options):
    return FilterSpec(name, options=options)


class LoopbackMX(unittest.TestCase):
    """The MX on 127.0.0.1 with the chain ``filters`` builds (through ``Filtering``, as the hub
    does), on a real SQLite store with mailboxes bob@ and carol@example.com."""

    timeout = 60

    async def setUp(self):
        self.root = temp_dir(self)
        self.store = await make_store(self, os.path.join(self.root, "store"))
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("carol@example.com")

    async def serve(self, *filters, **config):
        self.config = Config(server=ServerConfig(public_hostname="mx.builtin.test"), **config)
        if filters:
            self.config = attrs.evolve(self.config, filters=tuple(filters))
        self.filtering = Filtering(self.store, reactor, self.config)
        factory = InboundSMTPFactory(
            lambda: self.config,
            self.store,
            reactor,
            os.path.join(self.root, "spool"),
            chain=self.filtering.get_chain,
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=15)

    def _sendmail(self, rcpts, message, sender):
        with self.client() as c:
            try:
                return c.sendmail(sender, rcpts, message)
            except smtplib.SMTPRecipientsRefused as e:
                return {k: v for k, v in e.recipients.items()}
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
                return (e.smtp_code, e.smtp_error)

    def sendmail(self, rcpts=("bob@example.com",), message=MESSAGE, sender="alice@example.org"):
        """smtplib's ``sendmail`` in a thread: {} when every recipient took it, the refused
        recipients, or ``(code, text)`` of a refused MAIL or DATA."""
        return threads.deferToThread(self._sendmail, list(rcpts), message, sender)

    async def folder(self, mailbox, name="INBOX"):
        f = await self.store.get_folder(mailbox.id, name)
        rows = await self.store.list_folder_messages(f.id)
        if not rows:
            return []
        return [info for _, info in await self.store.get_messages(f.id, [r.uid for r in rows])]


class SenderRulesTests(LoopbackMX):
    """API.md 1.12 with the default chain (no ``filters`` in the config)."""

    async def test_default_chain_is_sender_rules_spam_score_and_sieve(self):
        await self.serve()
        self.assertEqual(self.filtering.current.names, ["sender_rules", "spam_score", "sieve"])

    async def test_block_scores_the_reject_threshold(self):
        # As in the original: a block is 10 points, spam.reject_threshold's default.
        await self.serve()
        await self.store.create_sender_rule("global", "", "block", "email", "Alice@Example.org")
        self.assertEqual(await self.sendmail(), (550, b"5.7.1 message rejected by policy"))

    async def test_block_sends_to_junk(self):
        await self.serve(spam=SpamConfig(reject_threshold=20))
        await self.store.create_sender_rule("global", "", "block", "email", "Alice@Example.org")
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.folder(self.bob), [])
        [info] = await self.folder(self.bob, "Junk")
        results = info.auth_results
        self.assertEqual((results["list_kind"], results["list_action"]), ("block", "junk"))
        self.assertEqual(results["spam_reasons"], ["blocklist"])
        self.assertEqual(info.spam_score, 10)
        self.assertTrue(results["mailboxes"][self.bob.id]["junk"])

    async def test_block_with_reject(self):
        await self.serve()
        await self.store.create_sender_rule(
            "global", "", "block", "domain", "example.org", "reject"
        )
        self.assertEqual(await self.sendmail(), (550, b"5.7.1 message rejected by policy"))
        self.assertEqual(await self.folder(self.bob), [])

    async def test_allow_and_first_match_wins(self):
        await self.serve()
        await self.store.create_sender_rule("global", "", "allow", "ip", "127.0.0.1")
        await self.store.create_sender_rule("global", "", "block", "cidr", "127.0.0.0/8")
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["list_kind"], "allow")
        self.assertEqual(info.spam_score, 0)  # 5 off, never below 0

    async def test_mailbox_and_domain_scopes(self):
        await self.serve(spam=SpamConfig(reject_threshold=20))
        await self.store.create_sender_rule(
            "mailbox", self.carol.id, "block", "cidr", "127.0.0.0/8"
        )
        self.assertEqual(await self.sendmail(["bob@example.com"]), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        self.assertEqual(await self.sendmail(["carol@example.com"]), {})
        self.assertEqual(len(await self.folder(self.carol, "Junk")), 1)
        await self.store.create_sender_rule(
            "domain", "example.com", "block", "email", "alice@example.org", "reject"
        )
        self.assertEqual((await self.sendmail(["bob@example.com"]))[0], 550)

    async def test_domain_scope_can_be_turned_off(self):
        await self.serve(spec("sender_rules", domain_scope=False))
        await self.store.create_sender_rule(
            "domain", "example.com", "block", "ip", "127.0.0.1", "reject"
        )
        self.assertEqual(await self.sendmail(), {})


class SharedReadTests(LoopbackMX):
    """The default chain's filters read what they need about the recipients in one read
    transaction per message (``inbound_filter_data``), and each message reads afresh."""

    def count_reads(self):
        counts = {}
        for name in (
            "inbound_filter_data",
            "sender_rules_for",
            "mailbox_spam_thresholds",
            "active_sieve_script",
        ):
            real = getattr(self.store, name)

            def counted(*args, _real=real, _name=name, **kwargs):
                counts[_name] = counts.get(_name, 0) + 1
                return _real(*args, **kwargs)

            setattr(self.store, name, counted)
            self.addCleanup(delattr, self.store, name)
        return counts

    async def test_one_read_per_message_for_the_three_filters(self):
        await self.serve(spam=SpamConfig(reject_threshold=20))
        await self.store.update_mailbox(self.carol.id, spam_thresholds={"junk_threshold": 0})
        await self.store.put_sieve_script(self.bob.id, "drop", "discard;", activate=True)
        allow = await self.store.create_sender_rule(
            "mailbox", self.carol.id, "allow", "ip", "127.0.0.1"
        )
        counts = self.count_reads()
        rcpts = ["bob@example.com", "carol@example.com"]
        self.assertEqual(await self.sendmail(rcpts), {})
        self.assertEqual(counts, {"inbound_filter_data": 1})
        self.assertEqual(await self.folder(self.bob), [])  # bob's script discarded it
        [first] = await self.folder(self.carol, "Junk")  # carol's own threshold is 0
        self.assertEqual(first.auth_results["list_kind"], "allow")
        # The next message sees what changed in between: nothing is kept across messages.
        await self.store.put_sieve_script(self.bob.id, "keep", "keep;", activate=True)
        await self.store.update_mailbox(self.carol.id, spam_thresholds=None)
        await self.store.delete_sender_rule(allow.id)
        await self.store.create_sender_rule("global", "", "block", "ip", "127.0.0.1")
        self.assertEqual(await self.sendmail(rcpts), {})
        self.assertEqual(counts, {"inbound_filter_data": 2})
        [kept] = await self.folder(self.bob, "Junk")  # kept, in Junk: 10 points >= 5
        self.assertEqual(kept.auth_results["list_kind"], "block")
        self.assertEqual(len(await self.folder(self.carol, "Junk")), 2)
        self.assertEqual(await self.folder(self.carol), [])


class SizeCheckTests(LoopbackMX):
    async def test_declared_and_actual_size(self):
        await self.serve(spec("size_check", max_bytes=200))
        big = MESSAGE + b"x" * 300 + b"\r\n"
        # smtplib declares SIZE= at MAIL FROM: refused there.
        self.assertEqual(
            await self.sendmail(message=big),
            (552, b"5.3.4 message size exceeds fixed maximum message size"),
        )

        def undeclared():
            with self.client() as c:
                c.ehlo()
                c.mail("alice@example.org")
                c.rcpt("bob@example.com")
                return c.data(big)

        self.assertEqual(
            await threads.deferToThread(undeclared),
            (552, b"5.3.4 message size exceeds fixed maximum message size"),
        )
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)


class HeaderValidateTests(LoopbackMX):
    async def test_record(self):
        await self.serve(spec("header_validate"))
        message = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
        message = message.replace(b"Date: Thu, 01 May 2025 10:20:30 +0000", b"Date: someday")
        self.assertEqual(await self.sendmail(message=message), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["spam_reasons"], ["bad_date", "missing_message_id"])
        self.assertEqual(info.auth_results["header_problems"], ["bad_date", "missing_message_id"])
        self.assertEqual(info.spam_score, 1)

    async def test_reject(self):
        await self.serve(spec("header_validate", action="reject"))
        no_from = MESSAGE.replace(b"From: Alice <alice@example.org>\r\n", b"")
        self.assertEqual(
            await self.sendmail(message=no_from),
            (550, b"5.6.0 message header violates RFC 5322: missing_from"),
        )
        two_subjects = MESSAGE.replace(b"Subject: hi\r\n", b"Subject: hi\r\nSubject: again\r\n")
        self.assertEqual((await self.sendmail(message=two_subjects))[0], 550)
        # A missing Message-ID alone is a SHOULD: recorded, not refused.
        no_id = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
        self.assertEqual(await self.sendmail(message=no_id), {})


class HeaderProblemTests(unittest.SynchronousTestCase):
    """header_validate's checks on header fields alone."""

    def setUp(self):
        import importlib

        from haitatsu.filtering.registry import builtin_package

        builtin_package()  # haitatsu.filters, installed or from the checkout
        self.problems = importlib.import_module("haitatsu.filters.header_validate").problems

    def test_problems(self):
        good = [
            ("From", "Alice <a@b.example>"),
            ("Date", "Thu, 01 May 2025 10:20:30 +0000"),
            ("Message-ID", "<x.1@y.example>"),
        ]
        self.assertEqual(self.problems(good), [])
        self.assertEqual(self.problems([]), ["missing_from", "missing_date", "missing_message_id"])
        self.assertEqual(
            self.problems(
                good + [("from", "c@d.example"), ("DATE", "x"), ("To", "a"), ("to", "b")]
            ),
            ["multiple_from", "multiple_date", "duplicate_to"],
        )
        bad = [("From", "undisclosed"), ("Date", "31 Feb"), ("Message-ID", "no-brackets@x")]
        self.assertEqual(self.problems(bad), ["bad_from", "bad_date", "bad_message_id"])
        self.assertEqual(self.problems(bad, ("date",)), ["bad_date"])
        self.assertEqual(self.problems([("Message-ID", "<a@[192.0.2.1]>")], ("message_id",)), [])


DNSBL_ZONES = [
    f"""
zone = [
    {soa("bl.test")}
    A("1.0.0.127.bl.test", "127.0.0.2"),
    A("2.0.0.127.bl.test", "127.0.0.4"),
]
""",
    f"""
zone = [
    {soa("refusing.test")}
    A("1.0.0.127.refusing.test", "127.255.255.254"),
]
""",
    f"""
zone = [
    {soa("clean.test")}
    A("9.9.9.9.clean.test", "127.0.0.2"),
]
""",
]


class DNSBLTests(LoopbackMX):
    async def serve_dnsbl(self, zones, **options):
        port = start_dns_server(self, *DNSBL_ZONES)
        await self.serve(
            spec("dnsbl", zones=zones, skip_private=False, **options),
            dns=DNSConfig(nameservers=(f"127.0.0.1:{port}",), timeout_seconds=1),
        )

    async def test_reject_at_connect(self):
        await self.serve_dnsbl([{"zone": "bl.test", "action": "reject"}])

        def connect():
            try:
                self.client()
            except smtplib.SMTPConnectError as e:
                return e.smtp_code, e.smtp_error
            return None

        self.assertEqual(
            await threads.deferToThread(connect),
            (554, b"5.7.1 client [127.0.0.1] is listed by bl.test"),
        )

    async def test_score_and_quarantine(self):
        await self.serve_dnsbl(["bl.test", {"zone": "clean.test", "action": "reject"}])
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["dnsbl"], "bl.test")
        self.assertEqual(info.auth_results["spam_reasons"], ["dnsbl:bl.test"])
        self.assertEqual(info.spam_score, 4)  # spam.dnsbl_score's default
        self.assertEqual(
            info.auth_results["filters"],
            [
                {
                    "name": "dnsbl",
                    "stage": "connect",
                    "action": "continue",
                    "reason": "dnsbl:bl.test",
                }
            ],
        )

    async def test_quarantine(self):
        await self.serve_dnsbl([{"zone": "bl.test", "action": "quarantine", "score": 1.5}])
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 1.5)

    async def test_codes_and_refusals_are_not_listings(self):
        await self.serve_dnsbl(
            [{"zone": "bl.test", "action": "reject", "codes": ["127.0.0.4"]}, "refusing.test"]
        )
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["dnsbl"], "")
        self.assertEqual(info.auth_results["dnsbl_errors"], ["refusing.test"])

    async def test_defaults_from_the_spam_block(self):
        port = start_dns_server(self, *DNSBL_ZONES)
        await self.serve(
            spec("dnsbl", skip_private=False),
            dns=DNSConfig(nameservers=(f"127.0.0.1:{port}",)),
            spam=SpamConfig(dnsbl_zones=("bl.test",), dnsbl_score=2.5),
        )
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 2.5)

    async def test_a_dead_block_list_does_not_stop_mail(self):
        silent = start_silent_server(self)
        await self.serve(
            spec("dnsbl", zones=["bl.test"], skip_private=False),
            dns=DNSConfig(nameservers=(f"127.0.0.1:{silent}",), timeout_seconds=0.3),
        )
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["dnsbl_errors"], ["bl.test"])

    async def test_private_clients_are_not_looked_up(self):
        silent = start_silent_server(self)
        await self.serve(
            spec("dnsbl", zones=["bl.test"]),
            dns=DNSConfig(nameservers=(f"127.0.0.1:{silent}",), timeout_seconds=5),
        )
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertNotIn("dnsbl_errors", info.auth_results)


class GreylistTests(LoopbackMX):
    async def test_first_attempt_deferred_retry_passes(self):
        await self.serve(spec("greylist", delay_seconds=0.5, auto_allow_passes=0))
        refused = await self.sendmail()
        self.assertEqual(refused["bob@example.com"][0], 451)
        self.assertIn(b"4.7.1 greylisted", refused["bob@example.com"][1])
        self.assertEqual((await self.sendmail())["bob@example.com"][0], 451)  # too early
        await task.deferLater(reactor, 0.6, lambda: None)
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(), {})  # known from now on
        [first, second] = await self.folder(self.bob)
        self.assertEqual(first.auth_results["greylist"], "passed")
        self.assertEqual(second.auth_results["greylist"], "known")
        # Another recipient is another triplet.
        refused = await self.sendmail(["bob@example.com", "carol@example.com"])
        self.assertEqual(list(refused), ["carol@example.com"])

    async def test_auto_allow_and_skip_networks(self):
        await self.serve(spec("greylist", delay_seconds=0.3, auto_allow_passes=1))
        await self.sendmail()
        await task.deferLater(reactor, 0.4, lambda: None)
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(["carol@example.com"], sender="dave@example.net"), {})
        [info] = await self.folder(self.carol)
        self.assertEqual(info.auth_results["greylist"], "client")

    async def test_skip_networks(self):
        await self.serve(spec("greylist", skip_networks=["127.0.0.0/8"]))
        self.assertEqual(await self.sendmail(), {})


class RateLimitTests(LoopbackMX):
    async def test_per_ip(self):
        await self.serve(spec("rate_limit", per_ip={"limit": 2, "period_seconds": 3600}))
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(
            await self.sendmail(), (450, b"4.7.1 rate limit exceeded, try again later")
        )

    async def test_default_per_ip_is_the_limits_block(self):
        from haitatsu.config.model import LimitsConfig

        await self.serve(
            spec("rate_limit"), limits=LimitsConfig(inbound_messages_per_minute_per_ip=1)
        )
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual((await self.sendmail())[0], 450)

    async def test_per_sender_and_per_recipient(self):
        await self.serve(
            spec(
                "rate_limit",
                per_ip={"limit": 0},
                per_sender={"limit": 2, "period_seconds": 3600},
                per_recipient={"limit": 2, "period_seconds": 3600},
            )
        )
        self.assertEqual(await self.sendmail(["bob@example.com"]), {})
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        # alice has sent two: her third MAIL FROM is refused.
        self.assertEqual(
            await self.sendmail(["carol@example.com"]),
            (450, b"4.7.1 rate limit exceeded, try again later"),
        )
        # bob has had two: RCPT to him is refused, carol still takes one more.
        refused = await self.sendmail(
            ["bob@example.com", "carol@example.com"], sender="dave@x.test"
        )
        self.assertEqual(list(refused), ["bob@example.com"])
        self.assertEqual(refused["bob@example.com"][0], 450)
        self.assertEqual(len(await self.folder(self.carol)), 2)
