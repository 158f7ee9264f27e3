"""The interpreter on the RFCs' own examples (RFC 5228, 5229, 5230, 5231, 5232, 5233, 5173),
plus what the differential test cannot ask Pigeonhole (the null sender, ereject, limits)."""

from __future__ import annotations

import shutil
import tempfile

from twisted.trial import unittest

from haitatsu.sieve import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Limits,
    Redirect,
    Reject,
    SieveMessage,
    SieveSyntaxError,
    Vacation,
    compile_script,
    run,
)
from haitatsu.sieve.interpreter import _Run

MESSAGE = (
    b"From: Coyote <coyote@desert.example.org>\r\n"
    b"To: me@example.com\r\n"
    b"Subject: I have a present for you\r\n"
    b"Message-ID: <1@desert.example.org>\r\n"
    b"\r\n"
    b"Look, I'm sorry about the whole anvil thing.\r\n"
)


class Case(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)

    def message(self, data: bytes = MESSAGE) -> SieveMessage:
        return SieveMessage.from_bytes(data, self.dir)

    def run_script(
        self,
        text,
        data=MESSAGE,
        sender="coyote@desert.example.org",
        rcpt="me@example.com",
        folders=None,
        limits=None,
    ):
        return run(
            compile_script(text), self.message(data), Envelope(sender, rcpt), folders, limits
        )

    def actions(self, *args, **kwargs):
        outcome = self.run_script(*args, **kwargs)
        self.assertEqual(outcome.error, "")
        return list(outcome.actions)

    def variables(self, text, data=MESSAGE):
        runner = _Run(
            compile_script(text),
            self.message(data),
            Envelope("a@b.c", "me@example.com"),
            None,
            Limits(),
        )
        runner.run()
        return runner.variables


RFC5228_EXAMPLE = """
require "fileinto";
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
            fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
            keep;               # keep in "In" mailbox
        }
#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
            fileinto "spam";   # move to "spam" mailbox
        }
else
        {
            # Move all other (non-company) mail to "personal"
            # mailbox.
            fileinto "personal";
        }
"""


