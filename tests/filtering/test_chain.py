"""The chain's rules: order, the first decisive verdict, sticky quarantine, errors and timeouts,
what is recorded."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from haitatsu.filtering import (
    CONTINUE,
    Action,
    FilterResult,
    IFilter,
    Stage,
    Verdict,
    accept,
    continue_,
    discard,
    quarantine,
    reject,
    tempfail,
)
from haitatsu.metrics import METRICS
from tests.filtering.helpers import Scripted, make_chain, make_context


def run(testcase, chain, stage, context):
    return testcase.successResultOf(defer.Deferred.fromCoroutine(chain.run(stage, context)))


class VerdictTests(unittest.SynchronousTestCase):
    def test_defaults(self):
        self.assertEqual((reject().code, reject().enhanced), (550, "5.7.1"))
        self.assertEqual((tempfail().code, tempfail().enhanced), (451, "4.7.1"))
        self.assertIs(CONTINUE.action, Action.CONTINUE)
        self.assertTrue(reject().decisive and accept().decisive and discard().decisive)
        self.assertFalse(quarantine().decisive or CONTINUE.decisive)

    def test_codes_must_match_the_action(self):
        with self.assertRaises(ValueError):
            reject(code=451)
        with self.assertRaises(ValueError):
            tempfail(enhanced="5.7.1")
        with self.assertRaises(ValueError):
            reject(enhanced="5.7")
        with self.assertRaises(ValueError):
            reject("two\r\nlines")

    def test_reason_is_a_token_and_headers_are_checked(self):
        with self.assertRaises(ValueError):
            reject(reason="has space")
        with self.assertRaises(ValueError):
            continue_(headers=[("Bad Name", "x")])
        self.assertEqual(continue_(headers={"X-Spam": "yes"}).headers, (("X-Spam", "yes"),))
        with self.assertRaises(ValueError):
            continue_(results=["not a result"])


class ChainTests(unittest.SynchronousTestCase):
    def test_order_and_first_decisive_verdict(self):
        first = Scripted("first", {Stage.MAIL: None})
        second = Scripted("second", {Stage.MAIL: reject("no", reason="nope")})
        third = Scripted("third", {Stage.MAIL: None})
        chain = make_chain(first, second, third)
        verifyObject(IFilter, first)
        result = run(self, chain, Stage.MAIL, make_context())
        self.assertIs(result.action, Action.REJECT)
        self.assertEqual((result.filter, result.verdict.text), ("second", "no"))
        self.assertEqual((first.calls, second.calls, third.calls), ([Stage.MAIL], [Stage.MAIL], []))

    def test_accept_ends_the_stage_only(self):
        a = Scripted("a", {Stage.HELO: accept(), Stage.MAIL: None})
        b = Scripted("b", {Stage.HELO: reject(), Stage.MAIL: None})
        chain = make_chain(a, b)
        context = make_context()
        self.assertIs(run(self, chain, Stage.HELO, context).action, Action.ACCEPT)
        self.assertIs(run(self, chain, Stage.MAIL, context).action, Action.CONTINUE)
        self.assertEqual(b.calls, [Stage.MAIL])

    def test_quarantine_is_sticky_but_a_later_reject_wins(self):
        q = Scripted("q", {Stage.RCPT: quarantine(reason="suspicious")})
        later = Scripted("later", {Stage.RCPT: None})
        chain = make_chain(q, later)
        context = make_context()
        result = run(self, chain, Stage.RCPT, context)
        self.assertIs(result.action, Action.CONTINUE)
        self.assertEqual(result.quarantine, "suspicious")
        self.assertEqual(later.calls, [Stage.RCPT])
        self.assertEqual(context.quarantined, "suspicious")
        # Later in the transaction: still quarantined, and a reject still wins.
        r = Scripted("r", {Stage.DATA: tempfail()})
        result = run(self, make_chain(r), Stage.DATA, context)
        self.assertIs(result.action, Action.TEMPFAIL)
        self.assertEqual(context.quarantined, "suspicious")
        # A new transaction forgets it; a CONNECT quarantine lasts the session.
        context.new_transaction()
        self.assertEqual(context.quarantined, "")
        run(self, make_chain(Scripted("c", {Stage.CONNECT: quarantine()})), Stage.CONNECT, context)
        context.new_transaction()
        self.assertEqual(context.quarantined, "quarantine")

    def test_results_and_headers_are_kept(self):
        spf = FilterResult(method="spf", result="pass", fields={"spf": "pass"}, score=-1)
        a = Scripted("a", {Stage.DATA: continue_(results=spf, headers=[("X-A", "1")])})
        b = Scripted("b", {Stage.DATA: continue_(results=[FilterResult(score=3)])})
        context = make_context()
        result = run(self, make_chain(a, b), Stage.DATA, context)
        self.assertEqual(result.headers, (("X-A", "1"),))
        self.assertEqual(
            [(r.filter, r.stage) for r in context.results], [("a", "data"), ("b", "data")]
        )
        self.assertEqual(context.score, 2)
        self.assertEqual(context.results_of("a")[0].method, "spf")

    def test_async_filters(self):
        async def later(context):
            await defer.succeed(None)
            return reject(reason="async")

        chain = make_chain(Scripted("a", {Stage.MAIL: later}))
        self.assertEqual(run(self, chain, Stage.MAIL, make_context()).verdict.reason, "async")
        chain = make_chain(Scripted("d", {Stage.MAIL: lambda c: defer.succeed(discard())}))
        self.assertIs(run(self, chain, Stage.MAIL, make_context()).action, Action.DISCARD)

    def test_stage_without_filters(self):
        chain = make_chain(Scripted("a", {Stage.DATA: None}))
        self.assertTrue(chain.runs_at(Stage.DATA))
        self.assertFalse(chain.runs_at(Stage.CONNECT))
        self.assertTrue(chain.active)
        self.assertFalse(make_chain().active)


class Broken(Exception):
    pass


def explode(context):
    raise Broken("boom")


class ErrorPolicyTests(unittest.SynchronousTestCase):
    def test_an_exception_is_a_tempfail_by_default(self):
        before = METRICS.value(
            "filter_errors_total", {"filter": "bad", "stage": "data", "kind": "error"}
        )
        after = Scripted("after", {Stage.DATA: None})
        context = make_context()
        result = run(
            self, make_chain(Scripted("bad", {Stage.DATA: explode}), after), Stage.DATA, context
        )
        self.assertIs(result.action, Action.TEMPFAIL)
        self.assertEqual(
            (result.verdict.code, result.verdict.enhanced, result.verdict.reason),
            (451, "4.3.0", "filter_error:bad"),
        )
        self.assertEqual(after.calls, [])
        self.assertEqual(len(self.flushLoggedErrors(Broken)), 1)
        self.assertEqual(
            METRICS.value(
                "filter_errors_total", {"filter": "bad", "stage": "data", "kind": "error"}
            ),
            before + 1,
        )
        self.assertEqual(context.results[0].result, "temperror")

    def test_other_policies(self):
        for policy, action in (
            ("continue", Action.CONTINUE),
            ("reject", Action.REJECT),
            ("quarantine", Action.CONTINUE),
        ):
            after = Scripted("after", {Stage.DATA: None})
            context = make_context()
            chain = make_chain(Scripted("bad", {Stage.DATA: explode}), after, on_error=policy)
            result = run(self, chain, Stage.DATA, context)
            self.assertIs(result.action, action, policy)
            if policy != "reject":
                self.assertEqual(after.calls, [Stage.DATA], policy)
            self.assertEqual(
                context.quarantined, "filter_error:bad" if policy == "quarantine" else ""
            )
            self.assertEqual([v.reason for v in context.verdicts], ["filter_error:bad"], policy)
        self.flushLoggedErrors(Broken)

    def test_wrong_answer_type_is_an_error(self):
        chain = make_chain(Scripted("odd", {Stage.MAIL: lambda c: "yes"}))
        self.assertIs(run(self, chain, Stage.MAIL, make_context()).action, Action.TEMPFAIL)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_timeout(self):
        clock = task.Clock()
        cancelled = []
        never = defer.Deferred(canceller=cancelled.append)
        chain = make_chain(Scripted("slow", {Stage.RCPT: lambda c: never}), clock=clock, timeout=5)
        d = defer.Deferred.fromCoroutine(chain.run(Stage.RCPT, make_context()))
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        result = self.successResultOf(d)
        self.assertIs(result.action, Action.TEMPFAIL)
        self.assertEqual(result.verdict.reason, "filter_timeout:slow")
        self.assertEqual(cancelled, [never])

    def test_timeout_with_continue_policy_goes_on(self):
        clock = task.Clock()
        after = Scripted("after", {Stage.RCPT: reject()})
        chain = make_chain(
            Scripted("slow", {Stage.RCPT: lambda c: defer.Deferred()}),
            after,
            clock=clock,
            timeout=1,
            on_error="continue",
        )
        d = defer.Deferred.fromCoroutine(chain.run(Stage.RCPT, make_context()))
        clock.advance(1.5)
        self.assertIs(self.successResultOf(d).action, Action.REJECT)

    def test_close(self):
        closed = []
        f = Scripted("a", {Stage.DATA: None})
        f.close = lambda: closed.append("a")
        chain = make_chain(f, Scripted("b", {Stage.DATA: None}))
        self.successResultOf(chain.close())
        self.assertEqual(closed, ["a"])

    def test_retired_chain_closes_when_its_last_session_ends(self):
        closed = []
        f = Scripted("a", {Stage.DATA: None})
        f.close = lambda: closed.append("a")
        chain = make_chain(f)
        session = chain.session(None, None)
        chain.retire()
        self.assertEqual(closed, [])
        session.release()
        session.release()
        self.assertEqual(closed, ["a"])


class VerdictValueTests(unittest.SynchronousTestCase):
    def test_verdict_is_a_value(self):
        self.assertEqual(reject("x", reason="r"), reject("x", reason="r"))
        self.assertIsInstance(reject(), Verdict)
