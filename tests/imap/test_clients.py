"""Real clients over a loopback socket: Python's imaplib and the imapclient package."""

from __future__ import annotations

import imaplib

import imapclient
from twisted.internet import reactor, threads

from tests.imap.helpers import ADDRESS, EIGHT_BIT, MULTIPART, SIMPLE, IMAPTestCase
from tests.imap.test_session import d


class RealClientTests(IMAPTestCase):
    def listen(self) -> int:
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        # The sessions' idle timers run on the test clock; nothing is left on the reactor.
        return port.getHost().port

    @d
    async def test_imaplib_reads_back_the_delivered_bytes(self):
        await self.deliver(SIMPLE)
        await self.deliver(MULTIPART)
        port = self.listen()
        password = self.password

        def client():
            conn = imaplib.IMAP4("127.0.0.1", port)
            with conn:
                conn.login(ADDRESS, password)
                typ, data = conn.list()
                folders = [line.decode() for line in data]
                conn.select("INBOX")
                typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[] FLAGS)")
                bodies = [part[1] for part in data if isinstance(part, tuple)]
                typ, found = conn.uid("SEARCH", None, "SUBJECT", '"report"')
                conn.append("Sent", "(\\Seen)", None, EIGHT_BIT)
                return folders, bodies, found

        folders, bodies, found = await threads.deferToThread(client)
        self.assertIn('(\\HasNoChildren \\Sent) "/" "Sent"', folders)
        self.assertEqual(bodies, [SIMPLE, MULTIPART])
        self.assertEqual(found, [b"2"])
        sent = await self.store.get_folder(self.mailbox.id, "Sent")
        [row] = await self.store.list_folder_messages(sent.id)
        [(_, info)] = await self.store.get_messages(sent.id, [row.uid])
        self.assertEqual(await self.store.read_message(info), EIGHT_BIT)

    @d
    async def test_imapclient_fetch_search_store_idle(self):
        await self.deliver(EIGHT_BIT)
        port = self.listen()
        password = self.password

        def client():
            with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as c:
                c.login(ADDRESS, password)
                caps = c.capabilities()
                folders = c.list_folders()
                c.select_folder("INBOX")
                fetched = c.fetch([1], ["BODY[]", "ENVELOPE", "FLAGS", "RFC822.SIZE"])
                searched = c.search(["SUBJECT", "Grüße"], charset="UTF-8")
                c.add_flags([1], [b"\\Flagged"])
                c.idle()
                threads.blockingCallFromThread(reactor, self._deliver_later)
                responses = c.idle_check(timeout=5)
                c.idle_done()
                return caps, folders, fetched, searched, responses

        caps, folders, fetched, searched, responses = await threads.deferToThread(client)
        self.assertIn(b"IDLE", caps)
        self.assertIn(((b"\\HasNoChildren", b"\\Junk"), b"/", "Junk"), folders)
        message = fetched[1]
        self.assertEqual(message[b"BODY[]"], EIGHT_BIT)
        self.assertEqual(message[b"RFC822.SIZE"], len(EIGHT_BIT))
        self.assertEqual(message[b"ENVELOPE"].subject, "Grüße aus Köln".encode())
        self.assertEqual(searched, [1])
        self.assertIn((2, b"EXISTS"), responses)

    def _deliver_later(self):
        from twisted.internet import defer

        return defer.ensureDeferred(self.deliver(SIMPLE))
