"""ENVELOPE, BODY and BODYSTRUCTURE strings checked exactly: the examples of RFC 3501 and
hand-computed expectations for addresses, groups, encodings and extension data."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from haitatsu.mime import parse_bytes


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


def text_body(size, lines):
    """A body of ``size`` bytes holding exactly ``lines`` CRLF line ends, the last one final."""
    content = size - 2 * lines
    widths = [content // lines + (1 if index < content % lines else 0) for index in range(lines)]
    return b"".join(b"a" * width + b"\r\n" for width in widths)


# The header of the message fetched in RFC 3501 section 8's sample session.
RFC3501_HEADER = """Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
From: Terry Gray <gray@cac.washington.edu>
Subject: IMAP4rev1 WG mtg summary and minutes
To: imap@cac.washington.edu
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
Message-Id: <B27397-0100000@cac.washington.edu>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

"""


class RFC3501ExampleTests(SynchronousTestCase):
    def test_fetch_full_example(self):
        """RFC 3501 sections 7.4.2 and 8: ENVELOPE and BODY of message 12. (The RFC wraps the
        Cc list between its two addresses; the grammar, ``"(" 1*address ")"``, puts no space
        there.)"""
        raw = crlf(RFC3501_HEADER) + text_body(3028, 92)
        parsed = parse_bytes(raw)
        gray = '(("Terry Gray" NIL "gray" "cac.washington.edu"))'
        self.assertEqual(
            parsed.envelope,
            '("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
            f"{gray} {gray} {gray} "
            '((NIL NIL "imap" "cac.washington.edu")) '
            '((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
            'NIL NIL "<B27397-0100000@cac.washington.edu>")',
        )
        self.assertEqual(
            parsed.body, '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
        )
        self.assertEqual(
            parsed.bodystructure,
            '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)',
        )
        self.assertEqual(parsed.rfc_message_id, "<B27397-0100000@cac.washington.edu>")
        self.assertEqual(parsed.subject, "IMAP4rev1 WG mtg summary and minutes")
        self.assertEqual(parsed.date, 837595405 * 10**9)
        self.assertEqual(parsed.to_addresses, ["imap@cac.washington.edu"])
        self.assertEqual(parsed.cc_addresses, ["minutes@cnri.reston.va.us", "klensin@mit.edu"])
        self.assertEqual(
            parsed.headers["cc"], ["minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>"]
        )

    def test_multipart_bodystructure_example(self):
        """RFC 3501 section 7.4.2's BODYSTRUCTURE example (in its non-extensible form, which
        is what the RFC shows), then the same with extension data."""
        attachment = base64.b64encode(bytes(range(256)) * 13)[: 73 * 60 + 28]
        lines = [attachment[index : index + 60] for index in range(0, 73 * 60, 60)]
        base64_body = b"".join(line + b"\r\n" for line in lines) + attachment[73 * 60 :]
        self.assertEqual(len(base64_body), 4554)
        raw = (
            crlf(
                "From: a@example.com\nMIME-Version: 1.0\n"
                'Content-Type: MULTIPART/MIXED; BOUNDARY="--b--"\n\n'
                "----b--\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\n"
            )
            + text_body(1154, 24)[:-2]
            + crlf(
                "\n----b--\n"
                "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\n"
                "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
                "Content-Description: Compiler diff\n"
                "Content-Transfer-Encoding: BASE64\n\n"
            )
            + base64_body
            + crlf("\n----b----\n")
        )
        parsed = parse_bytes(raw)
        self.assertEqual(
            parsed.body,
            '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
            '("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
            '"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) '
            '"MIXED")',
        )
        self.assertEqual(
            parsed.bodystructure,
            '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
            '("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
            '"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 '
            'NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "--b--") NIL NIL NIL)',
        )
        self.assertEqual(
            parsed.attachments,
            [
                {
                    "part_index": 2,
                    "filename": "cc.diff",
                    "content_type": "text/plain",
                    "size_bytes": (73 * 60 + 28) // 4 * 3,
                }
            ],
        )


def envelope_of(header):
    return parse_bytes(crlf(header + "\n\nbody\n")).envelope


class EnvelopeTests(SynchronousTestCase):
    def test_absent_fields_are_nil(self):
        self.assertEqual(envelope_of("X-Other: 1"), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")

    def test_sender_and_reply_to(self):
        """Sender and Reply-To are their own when present, From's when absent or empty."""
        envelope = envelope_of(
            "From: a@example.com\nSender: s@example.com\nReply-To:\nTo: t@example.com"
        )
        self.assertEqual(
            envelope,
            '(NIL NIL ((NIL NIL "a" "example.com")) ((NIL NIL "s" "example.com")) '
            '((NIL NIL "a" "example.com")) ((NIL NIL "t" "example.com")) NIL NIL NIL NIL)',
        )

    def test_groups(self):
        """Group syntax per RFC 3501: a start marker with the group name, the members, an end
        marker; an empty group is just the two markers."""
        parsed = parse_bytes(
            crlf(
                "To: A Group: a@x.org, B <b@y.org>;, c@z.org\n"
                "Cc: undisclosed-recipients:;\n\nbody\n"
            )
        )
        self.assertEqual(
            parsed.envelope,
            "(NIL NIL NIL NIL NIL "
            '((NIL NIL "A Group" NIL)(NIL NIL "a" "x.org")("B" NIL "b" "y.org")(NIL NIL NIL NIL)'
            '(NIL NIL "c" "z.org")) '
            '((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)',
        )
        self.assertEqual(parsed.to_addresses, ["a@x.org", "b@y.org", "c@z.org"])
        self.assertEqual(parsed.cc_addresses, [])

    def test_address_forms(self):
        """Quoted names (with commas and escapes), comments, routes, missing domains."""
        envelope = envelope_of(
            'To: "Doe, John \\"JD\\"" <J.Doe@Example.COM>, j@x.org (John), '
            "<@relay.example,@r2.example:user@host.example>, localonly"
        )
        self.assertEqual(
            envelope,
            "(NIL NIL NIL NIL NIL "
            '(("Doe, John \\"JD\\"" NIL "J.Doe" "Example.COM")(NIL NIL "j" "x.org")'
            '(NIL "@relay.example,@r2.example" "user" "host.example")(NIL NIL "localonly" "")) '
            "NIL NIL NIL NIL)",
        )
        parsed = parse_bytes(crlf("To: A <J.Doe@Example.COM>, A <j.doe@example.com>\n\n"))
        self.assertEqual(parsed.to_addresses, ["j.doe@example.com"])

    def test_values_are_raw_not_decoded(self):
        """ENVELOPE carries header text as written: encoded words stay encoded."""
        parsed = parse_bytes(
            crlf(
                "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?B?IHdlbHQ=?=\n"
                "From: =?iso-8859-1?q?J=F6rg?= <joerg@example.de>\n\n"
            )
        )
        self.assertEqual(
            parsed.envelope,
            '(NIL "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?B?IHdlbHQ=?=" '
            + '(("=?iso-8859-1?q?J=F6rg?=" NIL "joerg" "example.de")) ' * 3
            + "NIL NIL NIL NIL NIL)",
        )
        self.assertEqual(parsed.subject, "Grüße welt")
        self.assertEqual(parsed.headers["From"], ["Jörg <joerg@example.de>"])

    def test_eight_bit_values_are_literals(self):
        """Raw UTF-8 in a header goes out as a literal counted in UTF-8 octets."""
        parsed = parse_bytes(crlf("Subject: Grüße\nFrom: Jörg <jörg@example.de>\n\nx"))
        self.assertEqual(
            parsed.envelope,
            "(NIL {7}\r\nGrüße "
            + '(({5}\r\nJörg NIL {5}\r\njörg "example.de")) ' * 3
            + "NIL NIL NIL NIL NIL)",
        )
        self.assertEqual(parsed.subject, "Grüße")
        self.assertEqual(parsed.from_addresses, ["jörg@example.de"])

    def test_quoting(self):
        """Backslash and double quote are escaped; folding is undone; a bare CR needs a
        literal."""
        envelope = envelope_of('Subject: say "hi" \\o/\n  folded\nIn-Reply-To: <a@b>\rx')
        self.assertEqual(
            envelope,
            '(NIL "say \\"hi\\" \\\\o/  folded" NIL NIL NIL NIL NIL NIL {7}\r\n<a@b>\rx NIL)',
        )

    def test_duplicate_headers(self):
        """ENVELOPE takes the first occurrence; the headers map keeps all, under the name as
        first seen."""
        parsed = parse_bytes(
            crlf("Subject: first\nX-Tag: a\nSUBJECT: second\nx-tag: b\nReceived: r1\n\n")
        )
        self.assertIn('"first"', parsed.envelope)
        self.assertNotIn("second", parsed.envelope)
        self.assertEqual(parsed.subject, "first")
        self.assertEqual(
            parsed.headers,
            {"Subject": ["first", "second"], "X-Tag": ["a", "b"], "Received": ["r1"]},
        )

    def test_header_caps(self):
        """Each value is capped at 8 KiB and the map at 500 values."""
        header = "Subject: " + "s" * 20000 + "\n" + "".join(f"X-N: {n}\n" for n in range(600))
        parsed = parse_bytes(crlf(header + "\n"))
        self.assertEqual(parsed.headers["Subject"], ["s" * 8192])
        self.assertEqual(len(parsed.headers["X-N"]), 499)
        self.assertEqual(parsed.subject, "s" * 20000)

    def test_dates(self):
        def date(value):
            return parse_bytes(crlf(f"Date: {value}\n\n")).date

        self.assertEqual(date("Thu, 01 Jan 1970 00:00:01 +0000"), 10**9)
        self.assertEqual(date("Thu, 01 Jan 1970 01:00:01 +0100"), 10**9)
        self.assertEqual(date("1 Jan 1970 00:00:02 -0000"), 2 * 10**9)
        self.assertIsNone(date("not a date"))
        self.assertIsNone(parse_bytes(b"Subject: x\r\n\r\n").date)


