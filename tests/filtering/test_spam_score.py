"""``spam_score`` through the chain: smtplib against the MX on loopback, the real store, and the
SPF/DKIM/DMARC results those filters would give injected by a plugin placed earlier in the chain
(``tests/filtering/injector.py``), so the scoring is tested by the keys API.md 2.1 documents."""

from __future__ import annotations

import json

from twisted.trial import unittest

from haitatsu.config.model import SpamConfig
from haitatsu.filtering import FilterResult
from haitatsu.filtering.registry import builtin_package
from tests.filtering.injector import plugin_directory
from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec

builtin_package()  # haitatsu.filters, from filters/ in a checkout
from haitatsu.filters.spam_score import auth_points, mailbox_junk_threshold  # noqa: E402

REJECTED = (550, b"5.7.1 message rejected by policy")


def with_results(*results, message=MESSAGE) -> bytes:
    """``message`` with an ``X-Test-Results`` header the ``inject`` plugin turns into results."""
    return b"X-Test-Results: " + json.dumps(list(results)).encode() + b"\r\n" + message


SPF_FAIL = {"method": "spf", "result": "fail", "fields": {"spf": "fail"}}
SPF_SOFTFAIL = {"method": "spf", "result": "softfail", "fields": {"spf": "softfail"}}
DKIM_FAIL = {"method": "dkim", "result": "fail", "fields": {"dkim": "fail"}}


def dmarc_fail(policy):
    return {
        "method": "dmarc",
        "result": "fail",
        "fields": {"dmarc": "fail", "dmarc_policy": policy},
    }


class SpamScoreMX(LoopbackMX):
    async def serve_scored(self, *before, **config):
        """``inject``, then ``before``, then ``spam_score``."""
        config.setdefault("plugins", plugin_directory(self))
        await self.serve(spec("inject"), *before, spec("spam_score"), **config)


