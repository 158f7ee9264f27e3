"""BINARY (RFC 3516): FETCH BINARY/BINARY.PEEK/BINARY.SIZE and APPEND with literal8."""

from __future__ import annotations

import base64
import imaplib
import os

import imapclient
from twisted.internet import reactor, threads

from tests.imap.helpers import ADDRESS, SIMPLE, IMAPTestCase
from tests.imap.test_session import d

PAYLOAD = bytes(range(10)) + b"\x00binary\xff\x00"
TEXT = "Grüße\nzweite Zeile\n".encode()

#: Parts: 1 text/plain base64 with bare LF, 2 octet-stream base64 with NULs, 3 x-uuencode,
#: 4 CTE binary (raw NULs), 5 message/rfc822 with a quoted-printable body, 6 7bit text.
MESSAGE = (
    b"From: Dave <dave@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(TEXT).replace(b"\n", b"\r\n") + b"--XYZ\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: BASE64\r\n"
    b"\r\n" + base64.b64encode(PAYLOAD) + b"\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n`\r\nend\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"raw\x00bytes\r\n"
    b"--XYZ\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 =\r\nau lait\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain seven bit\r\n"
    b"--XYZ--\r\n"
)
TEXT_CRLF = TEXT.replace(b"\n", b"\r\n")


def literal(label: bytes, data: bytes, eight=False) -> bytes:
    return label + b" %s{%d}\r\n" % (b"~" if eight else b"", len(data)) + data


