"""Pure parsing: tokenizer, sequence sets, dates, FETCH items, header field selection."""

from __future__ import annotations

from twisted.trial import unittest

from haitatsu.imap.fetch import Section, header_fields, parse_fetch_items, window
from haitatsu.imap.wire import (
    Atom,
    IMAPSyntaxError,
    SpooledLiteral,
    String,
    literal_marker,
    parse_date_time,
    parse_sequence_set,
    resolve_sequence_set,
    tokenize,
)


class TokenizeTests(unittest.SynchronousTestCase):
    def test_atoms_strings_lists_and_sections(self):
        tokens = tokenize([b'1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>) "a \\"b\\""'])
        self.assertEqual(
            tokens,
            [
                b"1:*",
                [b"FLAGS", b'BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>'],
                b'a "b"',
            ],
        )
        self.assertIsInstance(tokens[0], Atom)
        self.assertIsInstance(tokens[2], String)

    def test_literals_between_segments(self):
        spooled = SpooledLiteral(path="/tmp/x", size=3)
        tokens = tokenize([b"INBOX (\\Seen) ", spooled, b""])
        self.assertEqual(tokens, [b"INBOX", [b"\\Seen"], spooled])
        tokens = tokenize([b"", String(b"us er"), b" ", String(b"p\r\nw"), b""])
        self.assertEqual(tokens, [b"us er", b"p\r\nw"])

    def test_errors(self):
        for bad in (b"(a", b"a)", b'"open', b"a{3}b", b"x[y", b'"bad \\x escape"'):
            self.assertRaises(IMAPSyntaxError, tokenize, [bad])

    def test_literal_marker(self):
        self.assertEqual(literal_marker(b"a LOGIN {5}"), (5, True, 8))
        self.assertEqual(literal_marker(b"a APPEND x {12+}"), (12, False, 11))
        self.assertIsNone(literal_marker(b'a LOGIN "{5}"'))


class SequenceSetTests(unittest.SynchronousTestCase):
    def test_parse(self):
        self.assertEqual(
            parse_sequence_set(b"1,3:5,7:*,*"), [(1, 1), (3, 5), (7, None), (None, None)]
        )
        for bad in (b"", b"0", b"1:2:3", b"a", b"1,,2", b"4294967296"):
            self.assertRaises(IMAPSyntaxError, parse_sequence_set, bad)

    def test_resolve_by_sequence_number(self):
        uids = [10, 20, 30, 40]
        self.assertEqual(resolve_sequence_set(parse_sequence_set(b"2:*"), uids, False), [1, 2, 3])
        self.assertEqual(resolve_sequence_set(parse_sequence_set(b"*:3"), uids, False), [2, 3])
        self.assertEqual(
            resolve_sequence_set(parse_sequence_set(b"4,1,1:2"), uids, False), [0, 1, 3]
        )
        self.assertEqual(resolve_sequence_set(parse_sequence_set(b"9:12"), uids, False), [])
        self.assertEqual(resolve_sequence_set(parse_sequence_set(b"1:*"), [], False), [])

    def test_resolve_by_uid_with_huge_ranges(self):
        uids = [1, 4_000_000_000, 4_294_967_295]
        ranges = parse_sequence_set(b"1:4294967295")
        self.assertEqual(resolve_sequence_set(ranges, uids, True), [0, 1, 2])
        # n:* with n past the last UID still names the last message (RFC 3501 6.4.8)
        self.assertEqual(
            resolve_sequence_set(parse_sequence_set(b"4294967295:*"), [5, 9], True), [1]
        )
        self.assertEqual(resolve_sequence_set(parse_sequence_set(b"2:3999999999"), uids, True), [])


class DateTests(unittest.SynchronousTestCase):
    def test_date_time(self):
        self.assertEqual(parse_date_time(b" 8-Feb-1994 06:52:25 +0100"), 760_686_745 * 10**9)
        self.assertEqual(parse_date_time(b"07-Feb-1994 21:52:25 -0800"), 760_686_745 * 10**9)
        for bad in (b"8-Foo-1994 06:52:25 +0100", b"31-Feb-1994 00:00:00 +0000", b"8-Feb-1994"):
            self.assertRaises(IMAPSyntaxError, parse_date_time, bad)


class FetchItemTests(unittest.SynchronousTestCase):
    def parse(self, text: bytes):
        return parse_fetch_items(tokenize([text]))

    def test_macros_and_simple_items(self):
        self.assertEqual(self.parse(b"fast"), ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
        self.assertEqual(self.parse(b"(uid flags)"), ["UID", "FLAGS"])

    def test_sections(self):
        [item] = self.parse(b"BODY.PEEK[1.2.MIME]<5.10>")
        self.assertEqual(
            item,
            Section(label=b"BODY[1.2.MIME]", peek=True, part=(1, 2), kind="MIME", partial=(5, 10)),
        )
        [item] = self.parse(b'body[header.fields.not (x-a "X-B")]')
        self.assertEqual(item.label, b"BODY[HEADER.FIELDS.NOT (X-A X-B)]")
        self.assertEqual(item.fields, (b"X-A", b"X-B"))
        self.assertFalse(item.peek)
        [item] = self.parse(b"RFC822.HEADER")
        self.assertEqual((item.label, item.peek, item.kind), (b"RFC822.HEADER", True, "HEADER"))

    def test_invalid(self):
        for bad in (b"BODY[0]", b"BODY[MIME]", b"BODY[1.]", b"BODY[TEXTX]", b"()", b"BOGUS"):
            self.assertRaises(IMAPSyntaxError, self.parse, bad)


class HeaderFieldTests(unittest.SynchronousTestCase):
    HEADER = b"From: a@b\r\nSubject: one\r\n two\r\nX-8bit: \xc3\xa4\r\nsubject: again\r\n\r\n"

    def test_select_and_negate_keep_folding_and_8bit(self):
        self.assertEqual(
            header_fields(self.HEADER, (b"SUBJECT",), False),
            b"Subject: one\r\n two\r\nsubject: again\r\n\r\n",
        )
        self.assertEqual(
            header_fields(self.HEADER, (b"SUBJECT", b"FROM"), True), b"X-8bit: \xc3\xa4\r\n\r\n"
        )
        self.assertEqual(header_fields(self.HEADER, (b"NONE",), False), b"\r\n")

    def test_window(self):
        self.assertEqual(window(10, None), (0, 10))
        self.assertEqual(window(10, (3, 4)), (3, 4))
        self.assertEqual(window(10, (8, 4)), (8, 2))
        self.assertEqual(window(10, (12, 4)), (10, 0))


class InterfaceTests(unittest.SynchronousTestCase):
    def test_account_and_realm_provide_their_interfaces(self):
        from twisted.cred.portal import IRealm
        from twisted.mail import imap4
        from zope.interface.verify import verifyObject

        from haitatsu.imap import Account, IMAPRealm

        self.assertTrue(verifyObject(imap4.IAccount, Account(None, "MBX")))
        self.assertTrue(verifyObject(imap4.INamespacePresenter, Account(None, "MBX")))
        self.assertTrue(verifyObject(IRealm, IMAPRealm(None)))
        iface, account, logout = IMAPRealm(None).requestAvatar(b"MBX", None, imap4.IAccount)
        self.assertEqual((iface, account.mailbox_id), (imap4.IAccount, "MBX"))
