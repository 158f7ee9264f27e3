"""Import sources built on disk for tests: a Maildir++ tree and mbox files, with LF line ends
as Unix mail tools write them, and the CRLF bytes haitatsu is expected to store for each."""

from __future__ import annotations

import os

import attrs


def lf_message(n: int, subject: str, extra: bytes = b"") -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.org>\n"
        f"To: alice@example.com\n"
        f"Subject: {subject}\n"
        f"Message-ID: <fixture-{n}@example.org>\n"
        f"Date: Mon, 1 Jan 2024 10:00:{n:02d} +0000\n"
        f"\n"
        f"Body of message {n}.\n"
    ).encode() + extra


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@attrs.frozen
class Expected:
    """One message a fixture holds: where it should land, with which flags and date."""

    folder: str
    data: bytes
    flags: frozenset
    internal_date: int | None


def _write(path: str, data: bytes, mtime: int | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def build_maildir(root: str) -> list[Expected]:
    """A Maildir++ at ``root``; the messages it holds, as haitatsu should import them."""
    base = 1_700_000_000 * 10**9
    expected = []

    def put(folder_dir, name, sub, n, subject, folder, flags, extra=b""):
        data = lf_message(n, subject, extra)
        mtime = base + n * 10**9
        directory = os.path.join(root, folder_dir) if folder_dir else root
        _write(os.path.join(directory, sub, name), data, mtime)
        expected.append(Expected(folder, crlf(data), frozenset(flags), mtime))

    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    put("", "1700000001.M1P1.host:2,S", "cur", 1, "seen", "INBOX", {"\\Seen"})
    put(
        "",
        "1700000002.M2P1.host:2,FRa",
        "cur",
        2,
        "flagged",
        "INBOX",
        {"\\Flagged", "\\Answered", "$Work"},
    )
    put("", "1700000003.M3P1.host", "new", 3, "new one", "INBOX", set())
    with open(os.path.join(root, "dovecot-keywords"), "w") as f:
        f.write("0 $Work\n1 Later\n")
    put(".Sent", "1700000004.M4P1.host:2,S", "cur", 4, "sent", "Sent", {"\\Seen"})
    put(
        ".Work.Projects",
        "1700000005.M5P1.host:2,D",
        "cur",
        5,
        "draft",
        "Work/Projects",
        {"\\Draft"},
    )
    put(".Spam", "1700000006.M6P1.host:2,ST", "cur", 6, "spam", "Junk", {"\\Seen", "\\Deleted"})
    # A folder name in IMAP's modified UTF-7, as Dovecot stores it: "Été".
    put(".&AMk-t&AOk-", "1700000007.M7P1.host:2,", "cur", 7, "summer", "Été", set())
    # A body that does not end in a line break, and a CRLF line among LF ones.
    put(
        "",
        "1700000008.M8P1.host:2,P",
        "cur",
        8,
        "forwarded",
        "INBOX",
        {"$Forwarded"},
        b"crlf line\r\nno final newline",
    )
    # An empty folder is imported as an empty folder.
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, ".Empty", d), exist_ok=True)
    # Not messages: dot files, and a link that leads out of the import directory.
    _write(os.path.join(root, "cur", ".hidden"), b"not a message\n")
    outside = os.path.join(os.path.dirname(os.path.dirname(root)), "outside.eml")
    _write(outside, b"Subject: secret\n\nsecret\n")
    os.symlink(outside, os.path.join(root, "cur", "1700000009.M9P1.host:2,S"))
    return expected


def mbox_entry(n: int, subject: str, from_line: str, status: str = "", x_status: str = ""):
    """``(bytes in the mbox, message as stored)`` of one mbox message."""
    message = lf_message(n, subject)
    extra = "".join(f"{k}: {v}\n" for k, v in (("Status", status), ("X-Status", x_status)) if v)
    if extra:
        head, body = message.split(b"\n\n", 1)
        message = head + b"\n" + extra.encode() + b"\n" + body
    return (from_line + "\n").encode() + message + b"\n", crlf(message)


def build_mbox(path: str) -> list[Expected]:
    """An mbox file at ``path``; its messages as haitatsu should import them (into INBOX)."""
    entries = [
        (
            mbox_entry(11, "read", "From a@example.org Sat Jan  3 01:05:34 1996", "RO"),
            {"\\Seen"},
            820631134,
        ),
        (
            mbox_entry(12, "answered", "From b@example.org Fri Jul  8 12:08:34 2011", "O", "AF"),
            {"\\Answered", "\\Flagged"},
            1310126914,
        ),
        (mbox_entry(13, "plain", "From MAILER-DAEMON Mon Feb  5 09:00:00 2024"), set(), 1707123600),
    ]
    _write(path, b"".join(raw for (raw, _), _, _ in entries))
    return [
        Expected("INBOX", stored, frozenset(flags), seconds * 10**9)
        for (_, stored), flags, seconds in entries
    ]