class FetchBinaryTests(IMAPTestCase):
    async def session(self):
        await self.deliver(MESSAGE)
        return await self.selected()

    @d
    async def test_base64_part_with_nul_is_a_literal8_and_its_size_matches(self):
        session = await self.session()
        answer = await session.command(b"a FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[2]", PAYLOAD, eight=True)
            + b" BINARY.SIZE[2] %d)\r\n" % len(PAYLOAD)
            + b"a OK FETCH completed\r\n",
        )

    @d
    async def test_text_part_is_decoded_with_crlf_line_ends(self):
        session = await self.session()
        answer = await session.command(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
        self.assertEqual(
            answer,
            b"* 1 FETCH (BINARY.SIZE[1] %d " % len(TEXT_CRLF)
            + literal(b"BINARY[1]", TEXT_CRLF)
            + b")\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_partial_windows_count_decoded_bytes(self):
        session = await self.session()
        answer = await session.command(
            b"a FETCH 1 (BINARY.PEEK[2]<10.5> BINARY.PEEK[2]<3.2> BINARY.PEEK[1]<20.100> "
            b"BINARY.PEEK[2]<1000.5>)"
        )
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[2]<10>", PAYLOAD[10:15], eight=True)
            + b" "
            + literal(b"BINARY[2]<3>", PAYLOAD[3:5])
            + b" "
            + literal(b"BINARY[1]<20>", TEXT_CRLF[20:])
            + b" BINARY[2]<1000> {0}\r\n)\r\n"
            + b"a OK FETCH completed\r\n",
        )

    @d
    async def test_identity_parts_nested_parts_and_the_whole_message(self):
        session = await self.session()
        answer = await session.command(
            b"a FETCH 1 (BINARY.PEEK[4] BINARY.PEEK[6] BINARY.PEEK[5.1] BINARY.SIZE[])"
        )
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[4]", b"raw\x00bytes", eight=True)
            + b" "
            + literal(b"BINARY[6]", b"plain seven bit")
            + b" "
            + literal(b"BINARY[5.1]", "café au lait".encode())
            + b" BINARY.SIZE[] %d)\r\n" % len(MESSAGE)
            + b"a OK FETCH completed\r\n",
        )
        answer = await session.command(b"b FETCH 1 BINARY.PEEK[]")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[]", MESSAGE, eight=True)
            + b")\r\nb OK FETCH completed\r\n",
        )

    @d
    async def test_single_part_message(self):
        await self.deliver(SIMPLE)
        session = await self.selected()
        body = SIMPLE[SIMPLE.index(b"\r\n\r\n") + 4 :]
        answer = await session.command(b"a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[1]", body)
            + b" BINARY.SIZE[1] %d)\r\n" % len(body)
            + b"a OK FETCH completed\r\n",
        )

    @d
    async def test_utf16_text_keeps_its_line_feed_bytes(self):
        text = "eins\nzwei\n".encode("utf-16-le")
        utf16 = (
            b"Subject: utf-16\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-16le\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(text)
        )
        await self.deliver(utf16)
        session = await self.selected()
        self.assertEqual(
            await session.command(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])"),
            b"* 1 FETCH (BINARY.SIZE[1] %d " % len(text)
            + literal(b"BINARY[1]", text, eight=True)
            + b")\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_missing_part_is_empty(self):
        session = await self.session()
        answer = await session.command(b"a FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[2.3])")
        self.assertEqual(
            answer,
            b"* 1 FETCH (BINARY[9] {0}\r\n BINARY.SIZE[2.3] 0)\r\na OK FETCH completed\r\n",
        )

    @d
    async def test_unknown_transfer_encoding_is_no_and_sets_no_flag(self):
        session = await self.session()
        self.assertEqual(
            await session.command(b"a FETCH 1 BINARY[3]"),
            b"a NO [UNKNOWN-CTE] Cannot decode the transfer encoding x-uuencode\r\n",
        )
        self.assertEqual(
            await session.command(b"b FETCH 1 BINARY.SIZE[3]"),
            b"b NO [UNKNOWN-CTE] Cannot decode the transfer encoding x-uuencode\r\n",
        )
        self.assertEqual(
            await session.command(b"c FETCH 1 FLAGS"),
            b"* 1 FETCH (FLAGS ())\r\nc OK FETCH completed\r\n",
        )
        # BODY[3] is still the part as stored.
        answer = await session.command(b"d FETCH 1 BODY.PEEK[3]")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BODY[3]", b"begin 644 x\r\n`\r\nend")
            + b")\r\nd OK FETCH completed\r\n",
        )

    @d
    async def test_binary_sets_seen_and_peek_and_size_do_not(self):
        session = await self.session()
        answer = await session.command(b"a FETCH 1 (BINARY.SIZE[6] BINARY.PEEK[6])")
        self.assertNotIn(b"FLAGS", answer)
        answer = await session.command(b"b FETCH 1 BINARY[6]")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[6]", b"plain seven bit")
            + b" FLAGS (\\Seen))\r\nb OK FETCH completed\r\n",
        )

    @d
    async def test_uid_fetch_binary(self):
        session = await self.session()
        answer = await session.command(b"a UID FETCH 1 BINARY.SIZE[5.1]")
        self.assertEqual(
            answer,
            b"* 1 FETCH (UID 1 BINARY.SIZE[5.1] %d)\r\na OK FETCH completed\r\n"
            % len("café au lait".encode()),
        )

    @d
    async def test_malformed_binary_items_are_bad(self):
        session = await self.session()
        for item in (
            b"BINARY[1.MIME]",
            b"BINARY[HEADER]",
            b"BINARY[0]",
            b"BINARY[1.]",
            b"BINARY.SIZE[1]<0.5>",
            b"BINARY[1]<0.0>",
            b"BINARY.PEEK",
            b"BINARY[1",
        ):
            answer = await session.command(b"a FETCH 1 " + item)
            self.assertTrue(answer.startswith(b"a BAD "), (item, answer))
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")

    @d
    async def test_large_attachment_decodes_exactly(self):
        payload = os.urandom(3 * 1024 * 1024 + 7)
        message = (
            b"Subject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        )
        await self.deliver(message)
        session = await self.selected()
        answer = await session.command(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])", timeout=30)
        self.assertIn(b"\x00", payload[2000000:3500000])
        self.assertEqual(
            answer,
            b"* 1 FETCH (BINARY.SIZE[1] %d " % len(payload)
            + literal(b"BINARY[1]", payload, eight=True)
            + b")\r\na OK FETCH completed\r\n",
        )
        answer = await session.command(b"b FETCH 1 BINARY.PEEK[1]<2000000.1500000>", timeout=30)
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[1]<2000000>", payload[2000000:3500000], eight=True)
            + b")\r\nb OK FETCH completed\r\n",
        )


class AppendLiteral8Tests(IMAPTestCase):
    async def stored(self, uid=1):
        folder = await self.store.get_folder(self.mailbox.id, "INBOX")
        rows = await self.store.list_folder_messages(folder.id)
        if not rows:
            return None
        [(_, info)] = await self.store.get_messages(folder.id, [rows[uid - 1].uid])
        return await self.store.read_message(info)

    @d
    async def test_append_literal8_keeps_nul_bytes(self):
        message = b"Subject: nul\r\nContent-Transfer-Encoding: binary\r\n\r\nA\x00B\r\n"
        session = await self.login()
        session.send(b"a APPEND INBOX (\\Seen) ~{%d}\r\n" % len(message))
        self.assertEqual(await session.wait_for(rb"^\+ "), b"+ Ready for literal data\r\n")
        session.send(message + b"\r\n")
        answer = await session.wait_for(rb"^a ")
        self.assertRegex(answer, rb"^a OK \[APPENDUID \d+ 1\] APPEND completed\r\n$")
        self.assertEqual(await self.stored(), message)
        # Non-synchronizing literal8 (LITERAL+ with BINARY, RFC 7888 section 6).
        session.send(b"b APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n")
        answer = await session.wait_for(rb"^b ")
        self.assertRegex(answer, rb"^b OK \[APPENDUID \d+ 2\] APPEND completed\r\n$")
        self.assertEqual(await self.stored(2), message)
        await session.command(b"c SELECT INBOX")
        answer = await session.command(b"d FETCH 1 (BINARY.PEEK[1] BODY.PEEK[])")
        self.assertEqual(
            answer,
            b"* 1 FETCH ("
            + literal(b"BINARY[1]", b"A\x00B\r\n", eight=True)
            + b" "
            + literal(b"BODY[]", message)
            + b")\r\nd OK FETCH completed\r\n",
        )

    @d
    async def test_literal8_outside_append_is_bad_and_the_session_lives(self):
        session = self.connect()
        self.assertEqual(
            await session.command(b"a LOGIN ~{5}"),
            b"a BAD A literal8 is only allowed in APPEND\r\n",
        )
        # A non-synchronizing one is read and dropped with the rest of its command.
        session.send(b"b LOGIN ~{5+}\r\nalice password\r\n")
        self.assertEqual(
            await session.wait_for(rb"^b "), b"b BAD A literal8 is only allowed in APPEND\r\n"
        )
        self.assertEqual(await session.command(b"c NOOP"), b"c OK NOOP completed\r\n")

    @d
    async def test_literal8_larger_than_the_limit_is_toobig(self):
        session = await self.login()
        self.assertEqual(
            await session.command(b"a APPEND INBOX ~{200000}"),
            b"a NO [TOOBIG] Message is larger than the limit of 100000 bytes\r\n",
        )
        self.assertEqual(await session.command(b"b NOOP"), b"b OK NOOP completed\r\n")
        self.assertIsNone(await self.stored())


class RealClientBinaryTests(IMAPTestCase):
    @d
    async def test_imaplib_fetches_binary_decoded_in_a_thread(self):
        await self.deliver(MESSAGE)
        used = []

        def in_thread(fn, *args):
            used.append(fn.__name__)
            return threads.deferToThread(fn, *args)

        self.factory.run_blocking = in_thread
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        password = self.password

        def client():
            conn = imaplib.IMAP4("127.0.0.1", port.getHost().port)
            with conn:
                conn.login(ADDRESS, password)
                caps = conn.capabilities
                conn.select("INBOX")
                typ, data = conn.uid("FETCH", "1", "(BINARY.SIZE[2] BINARY.PEEK[2] BINARY[1])")
                typ2, missing = conn.uid("FETCH", "1", "(BINARY.PEEK[3])")
                conn.logout()
                return caps, typ, data, typ2

        caps, typ, data, typ2 = await threads.deferToThread(client)
        self.assertIn("BINARY", caps)
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][1], PAYLOAD)
        self.assertTrue(data[0][0].endswith(b"BINARY[2] ~{%d}" % len(PAYLOAD)), data[0][0])
        self.assertIn(b"BINARY.SIZE[2] %d" % len(PAYLOAD), data[0][0])
        self.assertEqual(data[1][1], TEXT_CRLF)
        self.assertEqual(typ2, "NO")
        # The measuring passes ran through the factory's thread runner.
        self.assertEqual(used, ["prepare", "prepare", "prepare"])

    @d
    async def test_imapclient_fetches_binary_without_nul_as_a_plain_literal(self):
        """imapclient 3 reads no literal8 (``~{n}``), so a part without NUL octets must come as
        a plain literal, as RFC 3516 4.3 asks."""
        await self.deliver(MESSAGE)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        password = self.password

        def client():
            with imapclient.IMAPClient("127.0.0.1", port=port.getHost().port, ssl=False) as c:
                c.login(ADDRESS, password)
                c.select_folder("INBOX", readonly=True)
                return c.fetch([1], ["BINARY.PEEK[1]", "BINARY.PEEK[5.1]", "BINARY.SIZE[2]"])

        fetched = (await threads.deferToThread(client))[1]
        self.assertEqual(fetched[b"BINARY[1]"], TEXT_CRLF)
        self.assertEqual(fetched[b"BINARY[5.1]"], "café au lait".encode())
        self.assertEqual(fetched[b"BINARY.SIZE[2]"], len(PAYLOAD))
