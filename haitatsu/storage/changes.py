"""The change bus of one process, for the embedded default.

Subscribers are called from the reactor thread after the change was committed. A subscriber that
raises is logged and does not keep the others from hearing about the change. The PostgreSQL bus
(``changes_pg``) fans out through one of these on each node.
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from haitatsu.interfaces import IChangeBus


@implementer(IChangeBus)
class LocalChangeBus:
    _log = Logger()

    def __init__(self):
        # mailbox id -> {token: callback}: subscribing and unsubscribing cost the same with
        # thousands of subscribers (IMAP IDLE) as with one.
        self._subscribers: dict[str, dict[object, object]] = {}

    def subscribe(self, mailbox_id, callback):
        token = object()
        self._subscribers.setdefault(mailbox_id, {})[token] = callback

        def unsubscribe():
            callbacks = self._subscribers.get(mailbox_id)
            if callbacks is not None and callbacks.pop(token, None) is not None and not callbacks:
                del self._subscribers[mailbox_id]

        return unsubscribe

    async def open(self):
        """Nothing to connect: one process is the whole cluster."""

    async def close(self):
        pass

    def subscribed_mailboxes(self) -> list[str]:
        return list(self._subscribers)

    def publish_in(self, txn, mailbox_id, change):
        txn.call_after_commit(self.publish, mailbox_id, change)

    def publish(self, mailbox_id, change):
        for callback in list(self._subscribers.get(mailbox_id, {}).values()):
            try:
                callback(change)
            except Exception:
                self._log.failure("change subscriber failed", mailbox_id=mailbox_id)
