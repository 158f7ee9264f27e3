"""Part offsets, BODY/BODYSTRUCTURE and extracts of messages built here, where the expected
bytes of every part are known, with CRLF and with bare LF line ends."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from haitatsu.mime import MessageParser, parse_bytes

NESTED = """From: Alice <alice@example.com>
To: bob@example.org
Subject: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble text
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8

plain body
second line
--inner
Content-Type: text/html; charset=utf-8

<p>html</p>
--inner--
inner epilogue
--outer
Content-Type: application/pdf; name="doc.pdf"
Content-Disposition: attachment; filename="doc.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: message/rfc822

From: Carol <carol@example.net>
Subject: forwarded
Content-Type: multipart/mixed; boundary=fwd

--fwd
Content-Type: text/plain

forwarded text
--fwd
Content-Type: image/png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--fwd--
--outer--
epilogue
"""

# What BODY[n.MIME] and BODY[n] must be, per part, before line ends are chosen.
NESTED_PARTS = {
    "1": (
        "Content-Type: multipart/alternative; boundary=inner\n\n",
        "--inner\nContent-Type: text/plain; charset=utf-8\n\nplain body\nsecond line\n"
        "--inner\nContent-Type: text/html; charset=utf-8\n\n<p>html</p>\n--inner--\n"
        "inner epilogue",
    ),
    "1.1": ("Content-Type: text/plain; charset=utf-8\n\n", "plain body\nsecond line"),
    "1.2": ("Content-Type: text/html; charset=utf-8\n\n", "<p>html</p>"),
    "2": (
        'Content-Type: application/pdf; name="doc.pdf"\n'
        'Content-Disposition: attachment; filename="doc.pdf"\n'
        "Content-Transfer-Encoding: base64\n\n",
        "JVBERi0xLjQK",
    ),
    "3": (
        "Content-Type: message/rfc822\n\n",
        "From: Carol <carol@example.net>\nSubject: forwarded\n"
        "Content-Type: multipart/mixed; boundary=fwd\n\n--fwd\nContent-Type: text/plain\n\n"
        "forwarded text\n--fwd\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
        "iVBORw0KGgo=\n--fwd--",
    ),
    "3.1": ("Content-Type: text/plain\n\n", "forwarded text"),
    "3.2": ("Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n", "iVBORw0KGgo="),
}


def encode(text, eol):
    return text.replace("\n", eol).encode("utf-8")


def mime(raw, parsed, spec):
    entry = parsed.parts[spec]
    return raw[entry["header_start"] : entry["body_start"]]


def body(raw, parsed, spec):
    entry = parsed.parts[spec]
    return raw[entry["body_start"] : entry["end"]]


class NestedOffsetsMixin:
    """The same message checked with one kind of line end."""

    eol = "\r\n"

    def setUp(self):
        self.raw = encode(NESTED, self.eol)
        self.parsed = parse_bytes(self.raw)

    def test_size_and_header(self):
        """size counts every byte; header_size is just past the blank line."""
        self.assertEqual(self.parsed.size, len(self.raw))
        blank = self.raw.index((self.eol * 2).encode()) + 2 * len(self.eol)
        self.assertEqual(self.parsed.header_size, blank)

    def test_every_part_slices_exactly(self):
        """Each part's MIME header and body are exactly the expected bytes, with no line end
        before a delimiter included."""
        self.assertEqual(set(self.parsed.parts), set(NESTED_PARTS))
        for spec, (header, content) in NESTED_PARTS.items():
            self.assertEqual(mime(self.raw, self.parsed, spec), encode(header, self.eol), spec)
            self.assertEqual(body(self.raw, self.parsed, spec), encode(content, self.eol), spec)

    def test_encapsulated_header_and_text(self):
        """text_start splits a message/rfc822 part into its HEADER and TEXT."""
        entry = self.parsed.parts["3"]
        header = self.raw[entry["body_start"] : entry["text_start"]]
        text = self.raw[entry["text_start"] : entry["end"]]
        self.assertEqual(
            header,
            encode(
                "From: Carol <carol@example.net>\nSubject: forwarded\n"
                "Content-Type: multipart/mixed; boundary=fwd\n\n",
                self.eol,
            ),
        )
        self.assertTrue(text.startswith(b"--fwd"))
        self.assertTrue(text.endswith(b"--fwd--"))

    def test_body(self):
        """BODY is the non-extensible form: sizes and line counts of what the slices hold."""

        def size(spec):
            return len(encode(NESTED_PARTS[spec][1], self.eol))

        def lines(spec):
            return NESTED_PARTS[spec][1].count("\n")

        carol = '(("Carol" NIL "carol" "example.net"))'
        expected = (
            f'((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" {size("1.1")} 1)'
            f'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" {size("1.2")} 0) "ALTERNATIVE")'
            '("APPLICATION" "PDF" ("NAME" "doc.pdf") NIL NIL "BASE64" 12)'
            f'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" {size("3")} '
            f'(NIL "forwarded" {carol} {carol} {carol} NIL NIL NIL NIL NIL) '
            f'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" {size("3.1")} 0)'
            '("IMAGE" "PNG" NIL NIL NIL "BASE64" 12) "MIXED") '
            f'{lines("3")}) "MIXED")'
        )
        self.assertEqual(self.parsed.body, expected)

    def test_bodystructure(self):
        """BODYSTRUCTURE adds MD5, disposition, language and location, and the multipart
        parameters."""
        s = self.parsed.bodystructure
        self.assertTrue(s.endswith(' "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'), s)
        self.assertIn(
            '("APPLICATION" "PDF" ("NAME" "doc.pdf") NIL NIL "BASE64" 12 NIL '
            '("ATTACHMENT" ("FILENAME" "doc.pdf")) NIL NIL)',
            s,
        )
        self.assertIn(' "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL)', s)
        self.assertIn('"IMAGE" "PNG" NIL NIL NIL "BASE64" 12 NIL NIL NIL NIL)', s)

    def test_envelope(self):
        """The top-level ENVELOPE: Sender and Reply-To default to From."""
        alice = '(("Alice" NIL "alice" "example.com"))'
        self.assertEqual(
            self.parsed.envelope,
            f'(NIL "nested" {alice} {alice} {alice} ((NIL NIL "bob" "example.org")) '
            "NIL NIL NIL NIL)",
        )

    def test_extracts_and_attachments(self):
        """The first inline text/plain and text/html give the extracts; the PDF is the
        attachment, numbered by its place among leaf parts, with its decoded size."""
        self.assertEqual(self.parsed.text_body_extract, "plain body" + self.eol + "second line")
        self.assertEqual(self.parsed.html_body_extract, "<p>html</p>")
        self.assertEqual(
            self.parsed.attachments,
            [
                {
                    "part_index": 3,
                    "filename": "doc.pdf",
                    "content_type": "application/pdf",
                    "size_bytes": 9,
                }
            ],
        )
        self.assertEqual(self.parsed.parts["2"]["leaf_index"], 3)
        self.assertEqual(self.parsed.parts["3"]["leaf_index"], 4)
        self.assertNotIn("leaf_index", self.parsed.parts["3.1"])

    def test_addresses(self):
        self.assertEqual(self.parsed.from_addresses, ["alice@example.com"])
        self.assertEqual(self.parsed.to_addresses, ["bob@example.org"])
        self.assertEqual(self.parsed.cc_addresses, [])

    def test_chunking_does_not_matter(self):
        """Feeding the message one byte at a time gives the same result as all at once."""
        parser = MessageParser()
        for index in range(len(self.raw)):
            parser.feed(self.raw[index : index + 1])
        self.assertEqual(parser.close(), self.parsed)


class NestedCRLFTests(NestedOffsetsMixin, SynchronousTestCase):
    eol = "\r\n"


class NestedLFTests(NestedOffsetsMixin, SynchronousTestCase):
    eol = "\n"


# RFC 2046 section 5.1.1's example message.
RFC2046_SAMPLE = """From: Nathaniel Borenstein <nsb@bellcore.com>
To: Ned Freed <ned@innosoft.com>
Date: Sun, 21 Mar 1993 23:56:48 -0800 (PST)
Subject: Sample message
MIME-Version: 1.0
Content-type: multipart/mixed; boundary="simple boundary"