class BodyStructureTests(SynchronousTestCase):
    def test_extension_data(self):
        """Every body field and every extension field of a single part."""
        raw = crlf(
            'Content-Type: text/plain; charset="utf-8"; format=flowed\n'
            "Content-ID: <id@x>\n"
            'Content-Description: A "quoted" desc\n'
            "Content-Transfer-Encoding: 8bit\n"
            'Content-Disposition: inline; filename="notes.txt"\n'
            "Content-Language: en, de\n"
            "Content-Location: http://example.com/notes.txt\n"
            "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\n"
            "two\nlines\n"
        )
        parsed = parse_bytes(raw)
        fields = (
            '"TEXT" "PLAIN" ("CHARSET" "utf-8" "FORMAT" "flowed") "<id@x>" '
            '"A \\"quoted\\" desc" "8BIT" 12 2'
        )
        self.assertEqual(parsed.body, f"({fields})")
        self.assertEqual(
            parsed.bodystructure,
            f'({fields} "Q2hlY2sgSW50ZWdyaXR5IQ==" ("INLINE" ("FILENAME" "notes.txt")) '
            '("en" "de") "http://example.com/notes.txt")',
        )

    def test_single_language_and_comment(self):
        raw = crlf(
            'Content-Type: image/jpeg (a comment); name="a (1).jpg"\nContent-Language: fr\n\nxx'
        )
        self.assertEqual(
            parse_bytes(raw).bodystructure,
            '("IMAGE" "JPEG" ("NAME" "a (1).jpg") NIL NIL "7BIT" 2 NIL NIL "fr" NIL)',
        )

    def test_eight_bit_parameter_is_literal(self):
        raw = crlf('Content-Type: application/pdf; name="résumé.pdf"\n\nx')
        self.assertEqual(
            parse_bytes(raw).body,
            '("APPLICATION" "PDF" ("NAME" {12}\r\nrésumé.pdf) NIL NIL "7BIT" 1)',
        )
