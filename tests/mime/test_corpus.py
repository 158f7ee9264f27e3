"""The parser over CPython's email test corpus (real and malformed messages), and over a large
generated message for memory."""

import base64
import email
import os
import random
import re
import tempfile
import tracemalloc
from email import policy

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from haitatsu.mime import MessageParser, parse_bytes, parse_file


def corpus_files():
    try:
        import test.test_email
    except ImportError as error:  # pragma: no cover - depends on the interpreter build
        raise SkipTest(f"CPython's email test data is not installed: {error}") from error
    directory = os.path.join(os.path.dirname(test.test_email.__file__), "data")
    names = sorted(name for name in os.listdir(directory) if name.startswith("msg_"))
    return [os.path.join(directory, name) for name in names]


_ATOM = re.compile(rb"NIL|\d+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00\x80-\xff]|\\["\\])*)"')
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


def read_wire(data):
    """Read one parenthesized IMAP value strictly (RFC 3501 section 9 grammar for strings,
    NIL, numbers and lists, with single spaces between list items); raise ValueError on any
    deviation. Twisted's reader is not used because it mishandles ``"a\\\\"``."""

    def value(pos):
        if data[pos : pos + 1] == b"(":
            items = []
            pos += 1
            while data[pos : pos + 1] != b")":
                if items and data[pos : pos + 1] == b" ":
                    pos += 1
                item, pos = value(pos)
                items.append(item)
            return items, pos + 1
        for pattern in (_QUOTED, _ATOM):
            match = pattern.match(data, pos)
            if match:
                return match.group(0), match.end()
        match = _LITERAL.match(data, pos)
        if match:
            end = match.end() + int(match.group(1))
            if end > len(data):
                raise ValueError(f"literal past the end at {pos}")
            return data[match.end() : end], end
        raise ValueError(f"unexpected {data[pos : pos + 20]!r} at {pos}")

    result, pos = value(0)
    if pos != len(data) or not isinstance(result, list):
        raise ValueError(f"trailing data at {pos}")
    return result


def python_parts(message, prefix, out):
    """Number the parts of an ``email`` message tree the IMAP way, for comparison."""
    if message.get_content_maintype() == "multipart" and isinstance(message.get_payload(), list):
        for number, child in enumerate(message.get_payload(), 1):
            spec = f"{prefix}.{number}" if prefix else str(number)
            out[spec] = child
            _python_child(child, spec, out)
        return
    spec = f"{prefix}.1" if prefix else "1"
    out[spec] = message
    _python_child(message, spec, out)


def _python_child(child, spec, out):
    payload = child.get_payload()
    if child.get_content_maintype() == "multipart" and isinstance(payload, list):
        for number, grandchild in enumerate(payload, 1):
            out[f"{spec}.{number}"] = grandchild
            _python_child(grandchild, f"{spec}.{number}", out)
    elif child.get_content_type() == "message/rfc822" and isinstance(payload, list):
        python_parts(payload[0], spec, out)


#: Messages Python's parser reads without a defect where IMAP's view differs on purpose:
#: msg_37 has consecutive delimiters, which RFC 2046 makes empty body parts (Python drops them).
DIFFERS_ON_PURPOSE = {"msg_37.txt"}


class CorpusTests(SynchronousTestCase):
    def test_every_message_parses_consistently(self):
        """No exception; file and memory parses agree; every range is ordered, inside the file
        and inside its parent's body; the wire strings are well-formed IMAP."""
        files = corpus_files()
        self.assertGreater(len(files), 40)
        for path in files:
            with open(path, "rb") as stream:
                raw = stream.read()
            parsed = parse_file(path)
            name = os.path.basename(path)
            self.assertEqual(parsed, parse_bytes(raw), name)
            self.assertEqual(parsed.size, len(raw), name)
            self.assertTrue(0 <= parsed.header_size <= len(raw), name)
            self.assertIn("1", parsed.parts, name)
            for spec, entry in parsed.parts.items():
                self.assertTrue(
                    0 <= entry["header_start"] <= entry["body_start"] <= entry["end"] <= len(raw),
                    (name, spec, entry),
                )
                if "text_start" in entry:
                    self.assertTrue(entry["body_start"] <= entry["text_start"] <= entry["end"])
                if "." in spec:
                    parent = parsed.parts[spec.rsplit(".", 1)[0]]
                    self.assertTrue(parent["body_start"] <= entry["header_start"], (name, spec))
                    self.assertTrue(entry["end"] <= parent["end"], (name, spec))
            for wire in (parsed.envelope, parsed.body, parsed.bodystructure):
                read_wire(wire.encode("utf-8"))

    def test_agrees_with_python_email_on_well_formed_messages(self):
        """Where Python's parser finds no defect, the same parts exist and each leaf's body is
        the same bytes."""
        compared = 0
        for path in corpus_files():
            name = os.path.basename(path)
            with open(path, "rb") as stream:
                raw = stream.read()
            message = email.message_from_bytes(raw, policy=policy.compat32)
            if name in DIFFERS_ON_PURPOSE or any(part.defects for part in message.walk()):
                continue
            theirs = {}
            python_parts(message, "", theirs)
            ours = parse_bytes(raw).parts
            self.assertEqual(set(ours), set(theirs), name)
            for spec, part in theirs.items():
                if part.is_multipart():
                    continue
                entry = ours[spec]
                content = raw[entry["body_start"] : entry["end"]]
                self.assertEqual(
                    content.decode("ascii", "surrogateescape"), part.get_payload(), (name, spec)
                )
            compared += 1
        self.assertGreater(compared, 35)


