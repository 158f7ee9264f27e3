"""The IMAP avatar (one mailbox's folders) and a session's view of its selected folder.

``IMAPRealm`` hands ``Account`` out for ``imap4.IAccount`` so twisted.cred's portal joins IMAP to
our app-password checker as it joins every other protocol. ``FolderView`` is the snapshot a
session keeps after SELECT: the sequence-number <-> UID mapping the client knows, which only
changes when the session reports it (EXISTS, EXPUNGE, FETCH FLAGS).
"""

from __future__ import annotations

import operator
import re

import attrs
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from haitatsu.imap.labels import ViewStore, is_label_folder
from haitatsu.imap.viewrows import (
    RowsByUid,
    RowSequence,
    SharedRows,
    SharedRowsCache,
    UidSequence,
    ViewRows,
    updated,
)
from haitatsu.imap.wire import decode_mailbox
from haitatsu.storage.records import MessageSummary


@implementer(IRealm)
class IMAPRealm:
    """Avatar id (a mailbox id as bytes) -> ``Account``."""

    def __init__(self, store):
        self._store = store
        #: Folder reads shared by the sessions of this listener (``viewrows``).
        self.shared_rows = SharedRowsCache()

    def requestAvatar(self, avatarId, mind, *interfaces):
        if imap4.IAccount not in interfaces:
            raise NotImplementedError("IMAPRealm only provides IAccount")
        mailbox_id = avatarId.decode("ascii") if isinstance(avatarId, bytes) else avatarId
        account = Account(ViewStore(self._store), mailbox_id, self.shared_rows)
        return imap4.IAccount, account, lambda: None


@attrs.frozen
class ListEntry:
    """One LIST/LSUB line: a name, its attributes, and the folder behind it (None for a
    hierarchy level that exists only as a parent)."""

    name: str
    attributes: tuple[str, ...]
    folder: object = None


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class Account:
    """One mailbox seen through IMAP. The server calls the store directly for folder changes
    (it needs the store's distinct refusals); the ``IAccount`` methods are thin wrappers.
    ``store`` is the store as sessions see it, with labels as folders (``ViewStore``)."""

    delimiter = "/"

    def __init__(self, store, mailbox_id: str, shared_rows: SharedRowsCache | None = None):
        self.store = store
        self.mailbox_id = mailbox_id
        self.shared_rows = shared_rows if shared_rows is not None else SharedRowsCache()

    # -- what the server uses ----------------------------------------------------------

    async def list_entries(self, reference: str, pattern: str, subscribed_only: bool = False):
        folders = await self.store.list_folders(self.mailbox_id)
        return list_entries(folders, reference, pattern, subscribed_only)

    def get_folder(self, name: str):
        return self.store.get_folder(self.mailbox_id, _canonical(name))

    # -- imap4.IAccount ----------------------------------------------------------------

    def select(self, name, rw=True):
        if isinstance(name, bytes):
            name = decode_mailbox(name)
        return defer.ensureDeferred(self._select(name, rw))

    async def _select(self, name, rw):
        folder = await self.get_folder(name)
        if folder is None:
            return None
        # A label view has no MODSEQ to tell one state of it from another: never shared.
        label = is_label_folder(folder)
        if label:
            shared = SharedRows(await self.store.folder_summaries(folder.id))
        else:
            shared = self.shared_rows.get(folder)
            if shared is None:
                folder, shared = await self._read_changes(folder)
            if shared is None:
                folder_id = folder.id
                shared = await self.shared_rows.read(
                    folder, lambda: self.store.folder_summaries(folder_id)
                )
        return FolderView(
            folder=folder, readonly=not rw, rows=shared, highest_modseq=folder.highest_modseq
        )

    async def _read_changes(self, folder):
        """``(folder, SharedRows)`` from the newest read of the folder some session still
        holds, brought up to date by what changed since (``store.folder_delta``: its cost is
        the number of changes); ``(folder, None)`` when there is none to start from or the
        delta is not complete (pruned past it). The folder is the delta's, read before its
        rows, so the rows cover at least its HIGHESTMODSEQ (as a fresh read would)."""
        base = self.shared_rows.latest(folder)
        if base is None:
            return folder, None
        modseq, rows = base
        delta = await self.store.folder_delta(folder.id, modseq)
        if delta.folder is None or not delta.complete:
            return folder, None
        if delta.folder.uid_validity != folder.uid_validity:
            return folder, None
        folder = delta.folder
        shared = self.shared_rows.get(folder)
        if shared is None:
            changed = [_summary(row) for row in delta.changed]
            shared = updated(rows, changed, delta.vanished)
            self.shared_rows.put(folder, shared)
        return folder, shared

    def listMailboxes(self, ref, wildcard):
        ref = decode_mailbox(ref) if isinstance(ref, bytes) else ref
        wildcard = decode_mailbox(wildcard) if isinstance(wildcard, bytes) else wildcard
        d = defer.ensureDeferred(self.list_entries(ref, wildcard))
        d.addCallback(lambda entries: [(e.name, e) for e in entries])
        return d

    def isSubscribed(self, name):
        d = self.get_folder(name)
        d.addCallback(lambda folder: bool(folder and folder.subscribed))
        return d

    def subscribe(self, name):
        return defer.ensureDeferred(self.set_subscribed(_text(name), True))

    def unsubscribe(self, name):
        return defer.ensureDeferred(self.set_subscribed(_text(name), False))

    def addMailbox(self, name, mbox=None):
        return self.create(name)

    def create(self, pathspec):
        return self.store.create_folder(self.mailbox_id, _text(pathspec).rstrip("/"))

    def delete(self, name):
        return defer.ensureDeferred(self._by_name(_text(name), self.store.delete_folder))

    def rename(self, oldname, newname):
        return defer.ensureDeferred(
            self._by_name(_text(oldname), self.store.rename_folder, _text(newname))
        )

    async def set_subscribed(self, name, subscribed):
        return await self._by_name(name, self.store.set_folder_subscribed, subscribed)

    async def _by_name(self, name, method, *args):
        folder = await self.get_folder(name)
        if folder is None:
            raise imap4.MailboxException("No such mailbox")
        return await method(folder.id, *args)

    # -- imap4.INamespacePresenter -------------------------------------------------------

    def getPersonalNamespaces(self):
        return [[b"", b"/"]]

    def getSharedNamespaces(self):
        return None

    def getUserNamespaces(self):
        return None


