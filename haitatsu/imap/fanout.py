"""The IMAP sessions of one process and the store's change bus.

Thousands of sessions may sit in IDLE on the same few folders. What each one costs while it
waits is an entry in a dict: no thread, no timer of its own (other than the idle timeout's one
``DelayedCall``), no polling. ``ChangeFanout`` subscribes to the store's change bus once per
mailbox that has a selected session (on PostgreSQL the bus itself is one LISTEN connection per
node) and hands each change to that mailbox's sessions.

When a change arrives, every session that has the folder selected wants to catch up, and most
of them from the same MODSEQ. ``delta`` gives them one ``store.folder_delta`` read between them:
a session joins a read already under way for the same folder and MODSEQ as long as no change
has arrived since that read began (the read might predate the change the session is catching up
with); otherwise it starts a new one. So one delivery to a folder with 2,000 sessions in IDLE is
one small read, whose cost is the number of changes, not the size of the folder.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


class ChangeFanout:
    _log = Logger()

    def __init__(self, store):
        self.store = store
        self._sessions: dict[str, dict[object, object]] = {}
        self._bus_unsubscribe: dict[str, object] = {}
        #: Changes heard so far (by this process); a read started at generation g covers every
        #: change heard up to g.
        self._generation = 0
        #: (folder id, modseq) -> (generation at start, waiting Deferreds)
        self._reads: dict[tuple[str, int], tuple[int, list]] = {}
        #: Store reads started by ``delta``: for tests and logs.
        self.reads_started = 0

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, mailbox_id: str, callback):
        """Call ``callback(change)`` for each change of ``mailbox_id``; return the (synchronous)
        unsubscribe callable."""
        sessions = self._sessions.get(mailbox_id)
        if sessions is None:
            sessions = self._sessions[mailbox_id] = {}
            self._bus_unsubscribe[mailbox_id] = self.store.changes.subscribe(
                mailbox_id, lambda change: self._publish(mailbox_id, change)
            )
        token = object()
        sessions[token] = callback

        def unsubscribe():
            current = self._sessions.get(mailbox_id)
            if current is None or current.pop(token, None) is None or current:
                return
            del self._sessions[mailbox_id]
            self._bus_unsubscribe.pop(mailbox_id)()

        return unsubscribe

    def subscribers(self, mailbox_id: str) -> int:
        return len(self._sessions.get(mailbox_id, ()))

    def _publish(self, mailbox_id, change):
        self._generation += 1
        for callback in list(self._sessions.get(mailbox_id, {}).values()):
            try:
                callback(change)
            except Exception:
                self._log.failure("IMAP change subscriber failed", mailbox_id=mailbox_id)

    # -- shared reads --------------------------------------------------------------------------

    def delta(self, folder_id: str, modseq: int, fresh: bool = False) -> defer.Deferred:
        """Fire with ``store.folder_delta(folder_id, modseq)``, read after every change this
        process had heard when it was called; shared with the other sessions asking the same.
        ``fresh``: read after this call, whatever was heard (a session that just made a change
        itself, whose announcement may still be on its way from PostgreSQL)."""
        key = (folder_id, int(modseq))
        d = defer.Deferred()
        pending = self._reads.get(key)
        if not fresh and pending is not None and pending[0] == self._generation:
            pending[1].append(d)
            return d
        waiters = [d]
        self._reads[key] = (self._generation, waiters)
        self.reads_started += 1

        def done(result):
            if self._reads.get(key, (None, None))[1] is waiters:
                del self._reads[key]
            failed = isinstance(result, Failure)
            for waiter in waiters:
                (waiter.errback if failed else waiter.callback)(result)
            return None  # handed to every waiter

        self.store.folder_delta(folder_id, modseq).addBoth(done)
        return d
