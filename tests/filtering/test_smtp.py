"""The chain in the MX session (StringTransport, real store): what each stage's verdicts do to
the replies, what is stored where, the headers prepended and the auth_results kept."""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.trial import unittest

from haitatsu.filtering import (
    FilterResult,
    Stage,
    continue_,
    discard,
    quarantine,
    reject,
    tempfail,
)
from haitatsu.filtering.chain import EMPTY_CHAIN
from haitatsu.filtering.null import NULL_FILTERS
from haitatsu.smtp.spool import SpoolFile
from tests.filtering.helpers import Scripted, make_chain
from tests.smtp.helpers import HOST, Session, make_config, temp_dir
from tests.smtp.test_delivery import MESSAGE, dot_stuff
from tests.support import make_store

_OK = re.compile(rb"250 2\.0\.0 OK ([0-9A-HJKMNP-TV-Z]{26})\Z")


class FilteredSession(unittest.TestCase):
    async def setUp(self):
        self.root = temp_dir(self)
        self.store = await make_store(self, self.root)
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("carol@example.com")

    def connect(self, *filters, chain=None, config=None):
        chain = chain if chain is not None else make_chain(*filters)
        config = config if config is not None else make_config()
        self.session = Session(self, store=self.store, config=config, chain=chain)
        return self.session.lines()

    async def messages(self, mailbox, folder="INBOX"):
        """``[(MailboxMessage, MessageInfo, raw)]`` in one folder."""
        f = await self.store.get_folder(mailbox.id, folder)
        rows = await self.store.list_folder_messages(f.id)
        if not rows:
            return []
        views = await self.store.get_messages(f.id, [m.uid for m in rows])
        return [(mm, info, await self.store.read_message(info)) for mm, info in views]

    async def everything(self):
        out = []
        for mailbox in (self.bob, self.carol):
            for folder in await self.store.list_folders(mailbox.id):
                out += await self.messages(mailbox, folder.name)
        return out

    async def send(self, rcpts=(b"bob@example.com",), message=MESSAGE, ehlo=True):
        if ehlo:
            self.session.command(b"EHLO client.example\r\n")
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\n"
            + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts)
            + b"DATA\r\n",
            replies=len(rcpts) + 2,
        )
        if not lines[-1].startswith(b"354"):
            return lines
        return lines + await self.session.converse(dot_stuff(message) + b".\r\n")


