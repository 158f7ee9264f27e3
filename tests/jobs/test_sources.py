"""The parts of imports that need no store: checking a request's source, folder names, maildir
flags, mbox headers and dates, IMAP dates, and the spool copy that makes LF line ends CRLF."""

from __future__ import annotations

import io
import os

from twisted.trial import unittest

from haitatsu.jobs import spool
from haitatsu.jobs.folders import LocalFolder, import_order, local_folder, skipped
from haitatsu.jobs.imap import parse_internal_date, quoted
from haitatsu.jobs.maildir import flags_of, split_name
from haitatsu.jobs.mbox import flags_from_headers, from_line_date
from haitatsu.jobs.sources import SourceInvalid, check_source, redacted, resolve_path


class CheckSourceTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(os.path.join(self.root, "alice", "Maildir"))

    def code(self, source_type, source, root=None):
        try:
            check_source(source_type, source, self.root if root is None else root)
        except SourceInvalid as e:
            return e.code, e.message
        return None

    def test_source_type_required_and_invalid(self):
        self.assertEqual(self.code(None, {})[0], "source_type_required")
        self.assertEqual(self.code("", {})[0], "source_type_required")
        self.assertEqual(self.code("pop3", {})[0], "source_type_invalid")
        self.assertEqual(self.code(7, {})[0], "source_type_invalid")

    def test_required_keys(self):
        self.assertEqual(self.code("zip", {})[0], "source_invalid")
        self.assertIsNone(self.code("zip", {"object_key": "imports/a.zip"}))
        self.assertIsNone(self.code("zip", {"key": "imports/a.zip"}))
        self.assertEqual(self.code("imap", {})[0], "source_invalid")
        self.assertEqual(self.code("imap", {"addr": "imap.example.com"})[0], "source_invalid")
        self.assertIsNone(self.code("imap", {"addr": "imap.example.com:993"}))
        self.assertIsNone(self.code("imap", {"addr": "[::1]:143", "tls": False}))
        self.assertEqual(self.code("imap", {"addr": "h:1", "tls": "no"})[0], "source_invalid")
        self.assertEqual(self.code("imap", {"addr": "h:1", "mailboxes": "x"})[0], "source_invalid")
        self.assertEqual(
            self.code("imap", {"addr": "h:1", "password": "a\r\nb"})[0], "source_invalid"
        )
        self.assertEqual(self.code("maildir", {})[0], "source_invalid")
        self.assertEqual(self.code("maildir", None)[0], "source_invalid")
        self.assertEqual(self.code("imap", [])[0], "source_invalid")

    def test_zip_key_cannot_reach_blobs(self):
        for key in ("../x", "/exports/x", "blobs/ab/x", "ab/cd", "tmp/x", "a//b", "a/./b"):
            self.assertEqual(self.code("zip", {"object_key": key})[0], "source_invalid", key)

    def test_paths_stay_inside_the_import_root(self):
        self.assertIsNone(self.code("maildir", {"path": "alice/Maildir"}))
        inside = os.path.join(os.path.abspath(self.root), "alice", "Maildir")
        self.assertIsNone(self.code("mbox", {"path": inside}))
        for path in ("../", "alice/../../etc", "/etc", "/", "..", "x\x00y"):
            code, message = self.code("maildir", {"path": path})
            self.assertEqual(code, "source_invalid", path)
        # A symbolic link inside the root that leads out of it.
        os.symlink("/etc", os.path.join(self.root, "escape"))
        self.assertEqual(self.code("maildir", {"path": "escape"})[0], "source_invalid")
        # The link is followed before "..", as the kernel does: this is /alice/Maildir.
        self.assertEqual(
            self.code("maildir", {"path": "escape/../alice/Maildir"})[0], "source_invalid"
        )

    def test_paths_are_refused_without_a_root(self):
        code, message = self.code("maildir", {"path": "alice/Maildir"}, root="")
        self.assertEqual(code, "source_invalid")
        self.assertIn("imports.root", message)

    def test_resolve_path_is_absolute(self):
        resolved = resolve_path("alice/Maildir", self.root)
        self.assertEqual(resolved, os.path.realpath(os.path.join(self.root, "alice", "Maildir")))

    def test_redacted(self):
        source = {"addr": "h:1", "username": "u", "password": "p", "token": "t", "x": 1}
        self.assertEqual(
            redacted(source),
            {
                "addr": "h:1",
                "username": "u",
                "password": "[redacted]",
                "token": "[redacted]",
                "x": 1,
            },
        )