class RFC5228Tests(Case):
    def test_section_9_example(self):
        def headers(extra):
            return extra + b"Subject: hello\r\n\r\nbody\r\n"

        cases = [
            (b"Sender: owner-ietf-mta-filters@imc.org\r\nTo: x@y.org\r\n", FileInto("filter")),
            (b"From: boss@example.com\r\nTo: me@example.com\r\n", Keep()),
            (b"From: a@b.org\r\nTo: you@there.org\r\n", FileInto("spam")),
            (b"From: a@b.org\r\nTo: me@example.com\r\nSubject: MAKE MONEY FAST\r\n", Keep()),
            (b"From: a@b.org\r\nCc: you@b.org\r\nSubject: MAKE MONEY FAST\r\n", FileInto("spam")),
            (b"From: a@b.org\r\nCc: me@example.com\r\n", FileInto("personal")),
        ]
        for head, expected in cases:
            self.assertEqual(self.actions(RFC5228_EXAMPLE, headers(head)), [expected], head)

    def test_implicit_keep_and_stop(self):
        self.assertEqual(self.actions("# nothing\n"), [Keep(implicit=True)])
        self.assertEqual(self.actions("stop; discard;"), [Keep(implicit=True)])
        self.assertEqual(self.actions("discard;"), [Discard()])
        self.assertEqual(self.actions('redirect "a@example.net";'), [Redirect("a@example.net")])

    def test_header_tests_and_comparators(self):
        script = (
            'if header :contains "subject" "PRESENT" { keep; }\n'
            'if header :comparator "i;octet" :contains "subject" "PRESENT" { discard; }\n'
        )
        self.assertEqual(self.actions(script), [Keep()])
        self.assertEqual(
            self.actions('if exists ["From", "Date"] { discard; }'), [Keep(implicit=True)]
        )
        self.assertEqual(self.actions('if exists ["From", "To"] { discard; }'), [Discard()])
        self.assertEqual(self.actions("if size :over 1K { discard; }"), [Keep(implicit=True)])
        self.assertEqual(self.actions("if size :under 1K { discard; }"), [Discard()])

    def test_encoded_headers_are_decoded(self):
        data = b"Subject: =?ISO-8859-1?Q?caf=E9?= au lait\r\n\r\nx\r\n"
        self.assertEqual(
            self.actions(
                'if header :is "subject" "caf\\u00e9 au lait" { discard; }'.replace(
                    "\\u00e9", "\u00e9"
                ),
                data,
            ),
            [Discard()],
        )

    def test_null_sender(self):
        script = 'require "envelope";\nif envelope :is "from" "" { discard; }'
        self.assertEqual(self.actions(script, sender=""), [Discard()])
        self.assertEqual(self.actions(script), [Keep(implicit=True)])
        script = 'require "envelope";\nif envelope :localpart :is "from" "" { discard; }'
        self.assertEqual(self.actions(script, sender=""), [Discard()])

    def test_duplicate_stores_are_one(self):
        script = 'require "fileinto";\nkeep; fileinto "INBOX"; fileinto "A"; fileinto "A";'
        self.assertEqual(self.actions(script), [Keep(), FileInto("A")])

    def test_syntax_errors_name_the_line(self):
        for text, line in [
            ('require "fileinto";\n\nif true {\n fileinto "x" \n}\n', 5),
            ('keep;\nrequire "fileinto";\n', 2),
            ("\n\nfrobnicate;\n", 3),
            (
                'require ["comparator-i;ascii-numeric"];\n\n'
                'if header :comparator "i;ascii-numeric" :contains "x" "1" { keep; }',
                3,
            ),
            ('if header :comparator "i;klingon" :is "x" "1" { keep; }', 1),
            ("keep", 1),
        ]:
            with self.assertRaises(SieveSyntaxError) as caught:
                compile_script(text)
            self.assertEqual(caught.exception.line, line, (text, str(caught.exception)))

    def test_limits_fall_back_to_the_implicit_keep(self):
        script = "".join(f'redirect "r{i}@example.net";\n' for i in range(3))
        outcome = self.run_script(script, limits=Limits(max_redirects=2))
        self.assertEqual(outcome.actions, (Keep(implicit=True),))
        self.assertIn("redirects", outcome.error)
        script = 'require ["fileinto", "copy"];\n' + "".join(
            f'fileinto :copy "f{i}";\n' for i in range(5)
        )
        outcome = self.run_script(script, limits=Limits(max_actions=4))
        self.assertEqual(outcome.actions, (Keep(implicit=True),))
        with self.assertRaises(SieveSyntaxError):
            compile_script("keep;" * 20, max_bytes=50)

    def test_unknown_folder_is_a_runtime_error(self):
        script = 'require "fileinto";\nfileinto "Nope";'
        outcome = self.run_script(script, folders={"Work"})
        self.assertEqual(outcome.actions, (Keep(implicit=True),))
        self.assertEqual(
            self.actions(script.replace("Nope", "Work"), folders={"Work"}), [FileInto("Work")]
        )
        self.assertEqual(
            self.actions(
                'require ["fileinto", "mailbox"];\nfileinto :create "Nope";', folders={"Work"}
            ),
            [FileInto("Nope", create=True)],
        )
        script = 'require "mailbox";\nif mailboxexists ["Work", "Nope"] { discard; }'
        self.assertEqual(self.actions(script, folders={"Work"}), [Keep(implicit=True)])

    def test_nesting_is_bounded(self):
        with self.assertRaises(SieveSyntaxError) as caught:
            compile_script("if true { " * 40 + "keep;" + " }" * 40)
        self.assertIn("nested more than 32 levels", str(caught.exception))
        with self.assertRaises(SieveSyntaxError):
            compile_script("if " + "not " * 3000 + "true { keep; }", max_bytes=10**6)

    def test_matches_never_backtracks_exponentially(self):
        """A pattern of many stars against a long header value the sender chose: the glob
        match only ever returns to the last star, so this ends (RFC 5229 semantics kept)."""
        data = b"Subject: " + b"a" * 5000 + b"\r\n\r\nx\r\n"
        script = 'if header :matches "subject" "' + "*a" * 20 + '*b" { discard; }'
        self.assertEqual(self.actions(script, data), [Keep(implicit=True)])

    def test_invalid_redirect_address(self):
        outcome = self.run_script('redirect "not an address";')
        self.assertEqual(outcome.actions, (Keep(implicit=True),))


