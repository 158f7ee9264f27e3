"""The change bus of one process, for the embedded default.

Subscribers are called from the reactor thread after the change was committed. A subscriber that
raises is logged and does not keep the others from hearing about the change. The PostgreSQL bus
(``changes_pg``) fans out through one of these on each node.
"""

from __future__ import annotations

from collections import defaultdict

from twisted.logger import Logger
from zope.interface import implementer

from haitatsu.interfaces import IChangeBus


@implementer(IChangeBus)
class LocalChangeBus:
    _log = Logger()

    def __init__(self):
        self._subscribers: dict[str, list] = defaultdict(list)

    def subscribe(self, mailbox_id, callback):
        self._subscribers[mailbox_id].append(callback)

        def unsubscribe():
            callbacks = self._subscribers.get(mailbox_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
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
        for callback in list(self._subscribers.get(mailbox_id, ())):
            try:
                callback(change)
            except Exception:
                self._log.failure("change subscriber failed", mailbox_id=mailbox_id)