class NoChainTests(FilteredSession):
    async def test_empty_chain_leaves_the_session_alone(self):
        self.assertEqual(self.connect(chain=EMPTY_CHAIN), [b"220 mx.example.test ESMTP Haitatsu"])
        self.assertIs(self.session.protocol.filters, NULL_FILTERS)
        lines = await self.send()
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, info, raw)] = await self.messages(self.bob)
        self.assertTrue(raw.startswith(b"Received: from client.example"), raw)
        self.assertNotIn(b"Authentication-Results", raw)
        self.assertEqual(
            info.auth_results, {"remote_ip": "192.0.2.7", "helo": "client.example", "tls": False}
        )

    async def test_stages_nobody_declared_cost_nothing(self):
        """With only a DATA filter, the CONNECT/HELO/MAIL/RCPT hooks answer None at once (no
        Deferred, no waiting): the replies come synchronously."""
        self.connect(Scripted("data_only", {Stage.DATA: None}))
        filters = self.session.protocol.filters
        self.assertTrue(filters.active)
        self.assertIsNone(filters.helo("client.example"))
        self.assertIsNone(filters.mail("alice@example.org", {}))
        self.assertEqual(
            self.session.command(b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n")[-1],
            b"250 2.1.0 sender OK",
        )


class CommandStageTests(FilteredSession):
    async def test_connect_reject_answers_554_then_only_quit(self):
        lines = self.connect(
            Scripted("gate", {Stage.CONNECT: reject("go away", code=550, reason="blocked")})
        )
        self.assertEqual(lines, [b"554 5.7.1 go away"])
        self.assertEqual(
            self.session.command(b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"),
            [b"503 5.5.1 no service here; QUIT"] * 2,
        )
        self.assertEqual(self.session.command(b"QUIT\r\n")[0][:3], b"221")
        self.assertTrue(self.session.transport.disconnecting)

    async def test_connect_tempfail_answers_421_and_closes(self):
        lines = self.connect(Scripted("gate", {Stage.CONNECT: tempfail("busy", enhanced="4.7.0")}))
        self.assertEqual(lines, [b"421 4.7.0 busy"])
        self.assertTrue(self.session.transport.disconnecting)

    async def test_connect_waits_for_an_asynchronous_filter(self):
        answer = defer.Deferred()
        self.connect(Scripted("slow", {Stage.CONNECT: lambda c: answer}))
        self.assertEqual(self.session.lines(), [])
        self.session.send(b"EHLO early.example\r\n")  # an early talker waits in the buffer
        self.assertEqual(self.session.lines(), [])
        answer.callback(None)
        lines = self.session.lines()
        self.assertEqual(lines[0], b"220 mx.example.test ESMTP Haitatsu")
        self.assertTrue(lines[1].startswith(b"250-mx.example.test Hello early.example"))

    async def test_helo_reject(self):
        seen = []

        def check(context):
            seen.append((context.session.helo, context.session.remote_ip))
            return reject("bad HELO", reason="helo") if context.session.helo == "bad" else None

        self.connect(Scripted("helo", {Stage.HELO: check}))
        self.assertEqual(self.session.command(b"HELO bad\r\n"), [b"550 5.7.1 bad HELO"])
        self.assertEqual(
            self.session.command(b"MAIL FROM:<a@b.example>\r\n"),
            [b"503 5.5.1 send HELO/EHLO first"],
        )
        self.assertTrue(self.session.command(b"EHLO good\r\n")[0].startswith(b"250-"))
        self.assertEqual(seen, [("bad", "192.0.2.7"), ("good", "192.0.2.7")])

    async def test_mail_tempfail_and_an_asynchronous_mail_filter(self):
        answers = [tempfail(reason="later"), defer.Deferred()]

        def check(context):
            self.assertEqual(context.envelope.mail_params, {"SIZE": "100"})
            return answers.pop(0)

        self.connect(Scripted("mail", {Stage.MAIL: check}))
        self.session.command(b"EHLO client.example\r\n")
        self.assertEqual(
            self.session.command(b"MAIL FROM:<alice@example.org> SIZE=100\r\n"),
            [b"451 4.7.1 temporary policy failure, try again later"],
        )
        pending = answers[0]
        self.assertEqual(self.session.command(b"MAIL FROM:<alice@example.org> SIZE=100\r\n"), [])
        pending.callback(continue_())
        self.assertEqual(self.session.lines(), [b"250 2.1.0 sender OK"])

    async def test_rcpt_sees_the_resolved_recipient(self):
        seen = []

        def check(context):
            r = context.recipient
            seen.append(
                (r.address, r.mailbox_ids, [x.address for x in context.envelope.recipients])
            )
            if r.address.startswith("carol"):
                return reject("not for carol", code=550, enhanced="5.7.1")
            return None

        self.connect(Scripted("rcpt", {Stage.RCPT: check}))
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[1:3], [b"250 2.1.5 recipient OK", b"550 5.7.1 not for carol"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(
            seen,
            [
                ("bob@example.com", (self.bob.id,), []),
                ("carol@example.com", (self.carol.id,), ["bob@example.com"]),
            ],
        )
        self.assertEqual(len(await self.messages(self.bob)), 1)
        self.assertEqual(await self.messages(self.carol), [])

    async def test_rcpt_discard(self):
        self.connect(
            Scripted(
                "rcpt",
                {
                    Stage.RCPT: lambda c: (
                        discard() if c.recipient.address.startswith("carol") else None
                    )
                },
            )
        )
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[2], b"250 2.1.5 recipient OK")
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.messages(self.bob)), 1)
        self.assertEqual(await self.messages(self.carol), [])
        lines = await self.send([b"carol@example.com"], ehlo=False)
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.everything()), 1)
        self.assertEqual(self.session.spool_files(), [])

    async def test_connect_discard_drops_every_message_of_the_session(self):
        self.connect(Scripted("gate", {Stage.CONNECT: discard(reason="tarpit")}))
        self.assertTrue(_OK.match((await self.send())[-1]))
        self.assertEqual(await self.everything(), [])