_MUTATIONS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"--",
    b"\n\n",
    b"\x00",
    b"\xff\xfe",
    b":",
    b";",
    b'"',
    b"(",
    b")",
    b"<",
    b">",
    b"@",
    b",",
    b" ",
    b"\\",
    b"=?utf-8?b?",
    b"?=",
    b"=\n",
    b"=4",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Type: message/rfc822\n\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"charset=base64",
    b"charset=idna",
    b"filename*0*=utf-8''%E2",
]


class FuzzTests(SynchronousTestCase):
    def test_mutated_corpus(self):
        """Randomly damaged corpus messages (fixed seed) never raise, and their ranges and wire
        strings stay valid."""
        seeds = []
        for path in corpus_files():
            with open(path, "rb") as stream:
                seeds.append(stream.read())
        rng = random.Random(20240601)
        for _ in range(400):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 20)):
                pos = rng.randint(0, len(data))
                choice = rng.random()
                if choice < 0.5:
                    data[pos:pos] = rng.choice(_MUTATIONS)
                elif choice < 0.7:
                    del data[pos : pos + rng.randint(1, 50)]
                elif choice < 0.85 and data:
                    start = rng.randrange(len(data))
                    data[pos:pos] = data[start : start + rng.randint(1, 200)]
                else:
                    data[pos:pos] = rng.randbytes(rng.randint(1, 10))
            raw = bytes(data)
            parsed = parse_bytes(raw)
            self.assertEqual(parsed.size, len(raw))
            for spec, entry in parsed.parts.items():
                self.assertTrue(
                    0 <= entry["header_start"] <= entry["body_start"] <= entry["end"] <= len(raw),
                    (raw, spec, entry),
                )
            for wire in (parsed.envelope, parsed.body, parsed.bodystructure):
                read_wire(wire.encode("utf-8"))


class MemoryTests(SynchronousTestCase):
    def test_large_attachment_bounded_memory(self):
        """A ~30 MB message with a base64 attachment parses in a few hundred kB of memory, and
        the attachment's decoded size is still right."""
        chunk = os.urandom(57 * 1024)
        encoded = base64.encodebytes(chunk).replace(b"\n", b"\r\n")
        repeats = 400
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as stream:
            path = stream.name
            self.addCleanup(os.unlink, path)
            stream.write(
                b"From: big@example.com\r\nSubject: big\r\n"
                b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
                b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
                b"--XX\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=big.bin\r\n\r\n"
            )
            start = stream.tell()
            for _ in range(repeats):
                stream.write(encoded)
            end = stream.tell() - 2
            stream.write(b"--XX--\r\n")
        self.assertGreater(os.path.getsize(path), 30_000_000)
        tracemalloc.start()
        try:
            parsed = parse_file(path)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 2 * 1024 * 1024)
        self.assertEqual(parsed.parts["2"]["body_start"], start)
        self.assertEqual(parsed.parts["2"]["end"], end)
        self.assertEqual(parsed.attachments[0]["size_bytes"], len(chunk) * repeats)
        self.assertEqual(parsed.text_body_extract, "see attached")


class _LineByLine(MessageParser):
    """The parser reading every line on its own: what taking runs of body lines at once
    (``MessageParser._bulk``) must agree with exactly."""

    _BULK = False


def _parse_chunked(parser_class, raw, size):
    parser = parser_class()
    for start in range(0, len(raw), size):
        parser.feed(raw[start : start + size])
    return parser.close()


class BulkLinesTests(SynchronousTestCase):
    """Runs of body, preamble and epilogue lines are taken at once (one ``find`` for the next
    line that could be a delimiter, one ``count`` of line ends): the result is the line-by-line
    parser's, field for field, whatever the chunking and however damaged the message."""

    sizes = (1, 7, 64, 4096, 1 << 20)

    def assert_same(self, raw, label):
        expected = _parse_chunked(_LineByLine, raw, 1 << 20)
        for size in self.sizes:
            self.assertEqual(_parse_chunked(MessageParser, raw, size), expected, (label, size))

    def test_corpus(self):
        for path in corpus_files():
            with open(path, "rb") as stream:
                self.assert_same(stream.read(), os.path.basename(path))

    def test_mutated_corpus(self):
        seeds = []
        for path in corpus_files():
            with open(path, "rb") as stream:
                seeds.append(stream.read())
        rng = random.Random(20261122)
        self.sizes = (3, 64, 1 << 20)
        for number in range(150):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 20)):
                pos = rng.randint(0, len(data))
                data[pos:pos] = rng.choice(_MUTATIONS)
            self.assert_same(bytes(data), number)

    def test_line_ends_and_encodings(self):
        """CRLF, LF, bare CR and mixed line ends; base64 and quoted-printable bodies whose
        decoded sizes and extracts come from the sink; a delimiter lookalike in a body; a line
        longer than a segment; no final line end."""
        body64 = base64.encodebytes(bytes(range(256)) * 40)
        qp = b"caf=C3=A9 =\r\nsoft break\r\nline two=20\r\n" * 50
        long_line = b"x" * (70 * 1024)
        self.sizes = (7, 64, 4096, 1 << 20)
        for eol in (b"\r\n", b"\n", b"\r", b"\r\n\n"):
            raw = (
                b"From: a@example.org\r\nSubject: bulk\r\n"
                b"Content-Type: multipart/mixed; boundary=BB\r\n\r\npreamble\r\n--B\r\n"
                b"--BB\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                + qp
                + b"--BBnot a delimiter\r\n-- BB\r\n"
                + b"--BB\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=a.bin\r\n\r\n"
                + body64.replace(b"\n", eol)
                + b"--BB\r\nContent-Type: text/html\r\n\r\n<p>"
                + long_line
                + b"</p>\r\n--BB--\r\nepilogue\r\n--BB\r\ntrailing"
            )
            self.assert_same(raw, eol)
            self.assert_same(b"Subject: plain\n\n" + raw.replace(b"\r\n", eol), eol)