This is the preamble.  It is to be ignored, though it
is a handy place for composition agents to include an
explanatory note to non-MIME conformant readers.

--simple boundary

This is implicitly typed plain US-ASCII text.
It does NOT end with a linebreak.
--simple boundary
Content-type: text/plain; charset=us-ascii

This is explicitly typed plain US-ASCII text.
It DOES end with a linebreak.

--simple boundary--

This is the epilogue.  It is also to be ignored.
"""


class RFC2046SampleTests(SynchronousTestCase):
    def test_lf(self):
        """With bare LF the parts are 79 bytes/1 line and 76 bytes/2 lines, as other IMAP
        servers report for this message."""
        parsed = parse_bytes(encode(RFC2046_SAMPLE, "\n"))
        self.assertEqual(
            parsed.body,
            '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 79 1)'
            '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 76 2) "MIXED")',
        )
        self.assertEqual(parsed.header_size, 224)

    def test_crlf(self):
        """The implicitly typed part has an empty MIME header; the second part's body keeps
        its own final line break but not the one before the delimiter."""
        raw = encode(RFC2046_SAMPLE, "\r\n")
        parsed = parse_bytes(raw)
        self.assertEqual(mime(raw, parsed, "1"), b"\r\n")
        self.assertEqual(
            body(raw, parsed, "1"),
            b"This is implicitly typed plain US-ASCII text.\r\nIt does NOT end with a linebreak.",
        )
        self.assertEqual(
            body(raw, parsed, "2"),
            b"This is explicitly typed plain US-ASCII text.\r\nIt DOES end with a linebreak.\r\n",
        )
        self.assertEqual(
            parsed.bodystructure,
            '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 80 1 NIL NIL NIL NIL)'
            '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 78 2 NIL NIL NIL NIL) "MIXED" '
            '("BOUNDARY" "simple boundary") NIL NIL NIL)',
        )
        self.assertEqual(parsed.date, 732787008 * 10**9)


class MalformedTests(SynchronousTestCase):
    def assertConsistent(self, raw, parsed):
        """Every range is ordered and inside the message; nested parts lie inside their parent's
        body."""
        self.assertEqual(parsed.size, len(raw))
        self.assertTrue(0 <= parsed.header_size <= parsed.size)
        for spec, entry in parsed.parts.items():
            self.assertTrue(
                0 <= entry["header_start"] <= entry["body_start"] <= entry["end"] <= len(raw),
                (spec, entry),
            )
            if "." in spec:
                parent = parsed.parts[spec.rsplit(".", 1)[0]]
                self.assertTrue(
                    parent["body_start"] <= entry["header_start"] and entry["end"] <= parent["end"],
                    (spec, entry, parent),
                )

    def test_missing_final_boundary(self):
        """Without a close delimiter the last part runs to the end of the message."""
        raw = (
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
        )
        parsed = parse_bytes(raw)
        self.assertConsistent(raw, parsed)
        self.assertEqual(body(raw, parsed, "1"), b"one")
        self.assertEqual(body(raw, parsed, "2"), b"two\r\n")
        self.assertEqual(parsed.parts["2"]["end"], len(raw))

    def test_preamble_and_epilogue_belong_to_no_part(self):
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\nPREAMBLE\n--b\n\nx\n--b--\nEPILOGUE\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertEqual(list(parsed.parts), ["1"])
        self.assertEqual(body(raw, parsed, "1"), b"x")

    def test_no_body(self):
        """A header and blank line with nothing after: part 1 is empty, header_size == size."""
        raw = b"Subject: empty\r\n\r\n"
        parsed = parse_bytes(raw)
        self.assertEqual(parsed.header_size, len(raw))
        self.assertEqual(
            parsed.parts["1"],
            {
                "header_start": len(raw),
                "body_start": len(raw),
                "end": len(raw),
                "type": "text/plain",
                "encoding": "",
                "leaf_index": 1,
            },
        )
        self.assertEqual(parsed.body, '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)')

    def test_no_blank_line(self):
        """Without a blank line the whole message is header."""
        raw = b"Subject: no body\r\nFrom: a@example.com"
        parsed = parse_bytes(raw)
        self.assertEqual(parsed.header_size, len(raw))
        self.assertEqual(parsed.subject, "no body")
        self.assertEqual(parsed.from_addresses, ["a@example.com"])
        self.assertConsistent(raw, parsed)

    def test_empty_message(self):
        parsed = parse_bytes(b"")
        self.assertEqual((parsed.size, parsed.header_size), (0, 0))
        self.assertEqual(parsed.envelope, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")

    def test_body_without_header(self):
        """A message starting with a blank line has an empty header."""
        raw = b"\r\nhello\r\n"
        parsed = parse_bytes(raw)
        self.assertEqual(parsed.header_size, 2)
        self.assertEqual(body(raw, parsed, "1"), b"hello\r\n")
        self.assertEqual(parsed.text_body_extract, "hello\r\n")

    def test_part_header_ended_by_delimiter(self):
        """A part whose header runs into the next delimiter has an empty body."""
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: image/gif\n"
            "--b\n\ntext\n--b--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertConsistent(raw, parsed)
        self.assertEqual(body(raw, parsed, "1"), b"")
        self.assertEqual(mime(raw, parsed, "1"), b"Content-Type: image/gif")
        self.assertEqual(body(raw, parsed, "2"), b"text")
        self.assertTrue(parsed.body.startswith('(("IMAGE" "GIF" NIL NIL NIL "7BIT" 0)'))

    def test_empty_parts(self):
        """Consecutive delimiters make empty parts, each inside the message."""
        raw = encode("Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\n\n--b--\n", "\r\n")
        parsed = parse_bytes(raw)
        self.assertConsistent(raw, parsed)
        self.assertEqual(list(parsed.parts), ["1", "2"])
        self.assertEqual(body(raw, parsed, "1"), b"")
        self.assertEqual(body(raw, parsed, "2"), b"")

    def test_delimiter_lookalikes(self):
        """Only ``--boundary`` followed by nothing, ``--`` or whitespace is a delimiter."""
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bx\n--b --\n-- b\n--b  \n\n"
            "two\n--b--  \n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertEqual(body(raw, parsed, "1"), b"--bx\r\n--b --\r\n-- b")
        self.assertEqual(body(raw, parsed, "2"), b"two")

    def test_outer_boundary_closes_inner_multipart(self):
        """An outer delimiter ends an inner multipart that never closed."""
        raw = encode(
            "Content-Type: multipart/mixed; boundary=outer\n\n--outer\n"
            "Content-Type: multipart/alternative; boundary=inner\n\n--inner\n\na\n"
            "--outer\n\nb\n--outer--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertConsistent(raw, parsed)
        self.assertEqual(body(raw, parsed, "1.1"), b"a")
        self.assertEqual(body(raw, parsed, "2"), b"b")

    def test_multipart_without_boundary_or_delimiters(self):
        """A multipart with no boundary, or no delimiter in its body, is an opaque leaf: BODY
        does not promise clients a structure that is not there."""
        for raw in (
            b"Content-Type: multipart/mixed\r\n\r\nhello\r\n",
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nhello\r\n",
        ):
            parsed = parse_bytes(raw)
            self.assertTrue(parsed.body.startswith('("APPLICATION" "OCTET-STREAM"'), parsed.body)
            self.assertEqual(body(raw, parsed, "1"), b"hello\r\n")

    def test_message_rfc822_single_part(self):
        """The body of a non-multipart encapsulated message is part n.1."""
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n"
            "Subject: inner\n\ninner body\n--b--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertEqual(body(raw, parsed, "1"), b"Subject: inner\r\n\r\ninner body")
        self.assertEqual(body(raw, parsed, "1.1"), b"inner body")
        self.assertEqual(mime(raw, parsed, "1.1"), b"")
        self.assertIn('(NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)', parsed.body)

    def test_top_level_message_rfc822(self):
        """A message whose own type is message/rfc822: part 1 is the encapsulated message."""
        raw = b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nbody"
        parsed = parse_bytes(raw)
        self.assertEqual(body(raw, parsed, "1"), b"Subject: in\r\n\r\nbody")
        self.assertEqual(body(raw, parsed, "1.1"), b"body")
        self.assertEqual(
            parsed.body,
            '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 19 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL) '
            '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 0) 2)',
        )

    def test_base64_message_rfc822_is_opaque(self):
        raw = (
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"Subject: x\r\n\r\ny")
        )
        parsed = parse_bytes(raw)
        self.assertTrue(
            parsed.body.startswith('("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64"')
        )
        self.assertEqual(list(parsed.parts), ["1"])

    def test_digest_default_type(self):
        """Parts of a multipart/digest default to message/rfc822."""
        raw = encode(
            "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertTrue(parsed.body.startswith('(("MESSAGE" "RFC822" NIL NIL NIL "7BIT"'))
        self.assertEqual(body(raw, parsed, "1.1"), b"body")

    def test_long_lines(self):
        """Lines far longer than a read chunk keep offsets exact and memory bounded."""
        long_line = b"x" * 300_000
        raw = (
            b"Subject: s\r\nX-Long: "
            + long_line
            + b"\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
            + long_line
            + b"\r\n--b--\r\n"
        )
        parsed = parse_bytes(raw)
        self.assertEqual(body(raw, parsed, "1"), long_line)
        self.assertEqual(parsed.headers["X-Long"], ["x" * 8192])

    def test_huge_header_block(self):
        """Past 1 MiB of header the next line starts the body."""
        line = b"X-Filler: " + b"y" * 1000 + b"\r\n"
        count = 1100
        raw = b"Subject: big\r\n" + line * count + b"\r\nbody\r\n"
        parsed = parse_bytes(raw)
        self.assertTrue(1024 * 1024 <= parsed.header_size < 1024 * 1024 + len(line))
        self.assertEqual((parsed.header_size - 14) % len(line), 0)
        self.assertEqual(parsed.subject, "big")
        self.assertEqual(len(parsed.headers["X-Filler"]), 499)
        self.assertConsistent(raw, parsed)


class TransferDecodingTests(SynchronousTestCase):
    def test_quoted_printable_latin1(self):
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
            "Content-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            "caf=E9 au lait, soft=\n break\n--b\n"
            "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes("<b>Grüße</b>".encode()).decode()
            + "--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a.txt\n"
            "Content-Transfer-Encoding: quoted-printable\n\na=3Db\n--b--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertEqual(parsed.text_body_extract, "café au lait, soft break")
        self.assertEqual(parsed.html_body_extract, "<b>Grüße</b>")
        self.assertEqual(
            parsed.attachments,
            [{"part_index": 3, "filename": "a.txt", "content_type": "text/plain", "size_bytes": 3}],
        )

    def test_extract_is_capped(self):
        raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "é".encode() * 20000
        parsed = parse_bytes(raw)
        self.assertEqual(parsed.text_body_extract, "é" * 4096)

    def test_attachment_without_filename_and_rfc2231_name(self):
        raw = encode(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nbody\n--b\n"
            "Content-Type: application/octet-stream\nContent-Disposition: attachment\n\n"
            "raw bytes\n--b\nContent-Type: image/png\n"
            "Content-Disposition: inline; filename*=utf-8''%E2%82%AC.png\n"
            "Content-Transfer-Encoding: base64\n\nAAAA\n--b--\n",
            "\r\n",
        )
        parsed = parse_bytes(raw)
        self.assertEqual(
            parsed.attachments,
            [
                {
                    "part_index": 2,
                    "filename": "",
                    "content_type": "application/octet-stream",
                    "size_bytes": 9,
                },
                {
                    "part_index": 3,
                    "filename": "€.png",
                    "content_type": "image/png",
                    "size_bytes": 3,
                },
            ],
        )
        self.assertEqual(parsed.text_body_extract, "body")
