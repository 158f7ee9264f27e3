"""The ``sieve`` filter through the chain: smtplib against the MX on loopback, the real store,
each recipient's active script deciding where its copy goes and what is sent."""

from __future__ import annotations

from tests.filtering.test_builtins import MESSAGE, LoopbackMX, spec


class SieveFilterTests(LoopbackMX):
    async def script(self, mailbox, text):
        await self.store.put_sieve_script(mailbox.id, "main", text, activate=True)

    async def folder_messages(self, mailbox, name):
        folder = await self.store.get_folder(mailbox.id, name)
        if folder is None:
            return None
        return await self.store.list_folder_messages(folder.id)

    async def jobs(self, mailbox):
        return await self.store.list_outbound_jobs(mailbox.id)

    async def test_no_script_keeps(self):
        await self.serve(spec("sieve"))
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 1)

    async def test_fileinto_with_flags_and_copies(self):
        await self.serve(spec("sieve"))
        await self.store.create_folder(self.bob.id, "Lists/acme")
        await self.script(
            self.bob,
            'require ["fileinto", "imap4flags", "copy"];\n'
            'if header :contains "subject" "hi" {\n'
            '  fileinto :flags ["\\\\Seen", "$acme"] "Lists/acme";\n'
            '  addflag "\\\\Flagged"; fileinto :copy "Archive";\n'
            "}\n",
        )
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])
        (filed,) = await self.folder_messages(self.bob, "Lists/acme")
        self.assertEqual(set(filed.flags), {"\\Seen", "$acme"})
        (archived,) = await self.folder_messages(self.bob, "Archive")
        self.assertEqual(set(archived.flags), {"\\Flagged"})
        # One stored message, two placements.
        self.assertEqual(filed.message_id, archived.message_id)

    async def test_scripts_are_per_recipient(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, "discard;")
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])
        self.assertEqual(len(await self.folder_messages(self.carol, "INBOX")), 1)

    async def test_discard_for_the_only_recipient_answers_250(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, "discard;")
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])

    async def test_runtime_error_keeps(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require "fileinto"; fileinto "No/Such/Folder";')
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 1)
        self.assertIsNone(await self.folder_messages(self.bob, "No/Such/Folder"))

    async def test_a_stored_script_that_does_not_compile_keeps(self):
        await self.serve(spec("sieve"))
        # Written around the API's check (an older version, a database edit).
        await self.script(self.bob, "if true {")
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 1)

    async def test_fileinto_create(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require ["fileinto", "mailbox"]; fileinto :create "New";')
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "New")), 1)

    async def test_reject_single_recipient_in_session(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require "reject";\nreject text:\nI do not want\nthis\n.\n;\n')
        self.assertEqual(await self.sendmail(), (550, b"5.7.1 I do not want this"))
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])
        self.assertEqual(await self.jobs(self.bob), [])

    async def test_reject_with_other_recipients_sends_a_notice(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require "ereject"; ereject "not for me";')
        self.assertEqual(await self.sendmail(["bob@example.com", "carol@example.com"]), {})
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])
        self.assertEqual(len(await self.folder_messages(self.carol, "INBOX")), 1)
        (job,) = await self.jobs(self.bob)
        self.assertEqual(job.mail_from, "")
        self.assertEqual([r.rcpt for r in job.recipients], ["alice@example.org"])
        full = await self.store.get_outbound_job(job.id)
        data = await self.store.read_message(await self._job_message(full))
        self.assertIn(b"disposition-notification", data)
        self.assertIn(b"not for me", data)
        self.assertIn(b"Disposition: automatic-action/MDN-sent-automatically; deleted", data)

    async def _job_message(self, job):
        claimed = await self.store.claim_outbound("test", 10**12)
        return next(j.message for j in claimed if j.id == job.id)

    async def test_redirect(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'redirect "dave@example.net";')
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.folder_messages(self.bob, "INBOX"), [])
        (job,) = await self.jobs(self.bob)
        self.assertEqual([r.rcpt for r in job.recipients], ["dave@example.net"])
        self.assertTrue(job.mail_from.startswith("bounces+"))
        data = await self.store.read_message(await self._job_message(job))
        self.assertTrue(data.startswith(b"Delivered-To: bob@example.com\r\nReceived: "))
        self.assertIn(MESSAGE, data)

    async def test_redirect_copy_and_loop(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require "copy"; redirect :copy "dave@example.net";')
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 1)
        self.assertEqual(len(await self.jobs(self.bob)), 1)
        # A message that came back through the redirect is kept, not sent round again.
        await self.script(self.bob, 'redirect "dave@example.net";')
        looped = b"Delivered-To: bob@example.com\r\n" + MESSAGE
        self.assertEqual(await self.sendmail(message=looped), {})
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 2)
        self.assertEqual(len(await self.jobs(self.bob)), 1)

    async def test_quarantined_mail_is_not_redirected(self):
        await self.serve(spec("sender_rules"), spec("sieve"))
        await self.store.create_sender_rule("global", "", "block", "email", "alice@example.org")
        await self.script(self.bob, 'redirect "dave@example.net";')
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.jobs(self.bob), [])
        self.assertEqual(len(await self.folder_messages(self.bob, "Junk")), 1)

    async def test_redirects_count_against_outbound_limits(self):
        await self.serve(spec("sieve"))
        dave = await self.store.create_mailbox("dave@example.com", outbound_limits={"per_hour": 1})
        await self.script(dave, 'redirect "x@example.net";')
        self.assertEqual(await self.sendmail(["dave@example.com"]), {})
        self.assertEqual(await self.sendmail(["dave@example.com"]), {})
        # The first went out; the second would pass the limit and is kept instead.
        self.assertEqual(len(await self.jobs(dave)), 1)
        self.assertEqual(len(await self.folder_messages(dave, "INBOX")), 1)

    async def test_vacation_from_only_an_address_the_mailbox_may_send_as(self):
        await self.serve(spec("sieve"))
        await self.script(
            self.bob, 'require "vacation";\nvacation :from "ceo@bank.example" "Away.";'
        )
        self.assertEqual(await self.sendmail(), {})
        (job,) = await self.jobs(self.bob)
        data = await self.store.read_message(await self._job_message(job))
        self.assertIn(b"From: bob@example.com\r\n", data)
        self.assertNotIn(b"bank.example", data)

    async def test_vacation_once_per_sender(self):
        await self.serve(spec("sieve"))
        await self.script(
            self.bob, 'require "vacation"; vacation :subject "Away" "Back on Monday.";'
        )
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(), {})
        # Kept both times (vacation does not cancel the implicit keep); answered once.
        self.assertEqual(len(await self.folder_messages(self.bob, "INBOX")), 2)
        (job,) = await self.jobs(self.bob)
        self.assertEqual(
            (job.mail_from, [r.rcpt for r in job.recipients]), ("", ["alice@example.org"])
        )
        data = await self.store.read_message(await self._job_message(job))
        self.assertIn(b"Subject: Away\r\n", data)
        self.assertIn(b"Auto-Submitted: auto-replied", data)
        self.assertIn(b"In-Reply-To: <m1@example.org>\r\n", data)
        self.assertIn(b"Back on Monday.", data)
        # A list message gets no answer (RFC 5230 section 4.5).
        listed = b"List-Id: <l.example.org>\r\n" + MESSAGE
        self.assertEqual(await self.sendmail(message=listed, sender="carol@example.org"), {})
        self.assertEqual(len(await self.jobs(self.bob)), 1)

    async def test_auth_results_record_the_actions(self):
        await self.serve(spec("sieve"))
        await self.script(self.bob, 'require "fileinto"; fileinto "Archive";')
        self.assertEqual(await self.sendmail(), {})
        (placed,) = await self.folder_messages(self.bob, "Archive")
        view = await self.store.get_message_view(placed.id)
        self.assertEqual(view[1].auth_results["sieve"], {self.bob.id: ["fileinto:Archive"]})