class FolderNameTests(unittest.SynchronousTestCase):
    def test_special_use_wins(self):
        self.assertEqual(
            local_folder(["Gesendet"], ["\\HasNoChildren", "\\Sent"]), LocalFolder("Sent", "\\Sent")
        )
        self.assertEqual(
            local_folder(["[Gmail]", "All Mail"], ["\\All"]), LocalFolder("Archive", "\\Archive")
        )

    def test_well_known_names(self):
        cases = {
            ("Sent Items",): ("Sent", "\\Sent"),
            ("sent-mail",): ("Sent", "\\Sent"),
            ("Spam",): ("Junk", "\\Junk"),
            ("Junk E-mail",): ("Junk", "\\Junk"),
            ("Deleted Items",): ("Trash", "\\Trash"),
            ("INBOX", "Drafts"): ("Drafts", "\\Drafts"),
            ("[Gmail]", "Spam"): ("Junk", "\\Junk"),
            ("inbox",): ("INBOX", ""),
            ("Archives",): ("Archive", "\\Archive"),
        }
        for levels, expected in cases.items():
            self.assertEqual(local_folder(levels), LocalFolder(*expected), levels)

    def test_other_names_keep_their_hierarchy(self):
        self.assertEqual(local_folder(["Work", "Projects"]), LocalFolder("Work/Projects"))
        self.assertEqual(local_folder(["Inbox", "Lists"]), LocalFolder("INBOX/Lists"))
        self.assertEqual(local_folder(["Work", "Sent"]), LocalFolder("Work/Sent"))
        self.assertEqual(local_folder(["a/b", "..", "c\x01d", ""]), LocalFolder("a_b/__/c d"))
        self.assertEqual(local_folder([]), LocalFolder("INBOX"))

    def test_skipped_and_order(self):
        self.assertTrue(skipped(["\\Noselect"]))
        self.assertTrue(skipped(["\\Flagged"]))
        self.assertFalse(skipped(["\\HasChildren", "\\Sent"]))
        names = [("Work", ()), ("[Gmail]/All Mail", ("\\All",)), ("INBOX", ()), ("Archive", ())]
        ordered = sorted(names, key=lambda n: import_order(*n))
        self.assertEqual([n for n, _ in ordered], ["INBOX", "Archive", "Work", "[Gmail]/All Mail"])


class MaildirNameTests(unittest.SynchronousTestCase):
    def test_flags(self):
        self.assertEqual(split_name("1234.M1.host:2,FRS"), ("1234.M1.host", "FRS"))
        self.assertEqual(split_name("1234.M1.host!2,S"), ("1234.M1.host", "S"))
        self.assertEqual(split_name("1234.M1.host"), ("1234.M1.host", ""))
        self.assertEqual(
            flags_of("DFPRSTab", {"a": "$Work", "b": "Later"}),
            (
                "\\Draft",
                "\\Flagged",
                "$Forwarded",
                "\\Answered",
                "\\Seen",
                "\\Deleted",
                "$Work",
                "Later",
            ),
        )
        self.assertEqual(flags_of("Sz", {}), ("\\Seen",))


class MboxTests(unittest.SynchronousTestCase):
    def test_from_line_dates(self):
        self.assertEqual(
            from_line_date(b"From alice@example.org Sat Jan  3 01:05:34 1996\n"),
            820631134 * 10**9,
        )
        self.assertEqual(
            from_line_date(b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n"), 1310126914 * 10**9
        )
        self.assertIsNone(from_line_date(b"From nobody\n"))

    def test_status_headers(self):
        self.assertEqual(
            flags_from_headers({"status": "RO", "x-status": "AF"}),
            ("\\Seen", "\\Answered", "\\Flagged"),
        )
        self.assertEqual(flags_from_headers({"status": "O"}), ())
        self.assertEqual(flags_from_headers({"x-status": "DT"}), ("\\Deleted", "\\Draft"))


class IMAPPartsTests(unittest.SynchronousTestCase):
    def test_internal_date(self):
        self.assertEqual(parse_internal_date("17-Jul-1996 02:44:25 -0700"), 837596665 * 10**9)
        self.assertEqual(parse_internal_date(" 7-Feb-1994 21:52:25 +0000"), 760657945 * 10**9)
        for bad in (
            "",
            "yesterday",
            "31-Foo-2020 00:00:00 +0000",
            None,
            "32-Jan-2020 00:00:00 +0000",
        ):
            self.assertIsNone(parse_internal_date(bad), bad)

    def test_quoted(self):
        self.assertEqual(quoted('p"a\\ss'), b'"p\\"a\\\\ss"')


class SpoolCopyTests(unittest.SynchronousTestCase):
    def copy(self, data: bytes, crlf=True, limit=10**6, chunk=None) -> bytes:
        directory = self.mktemp()
        os.makedirs(directory)
        if chunk is not None:
            self.patch(spool, "CHUNK", chunk)
        path = spool.copy_to_spool(io.BytesIO(data), directory, limit, crlf)
        with open(path, "rb") as f:
            return f.read()

    def test_lone_lf_becomes_crlf_and_the_rest_stays(self):
        data = b"Subject: x\nA: b\r\n\nline\rnot an end\r\nend\n"
        expected = b"Subject: x\r\nA: b\r\n\r\nline\rnot an end\r\nend\r\n"
        self.assertEqual(self.copy(data), expected)
        # Whatever the chunk boundaries (a CRLF split between two reads among them).
        for size in range(1, 12):
            self.assertEqual(self.copy(data, chunk=size), expected, size)
        self.assertEqual(self.copy(b"ends with CR\r"), b"ends with CR\r")

    def test_verbatim_copy(self):
        data = b"a\nb\r\n" + bytes(range(256))
        self.assertEqual(self.copy(data, crlf=False), data)

    def test_too_large_leaves_no_file(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with self.assertRaises(spool.TooLarge):
            spool.copy_to_spool(io.BytesIO(b"x\n" * 100), directory, 150, True)
        with self.assertRaises(spool.TooLarge):
            spool.copy_to_spool(io.BytesIO(b"x" * 100), directory, 99, False)
        self.assertEqual(os.listdir(directory), [])