class ScoreTests(SpamScoreMX):
    async def test_authentication_results_score_by_the_table(self):
        await self.serve_scored()
        self.assertEqual(await self.sendmail(message=with_results(SPF_FAIL, DKIM_FAIL)), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 4)
        self.assertEqual(info.auth_results["spam_reasons"], ["spf_fail", "dkim_fail"])
        self.assertEqual(info.auth_results["score"], 4)
        self.assertEqual((info.auth_results["spf"], info.auth_results["dkim"]), ("fail", "fail"))
        self.assertEqual(
            info.auth_results["mailboxes"][self.bob.id],
            {"junk": False, "junk_threshold": 5.0, "spam_reasons": ["spf_fail", "dkim_fail"]},
        )

    async def test_junk_at_the_threshold_with_other_filters_results(self):
        await self.serve_scored(spec("header_validate"))
        no_id = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
        # spf fail 2 + dkim fail 2 + no Message-ID 1 = 5: Junk.
        self.assertEqual(
            await self.sendmail(message=with_results(SPF_FAIL, DKIM_FAIL, message=no_id)), {}
        )
        self.assertEqual(await self.folder(self.bob), [])
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 5)
        self.assertEqual(
            info.auth_results["spam_reasons"], ["missing_message_id", "spf_fail", "dkim_fail"]
        )
        self.assertTrue(info.auth_results["mailboxes"][self.bob.id]["junk"])
        verdict = {
            "name": "spam_score",
            "stage": "delivery",
            "action": "continue",
            "reason": "spam_score_junk",
        }
        self.assertIn(verdict, info.auth_results["filters"])

    async def test_softfail_and_the_configured_junk_threshold(self):
        await self.serve_scored(spam=SpamConfig(junk_threshold=1))
        self.assertEqual(await self.sendmail(message=with_results(SPF_SOFTFAIL)), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 1)
        self.assertEqual(info.auth_results["mailboxes"][self.bob.id]["junk_threshold"], 1.0)

    async def test_reject_threshold(self):
        await self.serve_scored(spam=SpamConfig(reject_threshold=4))
        self.assertEqual(await self.sendmail(message=with_results(SPF_FAIL, DKIM_FAIL)), REJECTED)
        self.assertEqual(await self.folder(self.bob), [])
        self.assertEqual(await self.folder(self.bob, "Junk"), [])
        self.assertEqual(await self.sendmail(message=with_results(SPF_FAIL)), {})

    async def test_dmarc_policies(self):
        await self.serve_scored()
        # fail 3 + reject 10: refused whatever the thresholds.
        self.assertEqual(await self.sendmail(message=with_results(dmarc_fail("reject"))), REJECTED)
        # fail 3 + quarantine 2: Junk for every mailbox, even one whose threshold is higher.
        await self.store.update_mailbox(self.carol.id, spam_thresholds={"junk_threshold": 50})
        self.assertEqual(
            await self.sendmail(
                ["bob@example.com", "carol@example.com"],
                message=with_results(dmarc_fail("quarantine")),
            ),
            {},
        )
        [bob] = await self.folder(self.bob, "Junk")
        [carol] = await self.folder(self.carol, "Junk")
        self.assertEqual(bob.id, carol.id)
        self.assertEqual(bob.spam_score, 5)
        self.assertEqual(bob.auth_results["spam_reasons"], ["dmarc_fail", "dmarc_quarantine"])
        # p=none: 3 points, INBOX.
        self.assertEqual(await self.sendmail(message=with_results(dmarc_fail("none"))), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 3)

    async def test_a_result_with_its_own_score_is_not_counted_twice(self):
        await self.serve_scored()
        scored = dict(SPF_FAIL, score=2.5, spam_reasons=["spf_fail"])
        self.assertEqual(await self.sendmail(message=with_results(scored, DKIM_FAIL)), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 4.5)  # 2.5 (its own, not 2 more) + dkim 2
        self.assertEqual(info.auth_results["spam_reasons"], ["spf_fail", "dkim_fail"])

    async def test_a_later_delivery_filter_sees_junk_and_may_refile(self):
        """As a user's Sieve script after spam_score: its keep is Junk, its fileinto wins."""
        await self.serve(
            spec("inject"), spec("spam_score"), spec("inject"), plugins=plugin_directory(self)
        )
        # Each inject adds 1; spam_score adds spf 2 + dkim 2 at DATA: 6 by DELIVERY.
        one = {"fields": {}, "score": 1}
        message = b"X-Test-Refile: Archive\r\n" + with_results(SPF_FAIL, DKIM_FAIL, one)
        self.assertEqual(await self.sendmail(message=message), {})
        self.assertEqual(await self.folder(self.bob, "Junk"), [])
        [info] = await self.folder(self.bob, "Archive")
        self.assertEqual(info.spam_score, 6)

    async def test_scores_option(self):
        await self.serve(
            spec("inject"),
            spec("spam_score", scores={"spf_fail": 7}),
            plugins=plugin_directory(self),
        )
        self.assertEqual(await self.sendmail(message=with_results(SPF_FAIL)), {})
        [info] = await self.folder(self.bob, "Junk")
        self.assertEqual(info.spam_score, 7)


