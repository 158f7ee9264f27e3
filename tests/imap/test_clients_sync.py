"""imapclient against the extensions: CONDSTORE (select, CHANGEDSINCE fetch, UNCHANGEDSINCE
store), SORT, THREAD, QUOTA and MULTIAPPEND, over loopback."""

from __future__ import annotations

import imapclient
from twisted.internet import threads

from tests.imap.helpers import ADDRESS, MULTIPART, SIMPLE
from tests.imap.test_clients_folders import _Listening
from tests.imap.test_session import d


class IMAPClientSyncTests(_Listening):
    @d
    async def test_condstore_sort_thread_quota_multiappend(self):
        await self.store.update_mailbox(self.mailbox.id, quota_bytes=1024 * 1024)
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART)
        port = self.listen()
        password = self.password
        inbox = await self.store.get_folder(self.mailbox.id, "INBOX")

        def client():
            out = {}
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as c:
                c.login(ADDRESS, password)
                out["caps"] = c.capabilities()
                out["enabled"] = c.enable("CONDSTORE")
                out["select"] = c.select_folder("INBOX")
                base = out["select"][b"HIGHESTMODSEQ"]
                c.add_flags([2], [b"$Seen2"])
                out["changed"] = c.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {base}"])
                out["modified"] = c._command_and_check(
                    "uid", "STORE", "1", f"(UNCHANGEDSINCE {base})", "+FLAGS", r"(\Flagged)"
                )
                out["sort"] = c.sort(["REVERSE", "SIZE"])
                out["thread"] = c.thread("REFERENCES")
                out["quota"] = c.get_quota_root("INBOX")
                out["multiappend"] = c.multiappend("Archive", [SIMPLE, MULTIPART])
                out["search"] = c.search(["MODSEQ", str(base)])
            return out

        out = await threads.deferToThread(client)
        for cap in (b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SORT", b"QUOTA", b"MULTIAPPEND"):
            self.assertIn(cap, out["caps"])
        self.assertEqual(out["enabled"], [b"CONDSTORE"])
        self.assertEqual(out["select"][b"HIGHESTMODSEQ"], inbox.highest_modseq)
        rows = {r.uid: r for r in await self.store.list_folder_messages(inbox.id)}
        self.assertEqual(list(out["changed"]), [2])
        self.assertEqual(out["changed"][2][b"MODSEQ"], (rows[2].modseq,))
        self.assertIn(b"$Seen2", out["changed"][2][b"FLAGS"])
        self.assertTrue(rows[1].flagged)
        self.assertEqual(out["sort"], [2, 1])
        self.assertEqual(out["thread"], ((1,), (2,)))
        roots, quotas = out["quota"]
        self.assertEqual(roots.quota_roots, [""])
        [quota] = quotas
        self.assertEqual((quota.resource, quota.limit), ("STORAGE", 1024))
        archive = await self.store.get_folder(self.mailbox.id, "Archive")
        self.assertIn(b"[APPENDUID %d 1:2]" % archive.uid_validity, out["multiappend"][1][0])
        self.assertEqual(out["search"], [1, 2])
