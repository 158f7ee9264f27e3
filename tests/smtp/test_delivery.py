"""The MX against the real store (temporary SQLite + blob directory): recipient resolution,
pipelining with asynchronous validation, DATA spooling and the replies after DATA, including real
storage failures. Replies are still read from a ``StringTransport``; the store answers from its
threads on the real reactor."""

from __future__ import annotations

import os
import re
import shutil

from twisted.trial import unittest

from haitatsu.smtp.headers import trace_headers
from haitatsu.smtp.server import PENDING_INPUT_LIMIT
from tests.smtp.helpers import HOST, NODE, Session, make_config, temp_dir
from tests.support import deliver_bytes, make_store

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"caf\xc3\xa9 8-bit text, a bare\nLF and a bare\rCR stay as they are\r\n"
    b"  \r\n"
    b"-- \r\n"
    b"Alice\r\n"
)


def dot_stuff(message: bytes) -> bytes:
    """What a client sends for ``message`` (RFC 5321 4.5.2)."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


_OK = re.compile(rb"250 2\.0\.0 OK ([0-9A-HJKMNP-TV-Z]{26})\Z")


class DeliveryTestCase(unittest.TestCase):
    config = make_config()

    async def setUp(self):
        self.root = temp_dir(self)
        self.store = await make_store(self, self.root)
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.carol = await self.store.create_mailbox("Carol@Example.com")
        self.session = Session(self, store=self.store, config=self.config)
        self.assertEqual(self.session.lines(), [b"220 mx.example.test ESMTP Haitatsu"])
        self.session.command(b"EHLO client.example\r\n")

    async def inbox(self, mailbox, store=None):
        """``[(MailboxMessage, MessageInfo, raw bytes)]`` of the mailbox's INBOX."""
        store = store or self.store
        folder = await store.get_folder(mailbox.id, "INBOX")
        messages = await store.list_folder_messages(folder.id)
        if not messages:
            return []
        views = await store.get_messages(folder.id, [m.uid for m in messages])
        return [(mm, info, await store.read_message(info)) for mm, info in views]

    async def send_message(self, rcpts, message=MESSAGE) -> list[bytes]:
        """One transaction; return every reply line from MAIL to the end of DATA."""
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\n"
            + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts)
            + b"DATA\r\n",
            replies=len(rcpts) + 2,
        )
        if not lines[-1].startswith(b"354"):
            return lines
        lines += await self.session.converse(dot_stuff(message) + b".\r\n")
        return lines


class RecipientTests(DeliveryTestCase):
    async def test_known_recipient(self):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n", replies=2
        )
        self.assertEqual(lines, [b"250 2.1.0 sender OK", b"250 2.1.5 recipient OK"])

    async def test_recipient_case_insensitive(self):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<CAROL@example.COM>\r\n", replies=2
        )
        self.assertEqual(lines[1], b"250 2.1.5 recipient OK")

    async def test_unknown_recipient(self):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<nobody@example.com>\r\n", replies=2
        )
        self.assertEqual(lines[1], b"550 5.1.1 unknown recipient")

    async def test_inactive_mailbox_is_unknown(self):
        await self.store.update_mailbox(self.carol.id, status="suspended")
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@example.com>\r\n", replies=2
        )
        self.assertEqual(lines[1], b"550 5.1.1 unknown recipient")

    async def test_plus_addressing(self):
        """``user+tag@`` is accepted and delivered to ``user@`` with the tag recorded."""
        lines = await self.send_message([b"bob+news@example.com"])
        self.assertEqual(lines[1], b"250 2.1.5 recipient OK")
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(mm, _, _)] = await self.inbox(self.bob)
        self.assertEqual(
            (mm.original_rcpt, mm.base_rcpt, mm.plus_tag),
            ("bob+news@example.com", "bob@example.com", "news"),
        )

    async def test_too_many_recipients(self):
        """The fourth accepted recipient with ``max_inbound_recipients = 3`` gets 452 4.5.3;
        refused recipients do not count."""
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\n"
            b"RCPT TO:<nobody@example.com>\r\n"
            b"RCPT TO:<bob@example.com>\r\n"
            b"RCPT TO:<bob+a@example.com>\r\n"
            b"RCPT TO:<carol@example.com>\r\n"
            b"RCPT TO:<bob+b@example.com>\r\n",
            replies=6,
        )
        self.assertEqual(
            lines,
            [
                b"250 2.1.0 sender OK",
                b"550 5.1.1 unknown recipient",
                b"250 2.1.5 recipient OK",
                b"250 2.1.5 recipient OK",
                b"250 2.1.5 recipient OK",
                b"452 4.5.3 too many recipients",
            ],
        )

    async def test_same_mailbox_twice_delivered_once(self):
        lines = await self.send_message(
            [b"bob@example.com", b"bob+x@example.com", b"carol@example.com"]
        )
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.inbox(self.bob)), 1)
        self.assertEqual(len(await self.inbox(self.carol)), 1)

    async def test_no_valid_recipients(self):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n",
            replies=3,
        )
        self.assertEqual(lines[-1], b"554 5.5.1 no valid recipients")
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    async def test_lookup_failure(self):
        """A store that cannot answer gives 451 4.3.0 at RCPT (here: its database is closed)."""
        await self.store.close()
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n", replies=2
        )
        self.assertEqual(lines[1], b"451 4.3.0 temporary local problem")
        self.flushLoggedErrors()


