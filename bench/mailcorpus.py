"""A generated mailbox for the IMAP benchmark: the same messages, byte for byte, from the same
seed, so haitatsu and its peer are loaded with one corpus without keeping it on disk.

The shapes and sizes follow what a working mailbox holds: mostly short text/plain mail and
multipart/alternative newsletters, some replies in threads, a share of messages with base64
attachments (a few of them large), and forwarded messages (message/rfc822). Sizes are drawn
from log-normal distributions; the mean comes out near 20 KB per message.

Two invented words are planted for SEARCH: ``SUBJECT_WORD`` in about 1% of subjects and
``BODY_WORD`` in about 1% of text bodies (never in headers), so the benchmark searches find a
known, small set of messages and any server that searches correctly finds the same ones.
"""

from __future__ import annotations

import base64
import email.utils
import math
import quopri
import random

SUBJECT_WORD = "quokkaplan"
BODY_WORD = "marzipanic"
DOMAIN = "bench.test"
#: 2024-01-01 00:00:00 UTC: internal dates run forward from here, one message every ~5 minutes.
EPOCH = 1_704_067_200

_SYLLABLES = (
    "ka ri to na me lo su vi da po ne ra ti mo ba lu se fi go ha ju ke ly wa zo "
    "an en in on un ar er ir or ul st pr tr gr bl ch sh th"
).split()
_COMMON = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her would "
    "make like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "meeting report project update team quarter budget review please thanks regards attached "
    "schedule customer invoice order shipping account release version plan notes draft"
).split()
_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy".split()
_LAST = "Smith Jones Tanaka Müller García Rossi Kowalski Novak Silva Dubois Cohen Ito".split()
_LISTS = ("dev", "announce", "users", "ops", "sales")
_ATTACHMENTS = (
    ("application/pdf", "report.pdf"),
    ("image/png", "screenshot.png"),
    ("image/jpeg", "photo.jpg"),
    ("application/zip", "archive.zip"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "figures.xlsx"),
)