class MailboxThresholdTests(SpamScoreMX):
    """API.md 1.2's ``spam_thresholds.junk_threshold``, per recipient mailbox."""

    async def test_each_mailbox_by_its_own_threshold(self):
        await self.serve_scored()
        await self.store.update_mailbox(self.bob.id, spam_thresholds={"junk_threshold": 0})
        rcpts = ["bob+news@example.com", "carol@example.com"]
        self.assertEqual(await self.sendmail(rcpts), {})
        [bob] = await self.folder(self.bob, "Junk")
        [carol] = await self.folder(self.carol)
        self.assertEqual(bob.id, carol.id)  # one stored message
        self.assertEqual(await self.folder(self.bob), [])
        self.assertEqual(
            bob.auth_results["mailboxes"],
            {
                self.bob.id: {"junk": True, "junk_threshold": 0.0, "spam_reasons": []},
                self.carol.id: {"junk": False, "junk_threshold": 5.0, "spam_reasons": []},
            },
        )
        # Clearing the override applies to the next message.
        await self.store.update_mailbox(self.bob.id, spam_thresholds=None)
        self.assertEqual(await self.sendmail(rcpts), {})
        self.assertEqual(len(await self.folder(self.bob)), 1)
        self.assertEqual(len(await self.folder(self.bob, "Junk")), 1)
        self.assertEqual(len(await self.folder(self.carol)), 2)

    async def test_a_higher_mailbox_threshold_keeps_it_in_inbox(self):
        await self.serve_scored()
        await self.store.update_mailbox(self.bob.id, spam_thresholds={"junk_threshold": 8.5})
        message = with_results(SPF_FAIL, DKIM_FAIL, {"fields": {}, "score": 2})
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"], message), {})
        [bob] = await self.folder(self.bob)
        [carol] = await self.folder(self.carol, "Junk")
        self.assertEqual(bob.spam_score, 6)
        self.assertEqual(bob.auth_results["mailboxes"][self.bob.id]["junk_threshold"], 8.5)

    async def test_a_mailbox_threshold_does_not_bypass_rejection(self):
        await self.serve()  # the default chain: sender_rules, spam_score
        await self.store.update_mailbox(self.bob.id, spam_thresholds={"junk_threshold": 100})
        await self.store.create_sender_rule("global", "", "block", "ip", "127.0.0.1")
        # A block scores 10: the server-wide reject threshold.
        self.assertEqual(await self.sendmail(), REJECTED)
        self.assertEqual(await self.folder(self.bob), [])
        self.assertEqual(await self.folder(self.bob, "Junk"), [])

    async def test_mailbox_thresholds_can_be_ignored(self):
        await self.serve(spec("spam_score", mailbox_thresholds=False, junk_threshold=3))
        await self.store.update_mailbox(self.bob.id, spam_thresholds={"junk_threshold": 0})
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.auth_results["mailboxes"][self.bob.id]["junk_threshold"], 3.0)


class DefaultChainTests(LoopbackMX):
    async def test_default_chain_scores(self):
        await self.serve()
        self.assertEqual(self.filtering.current.names, ["sender_rules", "spam_score", "sieve"])
        self.assertEqual(await self.sendmail(), {})
        [info] = await self.folder(self.bob)
        self.assertEqual(info.spam_score, 0)
        self.assertEqual(info.auth_results["mailboxes"][self.bob.id]["junk_threshold"], 5.0)


class AuthPointsTests(unittest.SynchronousTestCase):
    """The table on results alone (HELO cannot be missing on our MX: it answers 503)."""

    def test_points(self):
        def found(**fields):
            return [FilterResult(fields=fields, filter="x", stage="data")]

        self.assertEqual(auth_points(found(spf="fail"), "h", False), [("spf_fail", 2.0)])
        self.assertEqual(auth_points(found(spf="SoftFail"), "h", False), [("spf_softfail", 1.0)])
        self.assertEqual(auth_points(found(spf="pass", dkim="pass"), "h", False), [])
        self.assertEqual(
            auth_points(found(dmarc="fail", dmarc_policy="reject"), "h", False),
            [("dmarc_fail", 3.0), ("dmarc_reject", 10.0)],
        )
        self.assertEqual(auth_points(found(), "", True), [("missing_helo", 1.0)])
        self.assertEqual(auth_points(found(), "", False), [])
        # A later result overrides an earlier one's key, as in the stored auth_results.
        later = found(spf="fail") + found(spf="pass")
        self.assertEqual(auth_points(later, "h", False), [])

    def test_mailbox_threshold_values(self):
        self.assertEqual(mailbox_junk_threshold(None, 5.0), 5.0)
        self.assertEqual(mailbox_junk_threshold({"spam_threshold": 0.5}, 5.0), 5.0)
        self.assertEqual(mailbox_junk_threshold({"junk_threshold": 0}, 5.0), 0.0)
        self.assertEqual(mailbox_junk_threshold({"junk_threshold": -1}, 5.0), 5.0)
        self.assertEqual(mailbox_junk_threshold({"junk_threshold": True}, 5.0), 5.0)