class PipeliningTests(DeliveryTestCase):
    async def test_pipelined_batch_answered_in_order(self):
        """MAIL, three RCPTs and DATA in one packet: each RCPT is answered after its own lookup,
        in order, and DATA's 354 only after every RCPT reply. While a lookup is pending later
        lines wait in the buffer (the transport keeps reading: the input is small)."""
        self.session.send(
            b"MAIL FROM:<alice@example.org>\r\n"
            b"RCPT TO:<bob@example.com>\r\n"
            b"RCPT TO:<nobody@example.com>\r\n"
            b"RCPT TO:<carol@example.com>\r\n"
            b"DATA\r\n"
        )
        self.assertEqual(self.session.lines(), [b"250 2.1.0 sender OK"])
        self.assertEqual(self.session.transport.producerState, "producing")
        lines = await self.session.converse(b"", replies=4)
        self.assertEqual(
            lines,
            [
                b"250 2.1.5 recipient OK",
                b"550 5.1.1 unknown recipient",
                b"250 2.1.5 recipient OK",
                b"354 end data with <CR><LF>.<CR><LF>",
            ],
        )
        self.assertEqual(self.session.transport.producerState, "producing")
        lines = await self.session.converse(
            dot_stuff(MESSAGE) + b".\r\nNOOP\r\nQUIT\r\n", replies=3
        )
        self.assertTrue(_OK.match(lines[0]), lines)
        self.assertEqual(
            lines[1:], [b"250 2.0.0 OK", b"221 2.0.0 mx.example.test closing connection"]
        )
        self.assertEqual(len(await self.inbox(self.bob)), 1)
        self.assertEqual(len(await self.inbox(self.carol)), 1)

    async def test_much_input_while_a_command_is_pending_pauses_the_transport(self):
        """Memory stays bounded: past ``PENDING_INPUT_LIMIT`` bytes waiting behind a pending
        command the transport is paused, and it resumes once the command replied; every
        pipelined command is still answered, in order."""
        self.session.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n")
        self.assertEqual(self.session.lines(), [b"250 2.1.0 sender OK"])
        self.assertEqual(self.session.transport.producerState, "producing")
        noops = b"NOOP\r\n" * (PENDING_INPUT_LIMIT // 6 + 1)
        self.session.send(noops)
        self.assertEqual(self.session.transport.producerState, "paused")
        lines = await self.session.converse(b"", replies=1 + noops.count(b"\r\n"))
        self.assertEqual(lines[0], b"250 2.1.5 recipient OK")
        self.assertEqual(set(lines[1:]), {b"250 2.0.0 OK"})
        self.assertEqual(self.session.transport.producerState, "producing")

    async def test_lines_split_across_packets(self):
        """Command lines cut at any byte, CRLF included, are reassembled."""
        data = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n"
        for i in range(len(data) - 1):
            self.session.send(data[i : i + 1])
        lines = await self.session.converse(data[-1:], replies=2)
        self.assertEqual(lines, [b"250 2.1.0 sender OK", b"250 2.1.5 recipient OK"])


class DataTests(DeliveryTestCase):
    async def test_delivery_bytes(self):
        """The stored message is the prepended trace headers followed by exactly the bytes the
        client sent (dot-unstuffed), bare CR/LF and 8-bit bytes included; 250 names the trace
        id; the spool file is gone."""
        lines = await self.send_message([b"bob@example.com"])
        self.assertEqual(
            lines[:3],
            [
                b"250 2.1.0 sender OK",
                b"250 2.1.5 recipient OK",
                b"354 end data with <CR><LF>.<CR><LF>",
            ],
        )
        m = _OK.match(lines[3])
        self.assertTrue(m, lines)
        trace_id = m.group(1).decode()
        [(mm, info, raw)] = await self.inbox(self.bob)
        expected_headers = (
            "Received: from client.example (192.0.2.7 [192.0.2.7])\r\n"
            f"\tby {HOST} (Haitatsu/0.1; {NODE})\r\n"
            f"\twith ESMTP id {trace_id};\r\n"
            "\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
            f"X-Haitatsu-Trace-ID: {trace_id}\r\n"
            f"X-Haitatsu-Node: {NODE}\r\n"
        ).encode()
        self.assertEqual(raw, expected_headers + MESSAGE)
        self.assertEqual(
            expected_headers,
            trace_headers(
                helo="client.example",
                remote_ip="192.0.2.7",
                remote_name=None,
                hostname=HOST,
                instance=NODE,
                trace_id=trace_id,
                when=0,
            ),
        )
        self.assertEqual(info.trace_id, trace_id)
        self.assertEqual(info.size_bytes, len(raw))
        self.assertEqual(
            info.auth_results, {"remote_ip": "192.0.2.7", "helo": "client.example", "tls": False}
        )
        self.assertEqual((mm.original_rcpt, mm.plus_tag), ("bob@example.com", ""))
        self.assertEqual(self.session.spool_files(), [])

    async def test_message_without_final_crlf_lines(self):
        """An empty message body (just the dot) is stored as the trace headers alone."""
        lines = await self.send_message([b"bob@example.com"], message=b"")
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.inbox(self.bob)
        self.assertTrue(raw.endswith(b"X-Haitatsu-Node: node-1\r\n"), raw)

    async def test_two_messages_in_one_session(self):
        first = await self.send_message([b"bob@example.com"])
        second = await self.send_message([b"bob@example.com"], message=b"Subject: 2\r\n\r\nx\r\n")
        self.assertTrue(_OK.match(first[-1]) and _OK.match(second[-1]), (first, second))
        self.assertNotEqual(first[-1], second[-1])
        self.assertEqual(len(await self.inbox(self.bob)), 2)

    async def test_oversize_message(self):
        """Over ``max_message_size_bytes``: spooling stops, the rest is read to the final dot,
        552 5.3.4, nothing stored, no spool file, and the session takes the next message."""
        big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 150
        self.assertGreater(len(big), 10_000)
        lines = await self.send_message([b"bob@example.com"], message=big)
        self.assertEqual(lines[-1], b"552 5.3.4 message size exceeds fixed maximum message size")
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(await self.inbox(self.bob), [])
        lines = await self.send_message([b"bob@example.com"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.inbox(self.bob)), 1)

    async def test_message_at_size_limit(self):
        """Exactly ``max_message_size_bytes`` of client data is accepted (our headers are not
        counted against the client)."""
        body = b"Subject: fits\r\n\r\n" + (b"y" * 98 + b"\r\n") * 99
        body += b"y" * (10_000 - len(body) - 2) + b"\r\n"
        self.assertEqual(len(body), 10_000)
        lines = await self.send_message([b"bob@example.com"], message=body)
        self.assertTrue(_OK.match(lines[-1]), lines)

    async def test_over_long_data_line(self):
        """A DATA line over ``smtp.max_line_length`` rejects the message with 500 5.5.2 at the
        final dot; the session continues."""
        message = b"Subject: long\r\n\r\n" + b"z" * 500 + b"\r\nafter\r\n"
        lines = await self.send_message([b"bob@example.com"], message=message)
        self.assertEqual(lines[-1], b"500 5.5.2 message line too long")
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    async def test_oversize_single_line(self):
        """A message that is over the size limit *and* one over-long line (streamed in pieces,
        never buffered) is answered 552 5.3.4: size wins over line length."""
        lines = await self.session.converse(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        self.assertEqual(lines[-1], b"354 end data with <CR><LF>.<CR><LF>")
        self.session.send(b"Subject: one line\r\n\r\n")
        for _ in range(40):
            self.session.send(b"w" * 1000)
            self.assertLessEqual(len(self.session.protocol._buffer), 1000)
        lines = await self.session.converse(b"\r\n.\r\n")
        self.assertEqual(lines, [b"552 5.3.4 message size exceeds fixed maximum message size"])
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    async def test_connection_lost_during_data(self):
        """A client that disconnects in the middle of DATA leaves no spool file and no message."""
        await self.session.converse(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        self.session.send(b"Subject: cut\r\n\r\npartial")
        self.assertEqual(len(self.session.spool_files()), 1)
        self.session.protocol.connectionLost(None)
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(await self.inbox(self.bob), [])


class StorageFailureTests(DeliveryTestCase):
    async def test_blob_store_failure(self):
        """The blob directory cannot take files (it is a plain file): 451 4.3.0, nothing
        visible, no spool file, and the session goes on."""
        blobs = os.path.join(self.root, "blobs")
        shutil.rmtree(blobs, ignore_errors=True)
        with open(blobs, "wb") as f:
            f.write(b"in the way")
        lines = await self.send_message([b"bob@example.com"])
        self.assertEqual(lines[-1], b"451 4.3.0 temporary local problem")
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])
        self.flushLoggedErrors()

    async def test_database_closed_before_data_ends(self):
        """The database goes away while DATA streams: 451 4.3.0, and a fresh store on the same
        files shows no message."""
        lines = await self.session.converse(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        self.assertEqual(lines[-1], b"354 end data with <CR><LF>.<CR><LF>")
        self.session.send(dot_stuff(MESSAGE))
        await self.store.close()
        lines = await self.session.converse(b".\r\n")
        self.assertEqual(lines, [b"451 4.3.0 temporary local problem"])
        self.assertEqual(self.session.spool_files(), [])
        reopened = await make_store(self, self.root)
        self.assertEqual(await self.inbox(self.bob, store=reopened), [])
        self.flushLoggedErrors()

    async def test_over_quota(self):
        """Every recipient over quota: 452 4.2.2. Some over quota: the rest get the message."""
        await self.store.update_mailbox(self.bob.id, quota_bytes=100)
        lines = await self.send_message([b"bob@example.com"])
        self.assertEqual(lines[-1], b"452 4.2.2 mailbox over quota")
        lines = await self.send_message([b"bob@example.com", b"carol@example.com"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(len(await self.inbox(self.carol)), 1)
        self.assertEqual(self.session.spool_files(), [])


class QuotaTests(DeliveryTestCase):
    """API.md 5.2 step 8 and 5.6: a full mailbox (``used >= quota``) or a full domain is refused
    at RCPT with 452 4.2.2; one the message would overfill is skipped at delivery."""

    async def fill(self, mailbox, quota):
        """Give ``mailbox`` one stored message and a quota of ``quota`` bytes."""
        await deliver_bytes(self.store, MESSAGE, mailbox.id)
        await self.store.update_mailbox(mailbox.id, quota_bytes=quota)

    async def test_full_mailbox_is_refused_at_rcpt(self):
        await self.fill(self.bob, len(MESSAGE))
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n"
            b"RCPT TO:<bob+tag@example.com>\r\nDATA\r\n",
            replies=4,
        )
        self.assertEqual(
            lines,
            [
                b"250 2.1.0 sender OK",
                b"452 4.2.2 mailbox over quota",
                b"452 4.2.2 mailbox over quota",
                b"554 5.5.1 no valid recipients",
            ],
        )
        self.assertEqual(self.session.spool_files(), [])

    async def test_mailbox_with_room_left_passes_rcpt(self):
        """``used < quota`` passes RCPT even when the message turns out too big for it."""
        await self.fill(self.bob, len(MESSAGE) + 1)
        lines = await self.send_message([b"bob@example.com"])
        self.assertEqual(lines[1], b"250 2.1.5 recipient OK")
        self.assertEqual(lines[-1], b"452 4.2.2 mailbox over quota")
        self.assertEqual(len(await self.inbox(self.bob)), 1)

    async def test_mixed_recipients(self):
        """A full mailbox among others: 452 for it at RCPT, the others get the message."""
        await self.fill(self.bob, len(MESSAGE))
        lines = await self.send_message([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[1:3], [b"452 4.2.2 mailbox over quota", b"250 2.1.5 recipient OK"])
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(len(await self.inbox(self.bob)), 1)
        self.assertEqual(len(await self.inbox(self.carol)), 1)

    async def test_full_domain_is_refused_at_rcpt(self):
        dave = await self.store.create_mailbox("dave@other.example")
        await deliver_bytes(self.store, MESSAGE, self.carol.id)
        await self.store.set_domain_quota("example.com", len(MESSAGE))
        lines = await self.send_message(
            [b"bob@example.com", b"carol@example.com", b"dave@other.example"]
        )
        self.assertEqual(
            lines[1:4],
            [
                b"452 4.2.2 mailbox over quota",
                b"452 4.2.2 mailbox over quota",
                b"250 2.1.5 recipient OK",
            ],
        )
        self.assertTrue(_OK.match(lines[-1]), lines)
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(len(await self.inbox(dave)), 1)

    async def test_domain_too_small_for_the_message_at_delivery(self):
        """The domain has room, but not for this message: RCPT passes, DATA answers 452 4.2.2
        and nothing is stored."""
        await self.store.set_domain_quota("example.com", 100)
        lines = await self.send_message([b"bob@example.com", b"carol@example.com"])
        self.assertEqual(lines[1:3], [b"250 2.1.5 recipient OK"] * 2)
        self.assertEqual(lines[-1], b"452 4.2.2 mailbox over quota")
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(await self.inbox(self.carol), [])
        self.assertEqual((await self.store.get_domain("example.com")).used_bytes, 0)


class ChunkedDataTests(DeliveryTestCase):
    """DATA is taken in chunks (every complete line in the buffer at once), so what used to be
    a line boundary is now also a packet boundary: these split the client's bytes anywhere."""

    async def open_data(self):
        lines = await self.session.converse(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", replies=3
        )
        self.assertEqual(lines[-1], b"354 end data with <CR><LF>.<CR><LF>")

    async def send_in_pieces(self, wire: bytes, cuts) -> list[bytes]:
        """Send ``wire`` (everything after 354, up to and including the end-of-data line) in
        pieces cut at ``cuts``; return the reply to the final dot."""
        await self.open_data()
        start = 0
        for cut in cuts:
            self.session.send(wire[start:cut])
            self.assertEqual(self.session.lines(), [])
            start = cut
        return await self.session.converse(wire[start:])

    async def test_terminator_split_at_every_offset(self):
        """The end-of-data line cut at every offset of ``\\r\\n.\\r\\n`` (and the line before
        it): the message ends where it should and arrives intact, each time."""
        wire = dot_stuff(MESSAGE) + b".\r\n"
        tail = len(wire) - len(b"Alice\r\n.\r\n")
        for cut in range(tail, len(wire)):
            lines = await self.send_in_pieces(wire, [cut])
            self.assertTrue(_OK.match(lines[-1]), (cut, lines))
        raws = [raw for _, _, raw in await self.inbox(self.bob)]
        self.assertEqual(len(raws), len(wire) - tail)
        for raw in raws:
            self.assertTrue(raw.endswith(b"\r\n" + MESSAGE), raw[-200:])

    async def test_dot_line_split_across_packets(self):
        """A dot-stuffed line cut just before, between and after its dots is unstuffed once."""
        wire = dot_stuff(MESSAGE) + b".\r\n"
        at = wire.index(b"\r\n...two dots") + 2
        cuts = list(range(at - 2, at + 4))
        for cut in cuts:
            lines = await self.send_in_pieces(wire, [cut])
            self.assertTrue(_OK.match(lines[-1]), (cut, lines))
        raws = [raw for _, _, raw in await self.inbox(self.bob)]
        self.assertEqual(len(raws), len(cuts))
        for raw in raws:
            self.assertTrue(raw.endswith(b"\r\n" + MESSAGE), raw[-200:])

    async def test_one_byte_at_a_time(self):
        """Every byte its own packet: every boundary at once."""
        wire = dot_stuff(MESSAGE) + b".\r\n"
        lines = await self.send_in_pieces(wire, range(1, len(wire)))
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.inbox(self.bob)
        self.assertTrue(raw.endswith(b"\r\n" + MESSAGE), raw[-200:])

    async def test_end_of_data_as_the_first_line(self):
        """``.\\r\\n`` right after 354 ends an empty message (only our trace headers are kept)
        and the command pipelined behind it is answered after it."""
        await self.open_data()
        lines = await self.session.converse(b".\r\nNOOP\r\n", replies=2)
        self.assertTrue(_OK.match(lines[0]), lines)
        self.assertEqual(lines[1], b"250 2.0.0 OK")
        [(_, info, raw)] = await self.inbox(self.bob)
        self.assertTrue(raw.startswith(b"Received: "), raw[:100])
        self.assertFalse(raw.endswith(b"\r\n.\r\n"), raw[-50:])

    async def test_dot_stuffed_first_line(self):
        """A first line that starts with a dot (no CRLF before it in the buffer) is unstuffed
        too, and the line after a chunk boundary likewise."""
        message = b".first\r\n\r\n..second\r\n"
        wire = dot_stuff(message) + b".\r\n"
        lines = await self.send_in_pieces(wire, [len(b"..first\r\n")])
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.inbox(self.bob)
        self.assertTrue(raw.endswith(b"\r\n" + message), raw[-100:])

    async def test_over_long_line_inside_a_chunk(self):
        """An over-long line that arrives whole among short ones in one packet is found by the
        chunk check: 500 5.5.2 at the final dot, nothing stored, the session goes on."""
        wire = b"Subject: x\r\n\r\nshort\r\n" + b"q" * 201 + b"\r\nshort\r\n.\r\n"
        lines = await self.send_in_pieces(wire, [])
        self.assertEqual(lines, [b"500 5.5.2 message line too long"])
        self.assertEqual(self.session.spool_files(), [])
        self.assertEqual(await self.inbox(self.bob), [])
        self.assertEqual(self.session.command(b"NOOP\r\n"), [b"250 2.0.0 OK"])

    async def test_line_at_the_limit_inside_a_chunk(self):
        """A line of exactly ``max_line_length`` octets among others in one packet is kept."""
        message = b"Subject: x\r\n\r\n" + b"q" * 200 + b"\r\nshort\r\n"
        lines = await self.send_in_pieces(message + b".\r\n", [])
        self.assertTrue(_OK.match(lines[-1]), lines)
        [(_, _, raw)] = await self.inbox(self.bob)
        self.assertTrue(raw.endswith(b"\r\n" + message))