class RFC5229Tests(Case):
    def test_set_and_expansion(self):
        variables = self.variables(
            'require "variables";\n'
            'set "honorific"  "Mr";\nset "first_name" "Joe";\nset "last_name"  "Doe";\n'
            'set "vacation" text:\nDear ${HONORIFIC} ${last_name},\n'
            "I'm out, please leave a message after the meep.\n.\n;\n"
        )
        self.assertEqual(
            variables["vacation"],
            "Dear Mr Doe,\r\nI'm out, please leave a message after the meep.\r\n",
        )

    def test_modifiers(self):
        variables = self.variables(
            'require "variables";\n'
            'set "a" "juMBlEd lETteRS";\n'
            'set :length "b" "${a}";\n'
            'set :lower "c" "${a}";\n'
            'set :upperfirst "d" "${a}";\n'
            'set :upperfirst :lower "e" "${a}";\n'
            'set :quotewildcard "f" "Rock*";\n'
        )
        self.assertEqual(
            [variables[k] for k in "abcdef"],
            [
                "juMBlEd lETteRS",
                "15",
                "jumbled letters",
                "JuMBlEd lETteRS",
                "Jumbled letters",
                "Rock\\*",
            ],
        )

    def test_match_variables(self):
        script = (
            'require ["fileinto", "variables"];\n'
            'if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }\n'
            'if header :matches "Subject" "[*] *" { fileinto "INBOX.lists.${1}"; stop; }\n'
            'if address :matches ["To", "Cc"] ["coyote@**.com", "wile@**.com"] {\n'
            '  fileinto "INBOX.business.${2}"; stop;\n'
            "}\n"
        )
        listed = b"List-ID: Foo <foo@lists.example.org>\r\n\r\nx\r\n"
        self.assertEqual(self.actions(script, listed), [FileInto("INBOX.lists.foo")])
        subject = b"Subject: [acme-users] [fwd] version 1.0 is out\r\n\r\nx\r\n"
        self.assertEqual(self.actions(script, subject), [FileInto("INBOX.lists.acme-users")])
        to = b"To: coyote@ACME.Example.COM\r\n\r\nx\r\n"
        self.assertEqual(self.actions(script, to), [FileInto("INBOX.business.ACME.Example")])

    def test_string_test(self):
        script = (
            'require "variables";\nset "state" "${state} pending";\n'
            'if string :matches " ${state} " "* pending *" { discard; }'
        )
        self.assertEqual(self.actions(script), [Discard()])
        script = 'require "variables";\nif string :is "${unknown}" "" { discard; }'
        self.assertEqual(self.actions(script), [Discard()])

    def test_no_expansion_without_the_extension(self):
        script = 'require "fileinto";\nfileinto "${x}";'
        self.assertEqual(self.actions(script), [FileInto("${x}")])


class RFC5230Tests(Case):
    def test_examples(self):
        script = (
            'require "vacation";\n'
            'if header :contains "subject" "cyrus" {\n'
            '    vacation "I\'m out -- send mail to cyrus-bugs";\n'
            "} else {\n"
            '    vacation "I\'m out -- call me at +1 304 555 0123";\n'
            "}\n"
        )
        (vacation, keep) = self.actions(script)
        self.assertEqual(vacation.reason, "I'm out -- call me at +1 304 555 0123")
        self.assertEqual((vacation.period, vacation.period_given), (7 * 86400, False))
        self.assertEqual(keep, Keep(implicit=True))
        script = (
            'require ["vacation", "variables"];\n'
            'if header :matches "subject" "*" {\n'
            '    vacation :subject "Automatic response to: ${1}" "I\'m away";\n'
            "}\n"
        )
        vacation = self.actions(script)[0]
        self.assertEqual(vacation.subject, "Automatic response to: I have a present for you")
        script = (
            'require ["vacation", "vacation-seconds"];\n'
            'vacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]\n'
            '"I\'m away until October 19.";\n'
        )
        vacation = self.actions(script)[0]
        self.assertEqual(vacation.period, 23 * 86400)
        self.assertEqual(vacation.addresses, ("tjs@example.edu", "ts4z@landru.example.edu"))
        vacation = self.actions(
            'require ["vacation", "vacation-seconds"];\nvacation :seconds 1800 "x";'
        )[0]
        self.assertEqual((vacation.period, vacation.period_given), (1800, True))

    def test_reject_conflicts_with_vacation(self):
        outcome = self.run_script('require ["vacation", "reject"];\nvacation "x"; reject "no";')
        self.assertEqual(outcome.actions, (Keep(implicit=True),))
        self.assertIn("conflicts", outcome.error)


class RFC5429Tests(Case):
    def test_reject_and_ereject(self):
        self.assertEqual(self.actions('require "reject";\nreject "no";'), [Reject("no")])
        self.assertEqual(
            self.actions('require "ereject";\nereject "no";'), [Reject("no", ereject=True)]
        )
        outcome = self.run_script('require ["reject", "fileinto"];\nfileinto "A"; reject "x";')
        self.assertEqual(outcome.actions, (Keep(implicit=True),))


class RFC5231Tests(Case):
    DATA = (
        b"Received: ...\r\nReceived: ...\r\nSubject: example\r\n"
        b"To: foo@example.com, baz@example.com\r\nCC: qux@example.com\r\n\r\nx\r\n"
    )

    def check(self, test):
        script = (
            f'require ["relational", "comparator-i;ascii-numeric"];\nif {test} {{ discard; }}\n'
        )
        return self.actions(script, self.DATA) == [Discard()]

    def test_section_6_examples(self):
        n = ':comparator "i;ascii-numeric"'
        self.assertTrue(self.check(f'address :count "ge" {n} ["to", "cc"] ["3"]'))
        self.assertFalse(
            self.check(
                f'anyof (address :count "ge" {n} ["to"] ["3"], '
                f'address :count "ge" {n} ["cc"] ["3"])'
            )
        )
        self.assertFalse(self.check(f'header :count "ge" {n} ["received"] ["3"]'))
        self.assertTrue(self.check(f'header :count "ge" {n} ["received", "subject"] ["3"]'))
        self.assertFalse(self.check(f'header :count "ge" {n} ["to", "cc"] ["3"]'))

    def test_value(self):
        data = b"X-Priority: 2\r\n\r\nx\r\n"
        script = (
            'require ["relational", "comparator-i;ascii-numeric"];\n'
            'if header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"]'
            " { discard; }\n"
        )
        self.assertEqual(self.actions(script, data), [Discard()])
        self.assertEqual(
            self.actions(script, b"X-Priority: high\r\n\r\nx\r\n"), [Keep(implicit=True)]
        )


