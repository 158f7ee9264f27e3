"""Labels as IMAP folders (API.md 5.5; docs/imap.md "Labels as folders").

Each label of the mailbox is the folder ``Labels/<name>``; ``Labels`` itself is a ``\\Noselect``
level, listed while at least one label exists (it is the parent of every label folder, so the
hierarchy rules of LIST produce it). A label named ``a/b`` is ``Labels/a/b`` under an implied
``Labels/a``.

``LabelFolder`` stands for a label wherever the session expects a ``Folder``. Its ``id`` is the
label's id behind ``label:`` (folder ids are bare ULIDs, so the two never meet) and it has no
MODSEQ: a label view is a ``NOMODSEQ`` mailbox (RFC 7162 3.1.2.2), since a message's MODSEQ
belongs to the folder it lives in.

``ViewStore`` is the store as an IMAP session sees it. The folder calls a session makes (list,
get, status and select, fetch, store, expunge, copy, move, append, create, delete, rename,
subscribe) accept a label folder's id or name and go to the store's label-view methods
(``storage/store/label_views.py``); every other attribute is the store's own. So the command
handlers treat a label folder as any folder, and what a label does differently lives here and
in the store:

- CREATE ``Labels/x`` creates the label ``x``; ``Labels`` itself cannot be created (or renamed
  to). DELETE removes the label (its messages stay where they live). RENAME renames it, with
  the labels below it; renaming a label into a folder or a folder into a label is refused.
- COPY into a label adds the label; MOVE into it also takes the messages out of the source view
  (from a folder: into Archive). APPEND into a label stores the message in Archive with the
  label. COPY/MOVE out of a label work as from a folder. EXPUNGE removes the label.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from haitatsu.imap.wire import IMAPSyntaxError
from haitatsu.interfaces import Conflict, FolderExists, InvalidFolderName
from haitatsu.storage.records import Label
from haitatsu.storage.store.common import folder_name
from haitatsu.storage.store.sync import FolderCounts, FolderDelta

#: The level every label folder is listed under.
ROOT = "Labels"
_PREFIX = ROOT + "/"
_ID_PREFIX = "label:"


@attrs.frozen
class LabelFolder:
    """A label where the IMAP code expects a ``Folder`` (the same attributes it reads)."""

    label: Label

    system = False
    special_use = ""
    #: RFC 7162: no MODSEQ in this mailbox (STATUS HIGHESTMODSEQ is 0).
    highest_modseq = 0
    nomodseq = True

    @property
    def id(self) -> str:
        return _ID_PREFIX + self.label.id

    @property
    def name(self) -> str:
        return _PREFIX + self.label.name

    @property
    def mailbox_id(self) -> str:
        return self.label.mailbox_id

    @property
    def uid_validity(self) -> int:
        return self.label.uid_validity

    @property
    def uid_next(self) -> int:
        return self.label.uid_next

    @property
    def subscribed(self) -> bool:
        return self.label.subscribed


def label_name(folder_name: str) -> str | None:
    """The label a folder name stands for (``x`` for ``Labels/x``), or None."""
    if folder_name.startswith(_PREFIX):
        return folder_name[len(_PREFIX) :]
    return None


def label_id_of(folder_id: str) -> str | None:
    """The label id behind a label folder's id, or None for a real folder's id."""
    if folder_id.startswith(_ID_PREFIX):
        return folder_id[len(_ID_PREFIX) :]
    return None


def is_label_folder(folder) -> bool:
    return getattr(folder, "nomodseq", False)


def selected_change(folder, change: dict) -> tuple[bool, bool]:
    """``(relevant, deleted)``: whether a change on the mailbox's bus concerns the session that
    has ``folder`` selected, and whether it deleted that folder.

    A label view may show a message of any folder, so every change but another label's may
    concern it. A folder view hears its own folder's changes and those naming no folder (a
    bus resync), not a label's.
    """
    kind = change.get("type")
    label_id = label_id_of(folder.id)
    if label_id is not None:
        other = change.get("label_id")
        if other is not None and other != label_id:
            return False, False
        return True, kind == "label_deleted" and other == label_id
    if "folder_id" in change:
        relevant = change["folder_id"] == folder.id
    else:
        relevant = "label_id" not in change
    return relevant, relevant and kind == "folder_deleted"


def _refuse_reserved(name: str):
    if name == ROOT:
        raise InvalidFolderName(f"{ROOT} holds the labels: create {ROOT}/<name> for a label")


def _checked_label(name: str) -> str:
    """The REST API's rules for a label name (haitatsu/api/names.py): the store's folder-name
    checks (length, control characters, empty levels), and no ``.`` or ``..`` level."""
    folder_name(name)
    if any(level in (".", "..") for level in name.split("/")):
        raise InvalidFolderName('"." and ".." are not allowed as a label level')
    return name


class ViewStore:
    """The store with label folders (see the module docstring)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    # -- folders -----------------------------------------------------------------------------

    def list_folders(self, mailbox_id):
        """The mailbox's folders and its labels as ``LabelFolder``s. A real folder named
        ``Labels/...`` (only the REST API can make one) is hidden behind the labels."""
        return defer.ensureDeferred(self._list_folders(mailbox_id))

    async def _list_folders(self, mailbox_id):
        folders = await self._store.list_folders(mailbox_id)
        labels = await self._store.list_labels(mailbox_id)
        visible = [f for f in folders if label_name(f.name) is None]
        return visible + [LabelFolder(label) for label in labels]

    def get_folder(self, mailbox_id, name):
        lname = label_name(name)
        if lname is None:
            return self._store.get_folder(mailbox_id, name)
        return self._store.get_label_by_name(mailbox_id, lname).addCallback(_as_folder)

    def get_folder_by_id(self, folder_id):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.get_folder_by_id(folder_id)
        return self._store.get_label(label_id).addCallback(_as_folder)

    def create_folder(self, mailbox_id, name, *args, **kwargs):
        return defer.ensureDeferred(self._create(mailbox_id, name, *args, **kwargs))

    async def _create(self, mailbox_id, name, *args, **kwargs):
        _refuse_reserved(name)
        lname = label_name(name)
        if lname is None:
            return await self._store.create_folder(mailbox_id, name, *args, **kwargs)
        if kwargs.get("special_use") or (args and args[0]):
            raise InvalidFolderName("a label has no special use")
        try:
            label = await self._store.create_label(mailbox_id, _checked_label(lname))
        except Conflict:
            raise FolderExists(name) from None
        return LabelFolder(label)

    def delete_folder(self, folder_id, *args, **kwargs):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.delete_folder(folder_id, *args, **kwargs)
        return self._store.delete_label(label_id).addCallback(_as_folder)

    def rename_folder(self, folder_id, new_name, *args, **kwargs):
        return defer.ensureDeferred(self._rename(folder_id, new_name, *args, **kwargs))

    async def _rename(self, folder_id, new_name, *args, **kwargs):
        _refuse_reserved(new_name)
        label_id, new_label = label_id_of(folder_id), label_name(new_name)
        if label_id is None and new_label is not None:
            raise InvalidFolderName("a folder cannot be renamed into a label")
        if label_id is None:
            return await self._store.rename_folder(folder_id, new_name, *args, **kwargs)
        if new_label is None:
            raise InvalidFolderName(f"a label can only be renamed within {ROOT}/")
        try:
            label = await self._store.rename_label_tree(label_id, _checked_label(new_label))
        except FolderExists:
            raise FolderExists(new_name) from None
        except Conflict:  # a concurrent rename took the name first
            raise FolderExists(new_name) from None
        return _as_folder(label)

    def set_folder_subscribed(self, folder_id, subscribed):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.set_folder_subscribed(folder_id, subscribed)
        return self._store.set_label_subscribed(label_id, subscribed).addCallback(_as_folder)

    # -- messages ----------------------------------------------------------------------------

    def list_folder_messages(self, folder_id):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.list_folder_messages(folder_id)
        return self._store.list_label_messages(label_id)

    def folder_summaries(self, folder_id):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.folder_summaries(folder_id)
        return self._store.label_folder_summaries(label_id)

    def message_summaries(self, folder_id, uids, fields=()):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.message_summaries(folder_id, uids, fields)
        return self._store.label_summaries(label_id, uids, fields)

    def subject_candidates(self, folder_id, needle):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.subject_candidates(folder_id, needle)
        return self._store.subject_candidates(label_id, needle, label=True)

    def get_messages(self, folder_id, uids):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.get_messages(folder_id, uids)
        return self._store.get_label_messages(label_id, uids)

    def store_flags(self, folder_id, uids, flags, mode):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.store_flags(folder_id, uids, flags, mode)
        return self._store.store_label_flags(label_id, uids, flags, mode)

    def store_flags_unchanged_since(self, folder_id, *args):
        if label_id_of(folder_id) is not None:
            raise IMAPSyntaxError("a label has no MODSEQ (NOMODSEQ)")
        return self._store.store_flags_unchanged_since(folder_id, *args)

    def changed_since(self, folder_id, modseq):
        if label_id_of(folder_id) is not None:
            raise _no_modseq()
        return self._store.changed_since(folder_id, modseq)

    def vanished_since(self, folder_id, modseq):
        if label_id_of(folder_id) is not None:
            raise _no_modseq()
        return self._store.vanished_since(folder_id, modseq)

    def vanished_report(self, folder_id, modseq):
        if label_id_of(folder_id) is not None:
            raise _no_modseq()
        return self._store.vanished_report(folder_id, modseq)

    def folder_counts(self, folder_id):
        """STATUS totals; a label's from its linked rows (a label is a small view)."""
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.folder_counts(folder_id)
        return self._store.list_label_messages(label_id).addCallback(_label_counts)

    def label_delta(self, folder_id, known_uids):
        """A ``FolderDelta`` for a label view, which has no MODSEQ to ask ``folder_delta``
        with: the label as it is, every live row (the view takes in those that differ) and the
        ``known_uids`` that left it."""
        return defer.ensureDeferred(self._label_delta(label_id_of(folder_id), known_uids))

    async def _label_delta(self, label_id, known_uids):
        label = await self._store.get_label(label_id)
        if label is None:
            return FolderDelta(None)
        rows = await self._store.label_folder_summaries(label_id)
        present = {row.uid for row in rows}
        gone = tuple(uid for uid in known_uids if uid not in present)
        return FolderDelta(LabelFolder(label), tuple(rows), gone)

    def expunge(self, folder_id, uids=None):
        label_id = label_id_of(folder_id)
        if label_id is None:
            return self._store.expunge(folder_id, uids)
        return self._store.expunge_label(label_id, uids)

    def copy_messages(self, folder_id, uids, target_folder_id):
        return self._copy(folder_id, uids, target_folder_id, move=False)

    def move_messages(self, folder_id, uids, target_folder_id):
        return self._copy(folder_id, uids, target_folder_id, move=True)

    def _copy(self, folder_id, uids, target_folder_id, move):
        source_label, target_label = label_id_of(folder_id), label_id_of(target_folder_id)
        if target_label is not None:
            source = ("label", source_label) if source_label else ("folder", folder_id)
            d = self._store.copy_to_label(source, uids, target_label, move=move)
            return d.addCallback(lambda r: attrs.evolve(r, target_folder_id=target_folder_id))
        if source_label is not None:
            return self._store.copy_from_label(source_label, uids, target_folder_id, move=move)
        method = self._store.move_messages if move else self._store.copy_messages
        return method(folder_id, uids, target_folder_id)

    # -- APPEND --------------------------------------------------------------------------------

    def deliver(self, spool_path, deliveries, *args, **kwargs):
        return defer.ensureDeferred(self._deliver(spool_path, list(deliveries), *args, **kwargs))

    async def _deliver(self, spool_path, deliveries, *args, **kwargs):
        deliveries, labels = await self._into_labels(deliveries)
        placed = await self._store.deliver(spool_path, deliveries, *args, **kwargs)
        return await self._as_label_rows(placed, labels)

    def deliver_batch(self, items, trace_id):
        return defer.ensureDeferred(self._deliver_batch(list(items), trace_id))

    async def _deliver_batch(self, items, trace_id):
        deliveries, labels = await self._into_labels([delivery for _, delivery, _ in items])
        items = [
            (path, delivery, date)
            for (path, _, date), delivery in zip(items, deliveries, strict=True)
        ]
        placed = await self._store.deliver_batch(items, trace_id)
        return await self._as_label_rows(placed, labels)

    async def _into_labels(self, deliveries):
        """Deliveries into ``Labels/<name>`` become deliveries into Archive carrying the label;
        also return each delivery's label (None for a folder). ``ValueError`` (the store's
        answer for a missing folder) when the label does not exist."""
        out, labels = [], []
        archive = None
        for delivery in deliveries:
            lname = label_name(delivery.folder)
            if lname is None:
                out.append(delivery)
                labels.append(None)
                continue
            label = await self._store.get_label_by_name(delivery.mailbox_id, lname)
            if label is None:
                raise ValueError(f"no label {lname!r}")
            if archive is None:
                folders = await self._store.list_folders(delivery.mailbox_id)
                archive = next((f.name for f in folders if f.special_use == "\\Archive"), "INBOX")
            out.append(attrs.evolve(delivery, folder=archive, labels=(*delivery.labels, label.id)))
            labels.append(label)
        return out, labels

    async def _as_label_rows(self, placed, labels):
        """The placements of deliveries into labels as the label views show them."""
        if not any(labels):
            return placed
        out = []
        for mm, label in zip(placed, labels, strict=True):
            if label is None:
                out.append(mm)
                continue
            uids = await self._store.label_link_uids(label.id, [mm.id])
            out.append(attrs.evolve(mm, uid=uids[mm.id], folder_id=_ID_PREFIX + label.id))
        return out


def _no_modseq():
    """What a MODSEQ question about a label view gets: loudly, since an answer would be wrong
    (no record of what left a label). A session refreshes a label view from its rows."""
    return NotImplementedError(
        "a label view has no MODSEQ: refresh it from list_folder_messages (NOMODSEQ)"
    )


def _label_counts(rows):
    deleted = [row for row in rows if row.imap_deleted]
    return FolderCounts(
        messages=len(rows),
        unseen=sum(1 for row in rows if not row.read),
        size=sum(row.size_bytes for row in rows),
        deleted=len(deleted),
        deleted_size=sum(row.size_bytes for row in deleted),
        last_uid=max((row.uid for row in rows), default=0),
    )


def _as_folder(label):
    return LabelFolder(label) if label is not None else None


__all__ = [
    "ROOT",
    "LabelFolder",
    "ViewStore",
    "is_label_folder",
    "label_id_of",
    "label_name",
    "selected_change",
]