class Corpus:
    """``message(i)`` is the i-th message (bytes, CRLF line ends), its flags and internal date;
    the same ``seed`` gives the same bytes."""

    def __init__(self, seed: int = 5):
        self.seed = seed
        rng = random.Random(seed)
        words = set()
        while len(words) < 3000:
            words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
        self.vocabulary = _COMMON * 6 + sorted(words)
        self.people = [
            (f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", f"user{n}@example{n % 40}.org")
            for n in range(400)
        ]

    def message(self, i: int) -> tuple[bytes, tuple[str, ...], int]:
        rng = random.Random(self.seed * 1_000_003 + i)
        date = EPOCH + i * 300 + rng.randint(0, 299)
        flags = []
        if rng.random() < 0.7:
            flags.append("\\Seen")
        if rng.random() < 0.1:
            flags.append("\\Answered")
        if rng.random() < 0.05:
            flags.append("\\Flagged")
        return self._build(rng, i, date), tuple(flags), date

    # -- building ---------------------------------------------------------------------------

    def _words(self, rng, n: int) -> str:
        return " ".join(rng.choice(self.vocabulary) for _ in range(n))

    def _paragraphs(self, rng, size: int, plant: bool) -> str:
        lines = []
        total = 0
        while total < size:
            line = self._words(rng, rng.randint(6, 12))
            lines.append(line[0].upper() + line[1:] + ".")
            total += len(line) + 3
            if rng.random() < 0.15:
                lines.append("")
        if plant:
            at = rng.randrange(len(lines))
            lines[at] = lines[at] + f" The {BODY_WORD} figures are in."
        return "\r\n".join(lines) + "\r\n"

    def _headers(self, rng, i, date, subject, content_type, extra=()) -> list[str]:
        sender = rng.choice(self.people)
        to = [("Bench Box", f"box@{DOMAIN}")]
        headers = []
        for hop in range(rng.randint(2, 4)):
            headers.append(
                f"Received: from mx{hop}.example{i % 40}.org (mx{hop}.example{i % 40}.org "
                f"[192.0.2.{(i + hop) % 250 + 1}])\r\n\tby mx.{DOMAIN} with ESMTPS id "
                f"{i:08x}{hop}; {email.utils.formatdate(date - hop * 7)}"
            )
        if rng.random() < 0.4:
            headers.append(
                "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1;\r\n"
                "\th=from:to:subject:date:message-id; bh="
                + base64.b64encode(rng.randbytes(32)).decode()
                + ";\r\n\tb="
                + base64.b64encode(rng.randbytes(128)).decode()
            )
        headers.append(f"From: {email.utils.formataddr(sender)}")
        headers.append("To: " + ", ".join(email.utils.formataddr(a) for a in to))
        if rng.random() < 0.3:
            cc = rng.sample(self.people, rng.randint(1, 3))
            headers.append("Cc: " + ", ".join(email.utils.formataddr(a) for a in cc))
        headers.append(f"Subject: {subject}")
        headers.append(f"Date: {email.utils.formatdate(date)}")
        headers.append(f"Message-ID: <{i}.{self.seed}@example{i % 40}.org>")
        if subject.startswith("Re: ") and i > 0:
            parent = rng.randrange(max(0, i - 50), i)
            headers.append(f"In-Reply-To: <{parent}.{self.seed}@example{parent % 40}.org>")
            headers.append(f"References: <{parent}.{self.seed}@example{parent % 40}.org>")
        if rng.random() < 0.15:
            name = rng.choice(_LISTS)
            headers.append(f"List-Id: {name} <{name}.lists.example.org>")
            headers.append(f"List-Unsubscribe: <mailto:{name}-leave@lists.example.org>")
        headers.append("MIME-Version: 1.0")
        headers.extend(extra)
        headers.append(f"Content-Type: {content_type}")
        return headers

    def _subject(self, rng) -> str:
        subject = self._words(rng, rng.randint(3, 8)).capitalize()
        if rng.random() < 0.01:
            words = subject.split()
            words.insert(rng.randrange(len(words) + 1), SUBJECT_WORD)
            subject = " ".join(words)
        if rng.random() < 0.25:
            subject = "Re: " + subject
        return subject

    def _text_part(self, rng, size: int, plant: bool) -> tuple[str, str]:
        """(headers, body) of a text/plain leaf, 7bit or quoted-printable."""
        text = self._paragraphs(rng, size, plant)
        if rng.random() < 0.3:
            body = quopri.encodestring(text.encode("utf-8")).decode("ascii")
            body = body.replace("\r\n", "\n").replace("\n", "\r\n")
            return (
                'Content-Type: text/plain; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n",
                body,
            )
        return 'Content-Type: text/plain; charset="us-ascii"\r\n', text

    def _html_part(self, rng, size: int, plant: bool) -> tuple[str, str]:
        paragraphs = self._paragraphs(rng, size, plant).split("\r\n")
        html = "<html><body>\r\n" + "\r\n".join(
            f'<p style="margin:0 0 8px 0">{p}</p>' for p in paragraphs if p
        )
        html += "\r\n</body></html>\r\n"
        return 'Content-Type: text/html; charset="utf-8"\r\n', html

    def _attachment(self, rng, size: int) -> tuple[str, str]:
        content_type, name = rng.choice(_ATTACHMENTS)
        data = base64.encodebytes(rng.randbytes(size)).decode("ascii").replace("\n", "\r\n")
        return (
            f'Content-Type: {content_type}; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n",
            data,
        )

    @staticmethod
    def _multipart(subtype: str, boundary: str, parts) -> tuple[str, str]:
        body = "This is a multi-part message in MIME format.\r\n"
        for headers, content in parts:
            body += f"\r\n--{boundary}\r\n{headers}\r\n{content}"
        body += f"\r\n--{boundary}--\r\n"
        return f'multipart/{subtype}; boundary="{boundary}"', body

    def _build(self, rng, i: int, date: int) -> bytes:
        subject = self._subject(rng)
        plant = rng.random() < 0.01
        text_size = int(min(60_000, max(200, rng.lognormvariate(math.log(1800), 0.9))))
        shape = rng.random()
        boundary = f"=_bench_{i}_{rng.getrandbits(32):08x}"
        extra = ()
        if shape < 0.55:
            part_headers, body = self._text_part(rng, text_size, plant)
            lines = part_headers.rstrip("\r\n").split("\r\n")
            content_type, extra = lines[0].split(": ", 1)[1], lines[1:]
        elif shape < 0.80:
            content_type, body = self._multipart(
                "alternative",
                boundary,
                [
                    self._text_part(rng, text_size, plant),
                    self._html_part(rng, text_size, plant),
                ],
            )
        elif shape < 0.97:
            parts = [self._text_part(rng, text_size, plant)]
            for _ in range(1 if rng.random() < 0.75 else 2):
                attachment = int(min(2_000_000, rng.lognormvariate(math.log(40_000), 1.0)))
                parts.append(self._attachment(rng, attachment))
            content_type, body = self._multipart("mixed", boundary, parts)
        else:
            inner_headers = self._headers(
                rng, i + 7, date - 86400, self._subject(rng), 'text/plain; charset="us-ascii"'
            )
            inner = "\r\n".join(inner_headers) + "\r\n\r\n" + self._paragraphs(rng, 1500, False)
            content_type, body = self._multipart(
                "mixed",
                boundary,
                [
                    self._text_part(rng, 400, plant),
                    ("Content-Type: message/rfc822\r\n", inner),
                ],
            )
            subject = "Fwd: " + subject
        headers = self._headers(rng, i, date, subject, content_type, extra)
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")
