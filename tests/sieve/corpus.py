"""Scripts and messages for the Sieve tests: each script runs on each message (the differential
test against Pigeonhole's sieve-test, tests/sieve/test_differential.py). Pigeonhole has no
``ereject``: that one is tested on its own (test_interpreter.py)."""

from __future__ import annotations

import base64

_BIG_ATTACHMENT = base64.encodebytes(bytes(range(256)) * 60).replace(b"\n", b"\r\n")

#: (name, envelope sender, envelope recipient, message)
MESSAGES = [
    (
        "plain",
        "alice@example.org",
        "bob@example.com",
        b"Return-Path: <alice@example.org>\r\n"
        b"Received: from mx.example.org by mx.example.com; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"From: Alice Example <alice@example.org>\r\n"
        b"To: Bob <bob@example.com>\r\n"
        b"Subject: [acme-users] [fwd] version 1.0 is out\r\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"Message-ID: <plain-1@example.org>\r\n"
        b"\r\n"
        b"Hello Bob, the new version is out.\r\n",
    ),
    (
        "list",
        "acme-bounces@lists.example.org",
        "bob+lists@example.com",
        b"Received: from a by b; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"Received: from c by d; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"Received: from e by f; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"From: Acme List <acme@lists.example.org>\r\n"
        b"To: acme@lists.example.org\r\n"
        b"Cc: bob+lists@example.com, Carol <carol@example.net>\r\n"
        b"Subject: Re: [acme] weekly digest\r\n"
        b"List-Id: Acme users <acme.lists.example.org>\r\n"
        b"Precedence: list\r\n"
        b"X-Spam-Score: 3\r\n"
        b"Message-ID: <list-2@lists.example.org>\r\n"
        b"\r\n"
        b"Digest of the week.\r\n",
    ),
    (
        "encoded",
        "andre@example.fr",
        "bob+news@example.com",
        b"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>\r\n"
        b"To: bob+news@example.com\r\n"
        b"Subject: =?UTF-8?B?w6l0w6kgc3BhbQ==?=\r\n"
        b"X-Spam-Score: 12\r\n"
        b"Message-ID: <enc-3@example.fr>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Buy now, caf=C3=A9 offers\r\n"
        b"--b1\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"\r\n"
        b"<p>Buy <b>now</b></p>\r\n"
        b"--b1--\r\n",
    ),
    (
        "big",
        "billing@example.org",
        "bob@example.com",
        b"From: billing@example.org\r\n"
        b"To: bob@example.com, dave@example.com\r\n"
        b"Subject: Your invoice\r\n"
        b"Message-ID: <big-4@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b2"\r\n'
        b"\r\n"
        b"--b2\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"Please find the invoice attached.\r\n"
        b"--b2\r\n"
        b"Content-Type: application/pdf; name=invoice.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + _BIG_ATTACHMENT + b"--b2--\r\n",
    ),
    (
        "bounce",
        # sieve-test cannot take the null sender (-f ""): test_interpreter.py covers it.
        "MAILER-DAEMON@example.net",
        "bob@example.com",
        b"From: MAILER-DAEMON@example.net\r\n"
        b"To: undisclosed-recipients:;\r\n"
        b"Subject: Re: hello\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"X-Priority: 1\r\n"
        b"\r\n"
        b"Your message could not be delivered.\r\n",
    ),
]

_COMMON = (
    'require ["fileinto", "reject", "envelope", "body", "variables", "imap4flags",'
    ' "vacation", "subaddress", "relational", "copy", "comparator-i;ascii-numeric"];\n'
)

