"""The change bus of a cluster: PostgreSQL LISTEN/NOTIFY.

A change is sent with ``pg_notify`` inside the store transaction that made it (queued on the
transaction and sent in one statement with the others just before COMMIT), so PostgreSQL
delivers it only when that transaction commits, to every node listening, this one included: each
subscriber hears each change exactly once, whichever node made it. Each node keeps one dedicated
listening connection. When it drops, the bus reconnects with a growing delay (0.1 s to 5 s) and
LISTENs again; changes sent while it was away are lost, so after reconnecting it tells every
local subscriber ``{"type": "resync"}`` (no ``folder_id``: "look again at whatever you show").

A NOTIFY payload must stay under 8000 bytes: a change that would not fit is sent as its ``type``
and ``folder_id`` with ``"truncated": true``, which is enough to make a reader look again.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from haitatsu.interfaces import IChangeBus, StorageUnavailable
from haitatsu.storage.changes import LocalChangeBus
from haitatsu.storage.postgres import PostgresEngine, connect

#: PostgreSQL's limit is 8000 bytes including the terminating zero; keep a margin.
MAX_PAYLOAD = 7900


def encode(mailbox_id: str, change: dict) -> str:
    payload = json.dumps({"m": mailbox_id, "c": change}, separators=(",", ":"))
    if len(payload.encode("utf-8")) <= MAX_PAYLOAD:
        return payload
    small = {"type": change.get("type", "changed"), "truncated": True}
    if "folder_id" in change:
        small["folder_id"] = change["folder_id"]
    return json.dumps({"m": mailbox_id, "c": small}, separators=(",", ":"))


@implementer(IChangeBus)
class PostgresChangeBus:
    _log = Logger()

    MIN_DELAY = 0.1
    MAX_DELAY = 5.0
    #: How often the listener proves it is alive; a dead one is replaced.
    HEARTBEAT = 15.0

    def __init__(self, engine: PostgresEngine, reactor, channel: str = "haitatsu_changes"):
        if not channel.replace("_", "").isalnum():
            raise ValueError(f"bad channel name {channel!r}")
        self.engine = engine
        self.channel = channel
        self._reactor = reactor
        self._local = LocalChangeBus()
        self._conn = None
        self._running = False
        self._reconnecting = None
        self._heartbeat = None
        #: Fires (and is replaced) each time the listener is connected again; for tests.
        self.reconnected = defer.Deferred()

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self):
        self._running = True
        await self._listen()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._reactor
        self._heartbeat.start(self.HEARTBEAT, now=False)

    async def close(self):
        self._running = False
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _listen(self):
        conn = await connect(self.engine, self._reactor)
        try:
            await conn.runOperation(f"LISTEN {self.channel}")
        except Exception as e:
            conn.close()
            raise StorageUnavailable(f"LISTEN failed: {e}") from e
        if not self._running:
            conn.close()
            return
        conn.addNotifyObserver(self._notified)
        conn.on_lost = self._lost
        self._conn = conn

    def _lost(self, conn):
        if conn is not self._conn:
            return
        self._conn = None
        conn.close()
        if self._running and self._reconnecting is None:
            self._log.warn("change listener lost its connection; reconnecting")
            self._reconnecting = defer.Deferred.fromCoroutine(self._reconnect())
            self._reconnecting.addErrback(lambda f: f.trap(defer.CancelledError))

    async def _reconnect(self):
        delay = 0.0
        try:
            while self._running:
                if delay:
                    await deferLater(self._reactor, delay, lambda: None)
                try:
                    await self._listen()
                except StorageUnavailable as e:
                    delay = min(max(delay * 2, self.MIN_DELAY), self.MAX_DELAY)
                    self._log.warn(
                        "change listener cannot reconnect: {error}; next try in {delay}s",
                        error=str(e),
                        delay=delay,
                    )
                    continue
                self._log.info("change listener connected again")
                for mailbox_id in self._local.subscribed_mailboxes():
                    self._local.publish(mailbox_id, {"type": "resync"})
                reconnected, self.reconnected = self.reconnected, defer.Deferred()
                reconnected.callback(None)
                return
        finally:
            self._reconnecting = None

    def _beat(self):
        conn = self._conn
        if conn is None:
            return None
        d = conn.runOperation("SELECT 1")
        d.addTimeout(self.HEARTBEAT, self._reactor)

        def failed(failure):
            self._log.warn("change listener heartbeat failed: {error}", error=failure.value)
            if conn is self._conn:
                conn.on_lost = None
                self._lost(conn)

        return d.addErrback(failed)

    # -- IChangeBus ---------------------------------------------------------------------------

    def subscribe(self, mailbox_id, callback):
        return self._local.subscribe(mailbox_id, callback)

    def publish_in(self, txn, mailbox_id, change):
        """Queue the NOTIFY on ``txn``: the database sends a transaction's notifications in
        one statement just before its COMMIT (``PostgresDatabase``), in the order they were
        queued; a transaction that does not commit sends none."""
        txn.notifications.append((self.channel, encode(mailbox_id, change)))
        return defer.succeed(None)

    def publish(self, mailbox_id, change):
        """A change made outside a store transaction: NOTIFY on the listening connection (each
        statement is its own transaction there). If that fails, at least this node hears it."""
        conn = self._conn
        if conn is None:
            self._local.publish(mailbox_id, change)
            return
        d = conn.runOperation(
            "SELECT pg_notify(%s, %s)", (self.channel, encode(mailbox_id, change))
        )

        def failed(failure):
            self._log.warn("NOTIFY failed: {error}", error=failure.value)
            self._local.publish(mailbox_id, change)

        d.addErrback(failed)

    def _notified(self, notify):
        if notify.channel != self.channel:
            return
        try:
            data = json.loads(notify.payload)
            mailbox_id, change = data["m"], data["c"]
        except (ValueError, KeyError, TypeError):
            self._log.warn(
                "ignoring a malformed change notification {payload!r}", payload=notify.payload
            )
            return
        self._local.publish(mailbox_id, change)
