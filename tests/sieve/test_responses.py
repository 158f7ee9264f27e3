"""Vacation responses (RFC 5230 sections 4 and 5) and rejection notices (RFC 5429 2.1)."""

from __future__ import annotations

import email
import email.policy
import shutil
import tempfile

from twisted.trial import unittest

from haitatsu.sieve import SieveMessage, Vacation
from haitatsu.sieve.responses import (
    build_rejection,
    build_vacation,
    vacation_handle,
    vacation_refusal,
)

BASE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: =?UTF-8?Q?lunch_=C3=A0_midi?=\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"References: <m0@example.org>\r\n"
    b"\r\n"
    b"Lunch?\r\n"
)
OWN = ["bob@example.com"]


class ResponseTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)

    def message(self, data=BASE):
        return SieveMessage.from_bytes(data, self.dir)

    def test_when_not_to_answer(self):
        self.assertEqual(vacation_refusal(self.message(), "alice@example.org", OWN), "")
        cases = [
            ("", BASE, "null_sender"),
            ("MAILER-DAEMON@example.org", BASE, "robot_sender"),
            ("owner-list@example.org", BASE, "robot_sender"),
            ("list-request@example.org", BASE, "robot_sender"),
            ("alice@example.org", b"Auto-Submitted: auto-replied\r\n" + BASE, "auto_submitted"),
            ("alice@example.org", b"List-Id: <l.example.org>\r\n" + BASE, "mailing_list"),
            ("alice@example.org", b"List-Unsubscribe: <mailto:u@x>\r\n" + BASE, "mailing_list"),
            ("alice@example.org", b"Precedence: bulk\r\n" + BASE, "precedence"),
            ("bob@example.com", BASE, "own_message"),
            (
                "alice@example.org",
                BASE.replace(b"bob@example.com", b"x@example.net"),
                "not_addressed",
            ),
        ]
        for sender, data, reason in cases:
            self.assertEqual(vacation_refusal(self.message(data), sender, OWN), reason, reason)
        # Auto-Submitted: no is a person; a subaddress or :addresses count as the user's.
        self.assertEqual(
            vacation_refusal(self.message(b"Auto-Submitted: no\r\n" + BASE), "a@b.org", OWN), ""
        )
        other = self.message(BASE.replace(b"bob@example.com", b"bob+work@example.com"))
        self.assertEqual(vacation_refusal(other, "a@b.org", OWN), "")
        aliased = self.message(BASE.replace(b"bob@example.com", b"robert@example.com"))
        self.assertEqual(vacation_refusal(aliased, "a@b.org", OWN + ["robert@example.com"]), "")

    def test_handles(self):
        a = Vacation("I am away")
        self.assertEqual(vacation_handle(a), vacation_handle(Vacation("I am away")))
        self.assertNotEqual(vacation_handle(a), vacation_handle(Vacation("I am back")))
        self.assertNotEqual(vacation_handle(a), vacation_handle(Vacation("I am away", "s")))
        self.assertEqual(vacation_handle(Vacation("x", handle="h")), "h")

    def test_response(self):
        data = build_vacation(
            Vacation("Back on Monday.\r\nBob\r\n"),
            self.message(),
            sender="alice@example.org",
            from_address="bob@example.com",
            hostname="mx.example.com",
            now=1_700_000_000,
        )
        reply = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(reply["To"], "alice@example.org")
        self.assertEqual(reply["From"], "bob@example.com")
        self.assertEqual(reply["Subject"], "Auto: lunch à midi")
        self.assertEqual(reply["Auto-Submitted"], "auto-replied (vacation)")
        self.assertEqual(reply["In-Reply-To"], "<m1@example.org>")
        self.assertEqual(reply["References"], "<m0@example.org> <m1@example.org>")
        self.assertTrue(reply["Message-ID"].endswith("@mx.example.com>"))
        self.assertEqual(reply.get_content().replace("\r\n", "\n"), "Back on Monday.\nBob\n")
        self.assertNotIn(b"\r\r", data)

    def test_mime_response(self):
        reason = (
            'Content-Type: multipart/alternative; boundary="q"\r\n\r\n'
            "--q\r\nContent-Type: text/plain\r\n\r\nAway.\r\n"
            "--q\r\nContent-Type: text/html\r\n\r\n<p>Away.</p>\r\n--q--\r\n"
        )
        data = build_vacation(
            Vacation(reason, subject="Out", from_address="Bob <bob@example.com>", mime=True),
            self.message(),
            sender="alice@example.org",
            from_address="ignored@example.com",
            hostname="mx.example.com",
            now=1_700_000_000,
        )
        reply = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(reply["From"], "Bob <bob@example.com>")
        self.assertEqual(reply.get_content_type(), "multipart/alternative")
        self.assertEqual(
            [p.get_content_type() for p in reply.iter_parts()], ["text/plain", "text/html"]
        )

    def test_rejection_notice(self):
        data = build_rejection(
            "Not here.\r\nReally.\r\n",
            self.message(),
            sender="alice@example.org",
            recipient="bob@example.com",
            hostname="mx.example.com",
            postmaster="postmaster@mx.example.com",
            now=1_700_000_000,
        )
        report = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "disposition-notification")
        self.assertEqual(report["To"], "alice@example.org")
        self.assertEqual(report["Auto-Submitted"], "auto-replied (rejected)")
        text, notification, headers = report.iter_parts()
        self.assertIn(
            "Not here.\r\nReally.", text.get_content().replace("\n", "\r\n").replace("\r\r", "\r")
        )
        raw = notification.as_bytes()
        self.assertIn(b"Disposition: automatic-action/MDN-sent-automatically; deleted", raw)
        self.assertIn(b"Original-Message-ID: <m1@example.org>", raw)
        self.assertIn(b"Final-Recipient: rfc822; bob@example.com", raw)
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