class RFC5232Tests(Case):
    def test_flags(self):
        script = (
            'require ["imap4flags", "fileinto", "variables"];\n'
            "if size :over 10 {\n"
            '  addflag "MyFlags" "Big";\n'
            '  if header :contains "From" "coyote" {\n'
            '    addflag "MyFlags" "\\\\Flagged $Work";\n'
            "  }\n"
            '  fileinto :flags "${MyFlags}" "From Boss";\n'
            "}\n"
            'if hasflag :contains "MyFlags" "Work" { setflag "\\\\Seen"; }\n'
        )
        self.assertEqual(
            self.actions(script),
            [FileInto("From Boss", ("Big", "\\Flagged", "$Work"))],
        )
        script = (
            'require "imap4flags";\n'
            'setflag "\\\\seen \\\\FLAGGED"; removeflag "\\\\Seen"; addflag "\\\\Flagged x";\n'
        )
        self.assertEqual(self.actions(script), [Keep(("\\Flagged", "x"), implicit=True)])


class RFC5233Tests(Case):
    def test_subaddress(self):
        script = (
            'require ["envelope", "subaddress", "fileinto"];\n'
            'if envelope :user "to" "postmaster" { fileinto "inbox.postmaster"; stop; }\n'
            'if envelope :detail :is "to" "mta-filters" { fileinto "inbox.mta-filters"; stop; }\n'
            'if envelope :detail :is "to" "" { fileinto "inbox.empty-detail"; stop; }\n'
            'if envelope :detail :matches "to" "*" { fileinto "inbox.any-detail"; stop; }\n'
        )
        cases = [
            ("postmaster+x@example.com", "inbox.postmaster"),
            ("ken+mta-filters@example.org", "inbox.mta-filters"),
            ("ken+@example.org", "inbox.empty-detail"),
            ("ken+other@example.org", "inbox.any-detail"),
        ]
        for rcpt, folder in cases:
            self.assertEqual(self.actions(script, rcpt=rcpt), [FileInto(folder)], rcpt)
        # No separator: :detail matches nothing, not even "*".
        self.assertEqual(self.actions(script, rcpt="ken@example.org"), [Keep(implicit=True)])


class RFC5173Tests(Case):
    DATA = (
        b"From: a@b.c\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n'
        b"--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"bWlzc2lsZSBjb29yZGluYXRlcw==\r\n"
        b"--x\r\nContent-Type: audio/mp3\r\n\r\nID3\r\n--x--\r\n"
    )

    def test_examples(self):
        self.assertEqual(
            self.actions(
                'require "body";\nif body :raw :contains "MAKE MONEY FAST" { discard; }',
                b"Subject: x\r\n\r\nplease MAKE MONEY FAST\r\n",
            ),
            [Discard()],
        )
        script = (
            'require ["body", "fileinto"];\n'
            'if body :content "text" :contains ["missile", "coordinates"] { fileinto "secrets"; }\n'
        )
        self.assertEqual(self.actions(script, self.DATA), [FileInto("secrets")])
        # :raw does not decode base64.
        raw = 'require "body";\nif body :raw :contains "missile" { discard; }'
        self.assertEqual(self.actions(raw, self.DATA), [Keep(implicit=True)])
        script = (
            'require ["body", "fileinto"];\n'
            'if body :content "audio/mp3" :contains "" { fileinto "jukebox"; }'
        )
        self.assertEqual(self.actions(script, self.DATA), [FileInto("jukebox")])
        self.assertEqual(self.actions(script), [Keep(implicit=True)])

    def test_body_is_bounded(self):
        big = b"Subject: x\r\n\r\n" + b"a" * 5000 + b"needle\r\n"
        message = SieveMessage.from_bytes(big, self.dir)
        message.max_body_bytes = 1000
        outcome = run(
            compile_script('require "body";\nif body :contains "needle" { discard; }'),
            message,
            Envelope("a@b.c", "d@e.f"),
        )
        self.assertEqual(outcome.actions, (Keep(implicit=True),))


_ = Vacation