class DataStageTests(FilteredSession):
    async def test_reject_and_tempfail_store_nothing(self):
        answers = [reject(reason="spam"), tempfail(reason="later")]
        self.connect(Scripted("content", {Stage.DATA: lambda c: answers.pop(0)}))
        self.assertEqual((await self.send())[-1], b"550 5.7.1 message rejected by policy")
        lines = await self.send(ehlo=False)
        self.assertEqual(lines[-1], b"451 4.7.1 temporary policy failure, try again later")
        self.assertEqual(await self.everything(), [])
        self.assertEqual(self.session.spool_files(), [])

    async def test_discard_answers_250_and_stores_nothing(self):
        self.connect(Scripted("content", {Stage.DATA: discard(reason="dup")}))
        self.assertTrue(_OK.match((await self.send())[-1]))
        self.assertEqual(await self.everything(), [])
        self.assertEqual(self.session.spool_files(), [])

    async def test_a_failing_filter_is_a_tempfail(self):
        def broken(context):
            raise RuntimeError("bug in a plugin")

        self.connect(Scripted("broken", {Stage.DATA: broken}))
        self.assertEqual((await self.send())[-1], b"451 4.3.0 temporary local problem")
        self.assertEqual(await self.everything(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_quarantine_headers_results_and_what_filters_see(self):
        seen = {}

        def look(context):
            message = context.message
            seen["subject"] = message.header("subject")
            seen["from"] = message.addresses("From")
            seen["size"] = message.size
            seen["whole"] = message.read(10_000)
            seen["trace_id"] = context.trace_id
            return quarantine(
                reason="looks_odd",
                headers=[("X-Spam-Flag", "YES")],
                results=[
                    FilterResult(
                        method="spf",
                        result="pass",
                        properties={"smtp.mailfrom": "alice@example.org"},
                        fields={"spf": "pass", "spf_domain": "example.org"},
                        score=1.5,
                    ),
                    FilterResult(spam_reasons=("odd",), score=2),
                ],
            )

        self.connect(Scripted("content", {Stage.DATA: look}))
        lines = await self.send()
        trace_id = _OK.match(lines[-1]).group(1).decode()
        self.assertEqual(await self.messages(self.bob), [])
        [(mm, info, raw)] = await self.messages(self.bob, "Junk")
        self.assertEqual(seen["subject"], ["=?utf-8?q?gr=C3=BC=C3=9Fe?="])
        self.assertEqual(seen["from"], ["alice@example.org"])
        self.assertEqual((seen["whole"], seen["size"]), (MESSAGE, len(MESSAGE)))
        self.assertEqual(seen["trace_id"], trace_id)
        header, _, _ = raw.partition(b"From: Alice")
        fields = [line.split(b":")[0] for line in header.split(b"\r\n") if line[:1].isalpha()]
        self.assertEqual(
            fields,
            [
                b"Received",
                b"Authentication-Results",
                b"X-Spam-Flag",
                b"X-Haitatsu-Trace-ID",
                b"X-Haitatsu-Node",
            ],
        )
        self.assertIn(
            b"Authentication-Results: mx.example.test;\r\n"
            b"\tspf=pass smtp.mailfrom=alice@example.org\r\n",
            raw,
        )
        self.assertTrue(raw.endswith(MESSAGE))
        self.assertEqual(info.size_bytes, len(raw))
        self.assertEqual(info.spam_score, 3.5)
        results = info.auth_results
        self.assertEqual((results["spf"], results["spf_domain"]), ("pass", "example.org"))
        self.assertEqual(
            (results["remote_ip"], results["helo"], results["tls"]),
            ("192.0.2.7", "client.example", False),
        )
        self.assertEqual(results["spam_reasons"], ["odd"])
        self.assertEqual(results["dkim"], "")
        self.assertEqual(
            results["filters"],
            [{"name": "content", "stage": "data", "action": "quarantine", "reason": "looks_odd"}],
        )
        self.assertEqual(
            results["mailboxes"],
            {self.bob.id: {"junk": True, "junk_threshold": 5.0, "spam_reasons": ["odd"]}},
        )

    async def test_nothing_found_is_authentication_results_none(self):
        self.connect(Scripted("quiet", {Stage.DATA: None}))
        lines = await self.send()
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, info, raw)] = await self.messages(self.bob)
        self.assertIn(
            b"\r\nAuthentication-Results: mx.example.test; none\r\nX-Haitatsu-Trace-ID", raw
        )
        self.assertEqual(info.spam_score, 0)
        self.assertEqual(info.auth_results["filters"], [])

    async def test_forged_authentication_results_are_removed(self):
        """RFC 8601 5: fields claiming our authserv-id go; other hosts' fields stay."""
        forged = (
            b"Authentication-Results: " + HOST.upper().encode() + b"; spf=pass\r\n"
            b"Authentication-Results: (comment) " + HOST.encode() + b";\r\n\tdkim=pass\r\n"
            b"Authentication-Results: other.example; dkim=fail\r\n"
        )
        self.connect(Scripted("quiet", {Stage.DATA: None}))
        lines = await self.send(message=forged + MESSAGE)
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.messages(self.bob)
        self.assertEqual(raw.count(b"Authentication-Results:"), 2)
        self.assertIn(b"Authentication-Results: other.example; dkim=fail\r\nFrom: Alice", raw)
        self.assertTrue(raw.endswith(MESSAGE))

    async def test_forged_authentication_results_are_removed_from_a_large_message(self):
        """Past the spool's buffer the message is copied into a new file, not rewritten in
        memory: the same fields go."""
        forged = b"Authentication-Results: " + HOST.encode() + b"; spf=pass\r\n"
        body = (b"y" * 98 + b"\r\n") * (SpoolFile.BUFFER // 100 + 10)
        config = make_config(max_message_size=4 * SpoolFile.BUFFER)
        self.connect(Scripted("quiet", {Stage.DATA: None}), config=config)
        lines = await self.send(message=forged + MESSAGE + body)
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.messages(self.bob)
        self.assertEqual(raw.count(b"Authentication-Results:"), 1)
        self.assertIn(b"; none\r\nX-Haitatsu-Trace-ID", raw)
        self.assertTrue(raw.endswith(MESSAGE + body))

    async def test_filters_reading_the_file_of_a_small_message(self):
        """A small message stays in the spool's buffer; a filter that asks for its path (at
        DATA, and at DELIVERY for the stored form) gets a file holding all of it."""
        seen = {}

        def read(context):
            with open(context.message.path, "rb") as f:
                seen[context.stage] = f.read()
            return None

        self.connect(Scripted("reader", {Stage.DATA: read, Stage.DELIVERY: read}))
        lines = await self.send()
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.messages(self.bob)
        self.assertEqual(seen[Stage.DATA], MESSAGE)
        self.assertEqual(seen[Stage.DELIVERY], raw)
        self.assertTrue(raw.endswith(MESSAGE))


class DeliveryStageTests(FilteredSession):
    async def test_per_recipient_folders_flags_and_refusals(self):
        def place(context):
            target = context.target
            if target.mailbox_id == self.carol.id:
                return reject("carol refuses", reason="sieve_reject")
            target.folder = "Archive"
            target.flags.add("\\Flagged")
            target.extra_folders.append("INBOX")
            return None

        self.connect(Scripted("sieve", {Stage.DELIVERY: place}))
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(mm, info, _)] = await self.messages(self.bob, "Archive")
        self.assertTrue(mm.flagged)
        self.assertEqual(len(await self.messages(self.bob)), 1)
        self.assertEqual(await self.messages(self.carol), [])
        self.assertEqual(list(info.auth_results["mailboxes"]), [self.bob.id])
        self.assertEqual(
            info.auth_results["filters"],
            [{"name": "sieve", "stage": "delivery", "action": "reject", "reason": "sieve_reject"}],
        )

    async def test_every_recipient_refused_is_the_first_refusal(self):
        self.connect(Scripted("sieve", {Stage.DELIVERY: reject("nobody wants it")}))
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[-1], b"550 5.7.1 nobody wants it")
        self.assertEqual(await self.everything(), [])

    async def test_one_tempfail_defers_the_whole_message(self):
        def place(context):
            return tempfail() if context.target.mailbox_id == self.carol.id else None

        self.connect(Scripted("sieve", {Stage.DELIVERY: place}))
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[-1][:9], b"451 4.7.1")
        self.assertEqual(await self.everything(), [])
        self.assertEqual(self.session.spool_files(), [])

    async def test_quarantine_one_recipient(self):
        def place(context):
            return quarantine() if context.target.mailbox_id == self.carol.id else None

        self.connect(Scripted("sieve", {Stage.DELIVERY: place}))
        lines = await self.send([b"bob@example.com", b"carol@example.com"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.messages(self.bob)), 1)
        self.assertEqual(len(await self.messages(self.carol, "Junk")), 1)


class HeaderFromEveryStageTests(FilteredSession):
    async def test_fields_asked_for_at_any_stage_are_added(self):
        self.connect(
            Scripted(
                "everywhere",
                {
                    Stage.CONNECT: continue_(headers=[("X-Connect", "1")]),
                    Stage.MAIL: continue_(headers=[("X-Mail", "2")]),
                    Stage.RCPT: continue_(headers=[("X-Rcpt", "3")]),
                    Stage.DATA: continue_(headers=[("X-Data", "4\r\n folded")]),
                },
            )
        )
        self.session.command(b"EHLO client.example\r\n")
        for _ in range(2):
            lines = await self.send(ehlo=False)
            self.assertTrue(_OK.match(lines[-1]), lines)
        for _, _, raw in await self.messages(self.bob):
            head = raw.split(b"X-Haitatsu-Trace-ID")[0]
            self.assertTrue(
                head.endswith(b"X-Connect: 1\r\nX-Mail: 2\r\nX-Rcpt: 3\r\nX-Data: 4 folded\r\n"),
                head,
            )
