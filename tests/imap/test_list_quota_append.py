"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438), APPENDLIMIT
(RFC 7889), QUOTA (RFC 9208) and MULTIAPPEND (RFC 3502)."""

from __future__ import annotations

import os

from tests.imap.helpers import MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d


def _lines(answer: bytes) -> list[bytes]:
    return answer.split(b"\r\n")[:-2]


class ListExtendedTests(IMAPTestCase):
    async def folders(self):
        await self.store.create_folder(self.mailbox.id, "Lists/a")
        await self.store.create_folder(self.mailbox.id, "Lists/b")
        await self.store.create_folder(self.mailbox.id, "Plain")
        lists = await self.store.get_folder(self.mailbox.id, "Lists")
        await self.store.set_folder_subscribed(lists.id, False)
        b = await self.store.get_folder(self.mailbox.id, "Lists/b")
        await self.store.set_folder_subscribed(b.id, False)

    @d
    async def test_list_subscribed_recursivematch_and_return_options(self):
        await self.folders()
        session = await self.login()
        answer = await session.command(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" "Lists*"')
        self.assertEqual(
            _lines(answer),
            [
                b'* LIST (\\HasChildren) "/" "Lists" ("CHILDINFO" ("SUBSCRIBED"))',
                b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/a"',
            ],
        )
        answer = await session.command(b'b LIST (SUBSCRIBED) "" "Lists*"')
        self.assertEqual(_lines(answer), [b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/a"'])
        answer = await session.command(
            b'c LIST "" ("Plain" "Lists/%") RETURN (SUBSCRIBED CHILDREN)'
        )
        self.assertEqual(
            _lines(answer),
            [
                b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/a"',
                b'* LIST (\\HasNoChildren) "/" "Lists/b"',
                b'* LIST (\\HasNoChildren \\Subscribed) "/" "Plain"',
            ],
        )
        self.assertTrue(answer.endswith(b"c OK LIST completed\r\n"))
        answer = await session.command(b'd LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)')
        self.assertEqual(
            [line.split(b'"/" ')[1] for line in _lines(answer)],
            [b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"'],
        )
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"', answer)

    @d
    async def test_list_status_and_status_size(self):
        await self.deliver(SIMPLE, flags=["\\Seen"])
        await self.deliver(MULTIPART, flags=["\\Deleted"])
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.login()
        # RFC 5819 example shape: LIST ... RETURN (STATUS (MESSAGES UNSEEN))
        answer = await session.command(b'a LIST "" "%" RETURN (STATUS (MESSAGES UNSEEN SIZE))')
        lines = _lines(answer)
        index = lines.index(b'* LIST (\\HasNoChildren) "/" "INBOX"')
        self.assertEqual(
            lines[index + 1],
            b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 SIZE %d)' % (len(SIMPLE) + len(MULTIPART)),
        )
        self.assertEqual(sum(1 for line in lines if line.startswith(b"* STATUS")), 6)
        answer = await session.command(
            b"b STATUS INBOX (SIZE APPENDLIMIT DELETED DELETED-STORAGE HIGHESTMODSEQ)"
        )
        self.assertEqual(
            answer,
            b'* STATUS "INBOX" (SIZE %d APPENDLIMIT 100000 DELETED 1 DELETED-STORAGE 1 '
            b"HIGHESTMODSEQ %d)\r\nb OK STATUS completed\r\n"
            % (len(SIMPLE) + len(MULTIPART), inbox.highest_modseq),
        )

    @d
    async def test_malformed_extended_list_is_bad(self):
        session = await self.login()
        for line in (
            b'a LIST (RECURSIVEMATCH) "" "*"',
            b'a LIST (FANCY) "" "*"',
            b'a LIST "" "*" RETURN (STATUS)',
            b'a LIST "" "*" RETURN (STATUS (BOGUS))',
            b'a LIST "" "*" RETURN (SHINY)',
            b'a LIST "" () ',
            b'a LIST "" "*" SOMETHING (X)',
        ):
            answer = await session.command(line)
            self.assertTrue(answer.startswith(b"a BAD "), (line, answer))
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")


class QuotaTests(IMAPTestCase):
    @d
    async def test_getquotaroot_getquota_setquota(self):
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=10 * 1024 * 1024)
        await self.deliver(SIMPLE)
        session = await self.login()
        used = (len(SIMPLE) + 1023) // 1024
        # RFC 9208 example shape: GETQUOTAROOT INBOX -> QUOTAROOT, QUOTA.
        answer = await session.command(b"G GETQUOTAROOT INBOX")
        self.assertEqual(
            answer,
            b'* QUOTAROOT "INBOX" ""\r\n'
            b'* QUOTA "" (STORAGE %d 10240)\r\n'
            b"G OK GETQUOTAROOT completed\r\n" % used,
        )
        answer = await session.command(b'H GETQUOTA ""')
        self.assertEqual(
            answer, b'* QUOTA "" (STORAGE %d 10240)\r\nH OK GETQUOTA completed\r\n' % used
        )
        answer = await session.command(b'I SETQUOTA "" (STORAGE 512)')
        self.assertEqual(answer, b"I NO [NOPERM] Quotas are set by the administrator\r\n")
        answer = await session.command(b"J GETQUOTA other")
        self.assertEqual(answer, b"J NO [NONEXISTENT] No such quota root\r\n")
        answer = await session.command(b"K GETQUOTAROOT Nowhere")
        self.assertEqual(answer, b"K NO [NONEXISTENT] No such mailbox\r\n")
        self.assertTrue((await session.command(b"L GETQUOTA")).startswith(b"L BAD "))

    @d
    async def test_unlimited_mailbox_has_no_quota_root(self):
        session = await self.login()
        answer = await session.command(b"G GETQUOTAROOT INBOX")
        self.assertEqual(answer, b'* QUOTAROOT "INBOX"\r\nG OK GETQUOTAROOT completed\r\n')
        answer = await session.command(b'H GETQUOTA ""')
        self.assertEqual(answer, b"H NO [NONEXISTENT] No such quota root\r\n")


class MultiappendTests(IMAPTestCase):
    async def multiappend(self, session, tag, messages, folder=b"INBOX"):
        """One APPEND with several messages, each a non-synchronizing literal."""
        parts = [tag + b" APPEND " + folder]
        for flags, data in messages:
            parts.append(b" %s {%d+}\r\n" % (flags, len(data)) + data)
        session.send(b"".join(parts) + b"\r\n")
        return await session.wait_for(rb"^" + tag + rb" (OK|NO|BAD)[^\r\n]*\r\n")

    @d
    async def test_multiappend_stores_all_with_appenduid_set(self):
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        session = await self.selected()
        answer = await self.multiappend(
            session,
            b"A003",
            [(b"(\\Seen)", SIMPLE), (b'() "7-Feb-1994 21:52:25 -0800"', MULTIPART)],
        )
        self.assertEqual(
            answer,
            b"* 2 EXISTS\r\nA003 OK [APPENDUID %d 1:2] APPEND completed\r\n" % inbox.uid_validity,
        )
        rows = await self.store.list_folder_messages(inbox.id)
        self.assertEqual([r.size_bytes for r in rows], [len(SIMPLE), len(MULTIPART)])
        self.assertTrue(rows[0].read and not rows[1].read)
        self.assertEqual(rows[1].internal_date, 760686745 * 1_000_000_000)
        self.assertEqual(os.listdir(self.spool_dir), [])

    @d
    async def test_multiappend_over_quota_stores_none(self):
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=2 * len(SIMPLE) + 10)
        session = await self.login()
        answer = await self.multiappend(session, b"A1", [(b"()", SIMPLE)] * 3)
        self.assertEqual(answer, b"A1 NO [OVERQUOTA] Mailbox is over its quota\r\n")
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")
        self.assertEqual(await self.store.list_folder_messages(inbox.id), [])
        self.assertEqual((await self.store.get_mailbox(self.mailbox.id)).used_bytes, 0)
        self.assertEqual(os.listdir(self.spool_dir), [])

    @d
    async def test_multiappend_errors(self):
        session = await self.login()
        answer = await self.multiappend(session, b"A2", [(b"()", SIMPLE)] * 2, b"Nowhere")
        self.assertEqual(answer, b"A2 NO [TRYCREATE] No such mailbox\r\n")
        answer = await self.multiappend(session, b"A3", [(b"(\\Bogus)", SIMPLE)] * 2)
        self.assertTrue(answer.startswith(b"A3 BAD "), answer)
        session.send(b"A4 APPEND INBOX {%d+}\r\n%s ()\r\n" % (len(SIMPLE), SIMPLE))
        answer = await session.wait_for(rb"^A4 (OK|NO|BAD)[^\r\n]*\r\n")
        self.assertTrue(answer.startswith(b"A4 BAD "), answer)
        self.assertEqual(await session.command(b"A5 NOOP"), b"A5 OK NOOP completed\r\n")
        self.assertEqual(os.listdir(self.spool_dir), [])