def _text(name) -> str:
    return decode_mailbox(name) if isinstance(name, bytes) else name


def _canonical(name: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX" + name[5:]
    return name


def _pattern_regex(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def list_entries(folders, reference: str, pattern: str, subscribed_only=False) -> list[ListEntry]:
    """The LIST/LSUB answer for ``reference`` + ``pattern`` over ``folders``.

    INBOX matches case-insensitively; a level that exists only as a parent of matching folders
    (``a`` for ``a/b`` under ``%``) is listed ``\\Noselect``, as RFC 3501 asks.
    """
    if reference and not reference.endswith("/") and pattern:
        reference += "/"
    regex = _pattern_regex(_canonical(reference + pattern))
    by_name = {f.name: f for f in folders if not subscribed_only or f.subscribed}
    all_names = {f.name for f in folders}
    parents = _parents(all_names)
    if subscribed_only:
        # RFC 3501 6.3.9: a level above a subscribed folder that the pattern reaches but
        # that is not subscribed itself (``%`` stopping at ``foo`` of ``foo/bar``) is listed
        # \Noselect, so the client can walk down to the subscription.
        implied = {
            p
            for p in _parents(by_name) - set(by_name)
            if any(n.startswith(p + "/") and not regex.fullmatch(n) for n in by_name)
        }
    else:
        implied = parents - all_names
    entries = []
    for name in sorted(set(by_name) | implied, key=lambda n: (n != "INBOX", n)):
        if not regex.fullmatch(name):
            continue
        has_children = name in parents
        attributes = []
        folder = by_name.get(name)
        if folder is None:
            attributes.append("\\Noselect")
        attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if folder is not None and folder.special_use:
            attributes.append(folder.special_use)
        entries.append(ListEntry(name=name, attributes=tuple(attributes), folder=folder))
    return entries


def _parents(names) -> set[str]:
    parents = set()
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parents.add("/".join(parts[:i]))
    return parents


_row_flags = operator.attrgetter("flags")


def _summary(row) -> MessageSummary:
    """A ``MailboxMessage`` of a folder delta as the light row a view holds."""
    return MessageSummary(row.uid, row.modseq, row.flags, row.internal_date, row.size_bytes)


@attrs.define
class Update:
    """What changed between a session's view and the store, in the order to report it."""

    expunged: list[int] = attrs.Factory(list)  # sequence numbers, descending
    vanished: list[int] = attrs.Factory(list)  # the same messages' UIDs, ascending
    flags: list[tuple[int, object]] = attrs.Factory(list)  # (seq, row)
    exists: int | None = None
    #: Rows and UIDs the refresh read from the store (what it cost).
    read: int = 0

    def __bool__(self):
        return bool(self.expunged or self.flags or self.exists is not None)


@attrs.define
class FolderView:
    """A session's snapshot of its selected folder, kept in UID order.

    The rows are a ``viewrows.ViewRows``: a read shared with the other sessions that selected
    the folder in the same state, plus this session's own changes. ``rows``, ``uids`` and
    ``by_uid`` read them as a sequence of rows, a sequence of UIDs and a mapping by UID; they
    change only through ``update_rows``, ``replace_row``, ``append_rows`` and ``remove``."""

    folder: object
    readonly: bool
    #: The rows to start from: a ``SharedRows`` (from ``Account.select``) or rows in any order.
    rows: object = attrs.field(factory=list)
    #: The folder's HIGHESTMODSEQ as far as this session has told its client (RFC 7162): read
    #: before the rows of each refresh, so it never covers a change not yet reported.
    highest_modseq: int = 0
    uids: UidSequence = attrs.field(init=False)
    by_uid: RowsByUid = attrs.field(init=False)
    view_rows: ViewRows = attrs.field(init=False)

    def __attrs_post_init__(self):
        shared = self.rows
        if not isinstance(shared, SharedRows):
            shared = SharedRows(sorted(shared, key=lambda r: r.uid))
        self.view_rows = ViewRows(shared)
        self.rows = RowSequence(self.view_rows)
        self.uids = UidSequence(self.view_rows)
        self.by_uid = RowsByUid(self.view_rows)

    @property
    def exists(self) -> int:
        return len(self.view_rows)

    def seq(self, uid: int) -> int:
        p = self.view_rows.position(uid)
        if p < 0:
            raise KeyError(uid)
        return p + 1

    def row(self, uid: int):
        return self.by_uid[uid]

    def uids_at(self, indexes) -> list[int]:
        """The UIDs at the (ascending) 0-based ``indexes``, a slice per run of them."""
        out: list[int] = []
        start = prev = None
        for i in indexes:
            if prev is not None and i == prev + 1:
                prev = i
                continue
            if start is not None:
                out.extend(self.view_rows.uids_slice(start, prev + 1))
            start = prev = i
        if start is not None:
            out.extend(self.view_rows.uids_slice(start, prev + 1))
        return out

    def rows_for(self, uids) -> tuple[int, list] | None:
        """``(first sequence number, rows)`` when ``uids`` (ascending) are a run of
        consecutive messages of the view, else None: a bulk read without a lookup per UID."""
        if not uids:
            return None
        p = self.view_rows.position(uids[0])
        if p < 0 or self.view_rows.uids_slice(p, p + len(uids)) != list(uids):
            return None
        return p + 1, self.view_rows.rows_slice(p, p + len(uids))

    def first_unseen(self) -> int | None:
        shared = self.view_rows.plain()
        if shared is not None:
            # Straight after SELECT: no walk at all when every message is seen.
            unseen = {f for f in shared.flag_sets() if "\\Seen" not in f}
            if not unseen:
                return None
            for i, flags in enumerate(map(_row_flags, shared.rows)):
                if flags in unseen:
                    return i + 1
            return None
        for i, row in enumerate(self.rows):
            if "\\Seen" not in row.flags:
                return i + 1
        return None

    def keywords(self) -> list[str]:
        seen: dict[str, None] = {}
        shared = self.view_rows.plain()
        flag_sets = shared.flag_sets() if shared is not None else {row.flags for row in self.rows}
        for flags in flag_sets:
            for flag in flags:
                if not flag.startswith("\\"):
                    seen.setdefault(flag, None)
        return sorted(seen)

    def replace_row(self, row) -> int | None:
        """Put a newer row of a message the view has in place; return its sequence number
        (None when the view does not have it)."""
        p = self.view_rows.position(row.uid)
        if p < 0:
            return None
        self.view_rows.replace(p, row)
        return p + 1

    def append_rows(self, rows) -> None:
        """Add new messages (rows sorted by UID, above every UID the view has) at the end."""
        self.view_rows.append(rows)

    def update_rows(self, changed) -> list[int]:
        """Take in rows the session itself changed (STORE, \\Seen); return their UIDs."""
        return [row.uid for row in changed if self.replace_row(row) is not None]

    def remove(self, uids) -> list[int]:
        """Drop expunged UIDs; return the EXPUNGE sequence numbers in reporting order.

        Highest first, so each number is still valid when the client applies the previous ones.
        """
        seqs = []
        for uid in sorted(set(uids), reverse=True):
            p = self.view_rows.position(uid)
            if p >= 0:
                seqs.append(p + 1)
                self.view_rows.delete(p)
        return seqs

    def apply_delta(self, changed, vanished) -> Update:
        """Take in what changed in the folder since the view's MODSEQ (``store.folder_delta``):
        ``changed``, live rows with a higher MODSEQ, by UID; ``vanished``, UIDs that left.
        Return what to tell the client. Costs the size of the delta (plus the list shifts of
        the expunged), never a pass over the whole folder.

        A row may be seen again by a later delta (reads overlap by design): a known row whose
        flags and MODSEQ are unchanged, or a vanished UID no longer in the view, is nothing
        new. A row below the view's last UID that the view never had cannot be announced (IMAP
        only adds messages at the end) and cannot occur: UIDs are taken in commit order."""
        update = Update(read=len(changed) + len(vanished))
        gone = set(vanished)
        update.vanished = sorted(u for u in gone if u in self.by_uid)
        update.expunged = self.remove(update.vanished)
        last = self.uids[-1] if self.uids else 0
        added = []
        for new in changed:
            if new.uid in gone:
                continue  # expunged after the row was read
            old = self.by_uid.get(new.uid)
            if old is None:
                if new.uid > last:
                    added.append(new)
                continue
            if new.flags != old.flags or new.modseq != old.modseq:
                seq = self.replace_row(new)
                # A label view is NOMODSEQ: a new MODSEQ alone is nothing to tell its client.
                if new.flags != old.flags or not getattr(self.folder, "nomodseq", False):
                    update.flags.append((seq, new))
        if added:
            added.sort(key=lambda r: r.uid)
            self.append_rows(added)
            update.exists = len(self.uids)
        return update
