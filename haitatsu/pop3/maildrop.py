"""The POP3 avatar: a mailbox's INBOX as it was when the session logged in.

POP3 numbers messages 1..n for the whole session (RFC 1939), so the maildrop is a snapshot of
INBOX's live rows taken at login. Messages IMAP or other sessions add later appear at the next
login; messages removed meanwhile answer ``-ERR`` when retrieved and are skipped at QUIT.

UIDL is ``<uidvalidity>.<uid>`` of the INBOX row: stable across sessions and nodes for as long as
the message stays in INBOX (a message moved out and back is a new message to POP3, as to IMAP).
"""

from __future__ import annotations

from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.mail import pop3
from zope.interface import implementer

from haitatsu.interfaces import StorageUnavailable


class NoSuchMessage(ValueError):
    """The message number is not in the maildrop (or the message is marked deleted)."""


@implementer(IRealm)
class POP3Realm:
    """Avatar id (a mailbox id as bytes) -> the ``Maildrop`` of its INBOX, loaded at login."""

    def __init__(self, store):
        self._store = store

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pop3.IMailbox not in interfaces:
            raise NotImplementedError("POP3Realm only provides pop3.IMailbox")
        mailbox_id = avatarId.decode("ascii") if isinstance(avatarId, bytes) else avatarId
        d = defer.Deferred.fromCoroutine(Maildrop.load(self._store, mailbox_id))
        return d.addCallback(lambda maildrop: (pop3.IMailbox, maildrop, lambda: None))


@implementer(pop3.IMailbox)
class Maildrop:
    """``pop3.IMailbox`` over a snapshot of INBOX. Indexes are 0-based, as twisted's are."""

    def __init__(self, store, mailbox_id: str, folder, rows):
        self.store = store
        self.mailbox_id = mailbox_id
        self.folder = folder
        self.rows = list(rows)
        self.deleted: set[int] = set()

    @classmethod
    async def load(cls, store, mailbox_id: str) -> Maildrop:
        folder = await store.get_folder(mailbox_id, "INBOX")
        if folder is None:
            raise StorageUnavailable(f"mailbox {mailbox_id} has no INBOX")
        rows = await store.list_folder_messages(folder.id)
        return cls(store, mailbox_id, folder, rows)

    # -- what the server uses ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int):
        """The live (not DELE'd) row at a 0-based index, or ``NoSuchMessage``."""
        if not 0 <= index < len(self.rows) or index in self.deleted:
            raise NoSuchMessage(index)
        return self.rows[index]

    def live(self):
        """``(index, row)`` for every message not marked deleted."""
        return [(i, r) for i, r in enumerate(self.rows) if i not in self.deleted]

    def uidl(self, row) -> bytes:
        return b"%d.%d" % (self.folder.uid_validity, row.uid)

    async def open(self, index: int):
        """A binary file object with the message's stored bytes, or ``NoSuchMessage`` if it left
        INBOX since login."""
        row = self.row(index)
        found = await self.store.get_messages(self.folder.id, [row.uid])
        if not found:
            raise NoSuchMessage(index)
        _, info = found[0]
        return await self.store.open_message(info)

    async def commit(self) -> list[int]:
        """Apply the deletions (RFC 1939's UPDATE state); return the UIDs removed."""
        uids = [self.rows[i].uid for i in sorted(self.deleted)]
        if not uids:
            return []
        return await self.store.delete_messages(self.folder.id, uids)

    # -- pop3.IMailbox -----------------------------------------------------------------

    def listMessages(self, i=None):
        if i is None:
            return [0 if n in self.deleted else r.size_bytes for n, r in enumerate(self.rows)]
        if not 0 <= i < len(self.rows):
            raise NoSuchMessage(i)
        return 0 if i in self.deleted else self.rows[i].size_bytes

    def getMessage(self, i):
        return defer.Deferred.fromCoroutine(self.open(i))

    def getUidl(self, i):
        return self.uidl(self.row(i))

    def deleteMessage(self, i):
        self.row(i)
        self.deleted.add(i)

    def undeleteMessages(self):
        self.deleted.clear()

    def sync(self):
        return defer.Deferred.fromCoroutine(self.commit())