class VacationFilterTests(LoopbackMX):
    async def test_setting_answers_once_and_files_nothing_else(self):
        from haitatsu.storage.store.sieve import VacationSetting

        await self.serve(spec("vacation"))
        await self.store.put_vacation_setting(
            VacationSetting(self.bob.id, True, "Out of office", "Back soon.", 2)
        )
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.sendmail(), {})
        folder = await self.store.get_folder(self.bob.id, "INBOX")
        self.assertEqual(len(await self.store.list_folder_messages(folder.id)), 2)
        (job,) = await self.store.list_outbound_jobs(self.bob.id)
        self.assertEqual(
            (job.mail_from, [r.rcpt for r in job.recipients]), ("", ["alice@example.org"])
        )
        claimed = await self.store.claim_outbound("test", 10**12)
        data = await self.store.read_message(claimed[0].message)
        self.assertIn(b"Subject: Out of office\r\n", data)
        self.assertIn(b"From: bob@example.com\r\n", data)
        self.assertIn(b"Back soon.", data)

    async def test_off_outside_its_window(self):
        from haitatsu.storage.store.sieve import VacationSetting

        await self.serve(spec("vacation"))
        future = int((reactor_seconds() + 86400) * 1e9)
        await self.store.put_vacation_setting(
            VacationSetting(self.bob.id, True, "", "Back soon.", starts_at=future)
        )
        self.assertEqual(await self.sendmail(), {})
        await self.store.put_vacation_setting(VacationSetting(self.bob.id, False, "", "x"))
        self.assertEqual(await self.sendmail(), {})
        self.assertEqual(await self.store.list_outbound_jobs(self.bob.id), [])


def reactor_seconds() -> float:
    from twisted.internet import reactor

    return reactor.seconds()


class SentThroughTheQueueTests(LoopbackMX):
    """What scripts send leaves through the real outbound queue to a relay: the vacation
    answer from the null sender, the redirected copy from the mailbox's VERP address."""

    async def test_relay_receives_answer_and_copy(self):
        from tests.queue.helpers import ScriptedRelay, make_config, make_queue

        relay = ScriptedRelay()
        port = relay.listen(self)
        await self.serve(spec("sieve"))
        await self.store.put_sieve_script(
            self.bob.id,
            "main",
            'require ["vacation", "copy"];\nredirect :copy "dave@remote.test";\n'
            'vacation :subject "Away" "Back soon.";\n',
            activate=True,
        )
        self.assertEqual(await self.sendmail(), {})
        queue = make_queue(self, self.store, make_config(f"127.0.0.1:{port}"))
        self.assertEqual(await queue.process_due(), 2)
        by_rcpt = {tuple(r["rcpts"]): r for r in relay.received}
        answer = by_rcpt[("alice@example.org",)]
        self.assertEqual(answer["from"], "")
        self.assertIn(b"Subject: Away\r\n", answer["data"])
        copy = by_rcpt[("dave@remote.test",)]
        self.assertTrue(copy["from"].startswith("bounces+"))
        self.assertTrue(copy["data"].startswith(b"Delivered-To: bob@example.com\r\n"))
        self.assertTrue(copy["data"].endswith(MESSAGE))
