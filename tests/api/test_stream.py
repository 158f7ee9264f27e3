"""Server-Sent Events over a real socket: ``GET /api/v1/mailboxes/:id/stream``.

The client is a raw TCP connection speaking HTTP/1.0 (so the stream is not chunked), reading
SSE frames as they arrive.
"""

from __future__ import annotations

import json
import smtplib

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.server import Site

from haitatsu.api import HaitatsuAPI
from haitatsu.metrics import Metrics
from haitatsu.smtp import InboundSMTPFactory
from haitatsu.storage.records import Delivery
from haitatsu.storage.store.events import Received
from tests.api.client import TOKEN, LiveConfig
from tests.smtp.helpers import make_config, temp_dir
from tests.storage.test_events import deliver
from tests.support import PG_SKIP, make_pg_store, make_store

MESSAGE = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: live\r\n\r\nHello.\r\n"


class SSEClient(Protocol):
    """Collects the response; ``next_event(name)`` waits for the next frame of that name."""

    def __init__(self, path: str, last_event_id: str | None = None, token: str = TOKEN):
        self.request = f"GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n"
        if last_event_id:
            self.request += f"Last-Event-ID: {last_event_id}\r\n"
        self.request += "\r\n"
        self.buffer = b""
        self.head = None
        self.frames: list[dict] = []
        self.comments: list[str] = []
        self._waiters: list = []
        self.closed = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request.encode())

    def dataReceived(self, data):
        self.buffer += data
        if self.head is None and b"\r\n\r\n" in self.buffer:
            self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        while self.head is not None and b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            frame = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif ": " in line:
                    key, value = line.split(": ", 1)
                    frame[key] = value
            if "event" in frame:
                frame["data"] = json.loads(frame["data"])
                self.frames.append(frame)
        for waiter in list(self._waiters):
            waiter()

    def connectionLost(self, reason):
        self.closed.callback(None)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ")[1])

    def wait(self, predicate, timeout: float = 5.0):
        d = defer.Deferred()

        def check():
            result = predicate()
            if result and not d.called:
                self._waiters.remove(check)
                d.callback(result)

        self._waiters.append(check)
        check()
        d.addTimeout(timeout, reactor)
        return d

    def next_event(self, name: str, after: int = 0):
        def find():
            for frame in self.frames[after:]:
                if frame["event"] == name:
                    return frame
            return None

        return self.wait(find)

    def names(self) -> list[str]:
        return [f["event"] for f in self.frames]


class StreamTestsMixin:
    async def make(self):
        raise NotImplementedError

    async def setUp(self):
        self.store = await self.make()
        self.bob = await self.store.create_mailbox("bob@example.com")
        self.api = HaitatsuAPI(LiveConfig(), self.store, None, reactor, metrics=Metrics(False))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(self.api.resource())
        )
        self.addCleanup(port.stopListening)
        self.api_port = port.getHost().port

    async def open_stream(self, mailbox_id=None, last_event_id=None, token=TOKEN):
        client = SSEClient(
            f"/api/v1/mailboxes/{mailbox_id or self.bob.id}/stream", last_event_id, token
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.api_port)
        factory = Factory()
        factory.buildProtocol = lambda addr: client
        await endpoint.connect(factory)
        self.addCleanup(lambda: client.transport.loseConnection())
        await client.wait(lambda: client.head is not None)
        return client

    async def deliver_to_bob(self, rcpt="bob@example.com"):
        [placed] = await deliver(
            self.store,
            [Delivery(self.bob.id)],
            [Received(rcpt, "bob@example.com", "", (self.bob.id,))],
            MESSAGE,
        )
        return placed

    async def test_resume_with_last_event_id_replays_what_was_missed(self):
        await self.deliver_to_bob("bob@example.com")
        await self.deliver_to_bob("bob+second@example.com")
        await self.deliver_to_bob("bob+third@example.com")
        events = sorted(await self.store.list_events(), key=lambda e: e.id)
        client = await self.open_stream(last_event_id=events[0].id)
        await client.next_event("resync")
        replayed = [f for f in client.frames if f["event"] == "message.received"]
        self.assertEqual([f["id"] for f in replayed], [e.id for e in events[1:]])
        self.assertEqual(
            [f["data"]["original_rcpt"] for f in replayed],
            ["bob+second@example.com", "bob+third@example.com"],
        )
        # And the live feed continues after the replay, without repeating anything.
        seen = len(client.frames)
        await self.deliver_to_bob("bob+fourth@example.com")
        live = await client.next_event("message.received", after=seen)
        self.assertEqual(live["data"]["original_rcpt"], "bob+fourth@example.com")
        ids = [f["id"] for f in client.frames if f["event"] == "message.received"]
        self.assertEqual(len(ids), len(set(ids)))