#: (name, script); each starts with the ``require`` of every extension.
SCRIPTS = [
    ("keep", "keep;"),
    ("discard", "discard;"),
    ("fileinto", 'fileinto "Work";'),
    ("header_contains", 'if header :contains "subject" "acme" { fileinto "Lists"; }'),
    (
        "matches_variables",
        'if header :matches "Subject" "[*] *" { fileinto "lists.${1}"; stop; }\n'
        'if header :matches "Subject" "Re: *" { fileinto "replies/${1}"; }',
    ),
    (
        "address_domain",
        'if address :domain :is "from" "example.org" { fileinto "Org"; } else { discard; }',
    ),
    (
        "address_localpart",
        'if address :localpart :contains ["to", "cc"] "bob" { addflag "\\\\Flagged"; }',
    ),
    (
        "envelope_from",
        'if envelope :all :is "from" "alice@example.org" { redirect "carol@example.net"; }',
    ),
    ("envelope_detail", 'if envelope :detail "to" "news" { fileinto "News"; }'),
    ("envelope_user", 'if envelope :user "to" "bob" { fileinto :copy "Bob"; }'),
    ("envelope_null", 'if envelope :is "from" "" { fileinto "Bounces"; }'),
    ("exists", 'if exists ["List-Id"] { fileinto "Lists"; stop; }\nkeep;'),
    (
        "size",
        'if size :over 10K { fileinto "Big"; } elsif size :under 400 { addflag "small"; }'
        ' else { addflag "medium"; }',
    ),
    (
        "allof_not",
        'if allof (header :contains "from" "alice", not exists "List-Id")'
        ' { setflag "\\\\Seen"; keep; }',
    ),
    (
        "anyof",
        'if anyof (header :is "X-Spam-Score" "12", header :contains "subject" "spam")'
        ' { fileinto "Junk"; }',
    ),
    (
        "relational_value",
        'if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { discard; }',
    ),
    (
        "relational_count",
        'if header :count "ge" :comparator "i;ascii-numeric" "Received" "2"'
        ' { fileinto "Relayed"; }\n'
        'if address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "2"'
        ' { addflag "two"; }',
    ),
    ("body_text", 'if body :text :contains "invoice" { fileinto "Invoices"; }'),
    (
        "body_raw",
        'if body :raw :contains "caf=C3=A9" { fileinto :flags ["\\\\Seen", "$Junk"] "Spam"; }',
    ),
    ("body_content", 'if body :content "text/html" :contains "<b>" { fileinto "Html"; }'),
    (
        "variables_string",
        'if header :matches "subject" "[*]*" { set :lower "list" "${1}"; }\n'
        'if string :is "${list}" "acme-users" { fileinto "Acme"; }',
    ),
    (
        "variables_modifiers",
        'set :upperfirst "x" "hello"; set :length "n" "${x}";\n'
        'if string :is "${n}" "5" { fileinto "${x}"; }',
    ),
    ("reject", 'if not address :domain "from" "example.org" { reject "no thanks"; }'),
    ("reject_text", 'if header :contains "subject" "invoice" { reject text:\nnot here\n.\n; }'),
    ("vacation", 'vacation :days 2 :subject "Away" "I am away until Monday.";'),
    (
        "vacation_options",
        'vacation :days 1 :handle "h1" :addresses ["bob@example.com"]'
        ' :from "bob@example.com" "Back soon.";\nkeep;',
    ),
    ("redirect_dedupe", 'redirect "a@example.net"; redirect "a@example.net"; keep;'),
    ("fileinto_dedupe", 'fileinto "A"; fileinto "A"; keep; keep;'),
    (
        "elsif_chain",
        'if header :is "subject" "" { fileinto "Empty"; }\n'
        'elsif header :contains "subject" "digest" { fileinto "Digest"; }\n'
        'elsif header :contains "subject" "hello" { fileinto "Hello"; }\n'
        'else { fileinto "Other"; }',
    ),
    (
        "flags",
        'setflag "\\\\Seen"; addflag ["\\\\Flagged", "$x"]; removeflag "\\\\Seen";\n'
        'if hasflag :is "\\\\flagged" { fileinto "Flagged"; }\nkeep;',
    ),
    (
        "hasflag_count",
        'addflag ["a", "b", "c"];\n'
        'if hasflag :count "ge" :comparator "i;ascii-numeric" "3" { fileinto "Three"; }',
    ),
    ("matches_from", 'if header :matches "from" "*<*@*>" { fileinto "from.${3}"; }'),
    (
        "octet",
        'if address :all :comparator "i;octet" :is "from" "Alice@Example.org" { fileinto "Case"; }',
    ),
    ("not_contains", 'if not header :contains "subject" ["acme", "hello"] { discard; }'),
    ("copy_discard", 'fileinto :copy "Copies"; discard;'),
    (
        "nested_stop",
        'if exists "subject" { if header :contains "subject" "acme" { fileinto "A"; stop; }\n'
        'fileinto "B"; }\nfileinto "C";',
    ),
    ("decoded_header", 'if header :contains "subject" "été" { fileinto "French"; }'),
    ("decoded_address", 'if address :domain "from" "example.fr" { fileinto "France"; }'),
    (
        "too_many_redirects",
        'redirect "r1@example.net"; redirect "r2@example.net"; redirect "r3@example.net";\n'
        'redirect "r4@example.net"; redirect "r5@example.net";',
    ),
    ("reject_conflict", 'fileinto "A"; reject "no";'),
    ("keep_flags", 'keep :flags ["\\\\Answered", "custom"];'),
]


def script_text(body: str) -> str:
    return _COMMON + body + "\n"
