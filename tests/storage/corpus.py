"""Messages for byte-exact storage tests: CPython's email test data (real and malformed MIME)
plus generated messages with large attachments, odd line endings and broken structure.

Each is ``(name, bytes)``. With a low ``attachment_dedup_threshold`` most of them are stored as a
skeleton plus part blobs, which is what the reassembly tests need.
"""

from __future__ import annotations

import base64
import binascii
import os
import random

#: The threshold the tests deliver the corpus with: small enough to split most messages.
LOW_THRESHOLD = 64


def cpython_corpus() -> list[tuple[str, bytes]]:
    try:
        import test.test_email
    except ImportError:  # pragma: no cover - depends on the interpreter build
        return []
    directory = os.path.join(os.path.dirname(test.test_email.__file__), "data")
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("msg_"):
            with open(os.path.join(directory, name), "rb") as f:
                out.append((name, f.read()))
    return out


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def b64(data: bytes, eol: bytes = b"\r\n", width: int = 76) -> bytes:
    """Base64 wrapped at ``width`` characters, the way mail clients write it."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + width] + eol for i in range(0, len(encoded), width))


def qp(data: bytes, eol: bytes = b"\r\n") -> bytes:
    return binascii.b2a_qp(data, istext=False).replace(b"\n", eol)


def attachment_message(
    attachment: bytes,
    subject: str = "Report",
    text: str = "See attached.",
    eol: bytes = b"\r\n",
    filename: str = "report.bin",
) -> bytes:
    """multipart/mixed: a text part and ``attachment`` (already encoded, base64)."""
    lines = [
        b"From: Dave <dave@example.test>",
        b"To: alice@example.test",
        b"Subject: " + subject.encode(),
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="b1"',
        b"",
        b"--b1",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        text.encode(),
        b"--b1",
        b"Content-Type: application/octet-stream; name=" + filename.encode(),
        b"Content-Disposition: attachment; filename=" + filename.encode(),
        b"Content-Transfer-Encoding: base64",
        b"",
    ]
    return eol.join(lines) + eol + attachment + b"--b1--" + eol


def generated_corpus() -> list[tuple[str, bytes]]:
    big = b64(payload(3000, 1))
    other = b64(payload(2000, 2))
    text_qp = qp(("Grüße, " * 300).encode())
    crlf = b"\r\n"
    out = []
    out.append(("base64-attachment", attachment_message(big)))
    out.append(
        (
            "quoted-printable-attachment",
            b"From: a@example.test\r\nSubject: qp\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n'
            b"--q\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            b"--q\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Disposition: attachment; filename=notes.txt\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + text_qp + b"\r\n--q--\r\n",
        )
    )
    out.append(
        (
            "nested-multipart",
            b"From: a@example.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
            b"preamble\r\n--outer\r\n"
            b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
            b"--inner\r\nContent-Type: text/plain\r\n\r\n" + b"plain text " * 20 + b"\r\n"
            b"--inner\r\nContent-Type: text/html\r\n\r\n<p>" + b"html " * 30 + b"</p>\r\n"
            b"--inner--\r\n"
            b"--outer\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=a.png\r\n\r\n" + big + b"--outer\r\n"
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + other
            + b"--outer--\r\nepilogue\r\n",
        )
    )
    inner = attachment_message(other, subject="inner", filename="inner.bin")
    out.append(
        (
            "rfc822-with-attachment",
            b"From: a@example.test\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="fw"\r\n\r\n'
            b"--fw\r\nContent-Type: text/plain\r\n\r\nForwarding this.\r\n"
            b"--fw\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--fw\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + big
            + b"--fw--\r\n",
        )
    )
    out.append(("lf-only", attachment_message(b64(payload(1500, 3), b"\n"), eol=b"\n")))
    mixed = attachment_message(big).replace(b"Subject: Report\r\n", b"Subject: Report\n")
    mixed = mixed.replace(b"--b1\r\nContent-Type: text/plain", b"--b1\rContent-Type: text/plain")
    mixed = mixed.replace(b"\r\n--b1--\r\n", b"\n--b1--\n", 1) + b"trailing\r"
    out.append(("mixed-line-endings", mixed))
    out.append(("missing-final-boundary", attachment_message(big)[: -len(b"--b1--\r\n")]))
    truncated = attachment_message(big)
    out.append(("truncated-base64", truncated[: truncated.index(big) + len(big) // 2 + 3]))
    out.append(
        (
            "single-part-base64",
            b"From: a@example.test\r\nSubject: one part\r\nContent-Type: application/zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + big,
        )
    )
    out.append(
        (
            "same-attachment-twice",
            b"From: a@example.test\r\nSubject: twice\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="t"\r\n\r\n'
            b"--t\r\nContent-Transfer-Encoding: base64\r\n\r\n" + big + b"--t\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + big + b"--t--\r\n",
        )
    )
    out.append(("no-trailing-newline", attachment_message(big).rstrip(b"\r\n")))
    out.append(("headers-only", b"From: a@example.test\r\nSubject: empty" + crlf))
    out.append(("body-only-no-headers", b"\r\n" + big))
    out.append(("nul-and-8bit", attachment_message(big).replace(b"See attached.", b"\x00\xff\xfe")))
    return out


def full_corpus() -> list[tuple[str, bytes]]:
    return cpython_corpus() + generated_corpus()