class SQLiteStreamTests(StreamTestsMixin, unittest.TestCase):
    async def make(self):
        return await make_store(self)

    async def test_smtp_delivery_reaches_the_stream(self):
        root = temp_dir(self)
        factory = InboundSMTPFactory(lambda: make_config(), self.store, reactor, root + "/spool")
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = await self.open_stream()
        self.assertEqual(client.status, 200)
        self.assertIn(b"content-type: text/event-stream", client.head.lower())

        def send():
            with smtplib.SMTP("127.0.0.1", port.getHost().port, timeout=10) as c:
                c.sendmail("alice@example.org", ["bob+live@example.com"], MESSAGE)

        await deferToThread(send)
        received = await client.next_event("message.received")
        [event] = await self.store.list_events()
        self.assertEqual(received["id"], event.id)
        self.assertEqual(received["data"], event.payload)
        self.assertEqual(received["data"]["original_rcpt"], "bob+live@example.com")
        self.assertEqual(received["data"]["plus_tag"], "live")
        exists = await client.next_event("message.exists")
        self.assertEqual(exists["data"]["mailbox_id"], self.bob.id)
        self.assertEqual(exists["data"]["uid"], 1)

    async def test_flags_moves_and_folders_are_named_events(self):
        placed = await self.deliver_to_bob()
        client = await self.open_stream()
        inbox = await self.store.get_folder(self.bob.id, "INBOX")
        await self.store.store_flags(inbox.id, [placed.uid], ["\\Seen"], "+")
        flags = await client.next_event("message.flags")
        self.assertEqual(flags["data"]["flags"], ["\\Seen"])
        await self.store.create_folder(self.bob.id, "Projects")
        created = await client.next_event("folder.created")
        self.assertEqual(created["data"]["name"], "Projects")
        await self.store.delete_messages(inbox.id, [placed.uid])  # to Trash: a move
        moved = await client.next_event("message.moved")
        trash = await self.store.get_folder(self.bob.id, "Trash")
        self.assertEqual(
            (moved["data"]["id"], moved["data"]["from_folder_id"], moved["data"]["folder_id"]),
            (placed.id, inbox.id, trash.id),
        )
        self.assertIn("message.expunged", client.names())

    async def test_heartbeats_and_clean_close(self):
        self.api.sse_heartbeat_seconds = 0.05
        client = await self.open_stream()
        await client.wait(lambda: client.comments.count("heartbeat") >= 2)
        self.assertIn(self.bob.id, self.store.changes.subscribed_mailboxes())
        client.transport.loseConnection()
        await client.closed
        for _ in range(100):
            if self.bob.id not in self.store.changes.subscribed_mailboxes():
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertNotIn(self.bob.id, self.store.changes.subscribed_mailboxes())

    async def test_errors_before_the_stream_starts(self):
        client = await self.open_stream(token="wrong")
        self.assertEqual(client.status, 401)
        client = await self.open_stream(mailbox_id="01JNOTTHERE0000000000000000")
        self.assertEqual(client.status, 404)
        await client.closed
        self.assertIn(b"mailbox_not_found", client.buffer)
        client = await self.open_stream(last_event_id="not-an-id")
        self.assertEqual(client.status, 400)


class PostgresStreamTests(StreamTestsMixin, unittest.TestCase):
    skip = PG_SKIP

    async def make(self):
        return await make_pg_store(self)

    async def test_an_event_written_on_another_node_reaches_the_stream(self):
        """Store B (another node: its own pool and LISTEN connection) delivers; the stream
        served by node A's API sends it."""
        from haitatsu.storage import build_postgres_store

        other = build_postgres_store(reactor, self.store.db.engine.dsn, self.mktemp() + "-blobs", 2)
        await other.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(other.close()))
        client = await self.open_stream()
        [placed] = await deliver(
            other,
            [Delivery(self.bob.id)],
            [Received("bob+b@example.com", "bob@example.com", "b", (self.bob.id,))],
            MESSAGE,
        )
        received = await client.next_event("message.received")
        self.assertEqual(received["data"]["message_id"], placed.message_id)
        self.assertEqual(received["data"]["original_rcpt"], "bob+b@example.com")
