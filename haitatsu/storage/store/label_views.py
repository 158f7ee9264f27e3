"""A label as a view of its messages, the way IMAP's ``Labels/<name>`` folders need it.

A label view lists the live mailbox_messages linked to the label, each under the UID of its
link (``message_labels.uid``), in UID order. The rows handed out are the messages'
``MailboxMessage`` records with ``uid`` replaced by that link UID and ``modseq`` 0 (see
below); everything else (flags, the folder the message lives in) is the message's own, because a
label is a second view of the same message, not a copy: a flag set in the view is set on the
message.

What each operation does to the messages (docs/imap.md "Labels as folders"):

- flags change the message itself, through the folder code (``_apply_flags``), so sessions
  showing its folder hear the change as usual;
- expunging removes the label (the message stays where it lives) and clears its ``\\Deleted``
  flag, which was only the client's way of asking for that;
- copying into a label links the messages (a message already linked keeps its UID there);
  moving into a label also takes them out of the source view: out of a source label, or, from a
  folder, into the mailbox's Archive, as a Gmail-like client expects;
- copying out of a label copies the messages into the target folder like a folder's COPY;
  moving out of it moves each message from the folder it lives in and removes the label.

There is no MODSEQ of a label (a message's MODSEQ belongs to its folder), so IMAP serves label
views as ``NOMODSEQ`` mailboxes (RFC 7162 3.1.2.2).
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from haitatsu.interfaces import FolderExists, InvalidFolderName, NoSuchFolder, OverQuota
from haitatsu.storage.records import CopyResult, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _MSG_COLUMNS,
    _flag_columns,
    _folder,
    _mailbox_message,
    _message_info,
)
from haitatsu.storage.store.labels import _label

_BATCH = 500


def _view_row(row):
    """The message as the label view shows it: under the link's UID, with no MODSEQ."""
    return attrs.evolve(_mailbox_message(row), uid=row["label_uid"], modseq=0)


class LabelViewsMixin(StoreBase):
    # -- the labels themselves ---------------------------------------------------------------

    def get_label_by_name(self, mailbox_id, name):
        """Fire with the mailbox's ``Label`` called ``name`` (exactly), or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM labels WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
            )
            return _label(row) if row else None

        return self._run("get_label_by_name", txn_fn, readonly=True)

    def set_label_subscribed(self, label_id, subscribed):
        """IMAP SUBSCRIBE/UNSUBSCRIBE of ``Labels/<name>``; fire with the ``Label`` or None."""

        async def txn_fn(txn):
            await txn.execute(
                "UPDATE labels SET subscribed = ?, updated_at = ? WHERE id = ?",
                (bool(subscribed), now_ns(), label_id),
            )
            if txn.rowcount == 0:
                return None
            return await self._get_label(txn, label_id)

        return self._run("set_label_subscribed", txn_fn)

    def rename_label_tree(self, label_id, new_name):
        """IMAP RENAME of a label: the label and the labels named below it (``a/...`` when
        ``a`` is renamed) take the new name, as RFC 3501 6.3.5 asks of inferior names. Fire
        with the renamed ``Label`` or None; ``FolderExists`` when a new name is taken,
        ``InvalidFolderName`` for a rename below itself. Names are checked by the caller."""

        async def txn_fn(txn):
            label = await self._get_label(txn, label_id, lock=True)
            if label is None:
                return None
            rows = await txn.execute(
                "SELECT * FROM labels WHERE mailbox_id = ?" + txn.for_update, (label.mailbox_id,)
            )
            existing = {row["name"]: _label(row) for row in rows}
            prefix = label.name + "/"
            if new_name.startswith(prefix):
                raise InvalidFolderName("a label cannot be moved below itself")
            renames = [(label, new_name)] + [
                (other, new_name + "/" + name[len(prefix) :])
                for name, other in sorted(existing.items())
                if name.startswith(prefix)
            ]
            for _, target in renames:
                if target in existing:
                    raise FolderExists(target)
            now = now_ns()
            for other, target in renames:
                await txn.execute(
                    "UPDATE labels SET name = ?, updated_at = ? WHERE id = ?",
                    (target, now, other.id),
                )
                await self._audit(txn, "label.updated", "label", other.id, other.mailbox_id)
                await self._announce(
                    txn,
                    other.mailbox_id,
                    {"type": "label_renamed", "label_id": other.id, "name": target},
                )
            return await self._get_label(txn, label_id)

        return self._run("rename_label_tree", txn_fn)

    # -- reading the view --------------------------------------------------------------------

    @staticmethod
    async def _label_view_rows(txn, label_id, uids=None, lock=False, deleted_only=False):
        """The label's live messages as view rows, by link UID; only ``uids`` when given."""
        where = "ml.label_id = ? AND mm.deleted_at IS NULL"
        params: list = [label_id]
        if deleted_only:
            where += " AND mm.imap_deleted = ?"
            params.append(True)
        sql = (
            f"SELECT {_MM_COLUMNS}, ml.uid AS label_uid FROM message_labels ml "
            "JOIN mailbox_messages mm ON mm.id = ml.mailbox_message_id WHERE "
        )
        suffix = " ORDER BY ml.uid" + (txn.for_update if lock else "")
        if uids is None:
            return [_view_row(r) for r in await txn.execute(sql + where + suffix, params)]
        out = []
        for start in range(0, len(uids), _BATCH):
            clause, extra = txn.in_clause("ml.uid", uids[start : start + _BATCH])
            rows = await txn.execute(sql + where + f" AND {clause}" + suffix, (*params, *extra))
            out.extend(_view_row(r) for r in rows)
        return out

    def list_label_messages(self, label_id):
        """Fire with the label's live messages as view rows, ordered by their link UIDs."""
        return self._run("list_label_messages", self._label_view_rows, label_id, readonly=True)

    def get_label_messages(self, label_id, uids):
        """``get_messages`` of a label view: ``[(view row, MessageInfo)]`` for these link UIDs."""
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            out = []
            for start in range(0, len(uids), _BATCH):
                clause, params = txn.in_clause("ml.uid", uids[start : start + _BATCH])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS}, ml.uid AS label_uid "
                    "FROM message_labels ml "
                    "JOIN mailbox_messages mm ON mm.id = ml.mailbox_message_id "
                    "JOIN messages m ON m.id = mm.message_id WHERE ml.label_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY ml.uid",
                    (label_id, *params),
                )
                out.extend((_view_row(r), _message_info(r)) for r in rows)
            return out

        if not uids:
            return defer.succeed([])
        return self._run("get_label_messages", txn_fn, readonly=True)

    def label_link_uids(self, label_id, mailbox_message_ids):
        """Fire with ``{mailbox_message_id: link UID}`` for those of the messages the label has."""
        ids = list(mailbox_message_ids)

        async def txn_fn(txn):
            out = {}
            for start in range(0, len(ids), _BATCH):
                clause, params = txn.in_clause("mailbox_message_id", ids[start : start + _BATCH])
                rows = await txn.execute(
                    "SELECT mailbox_message_id, uid FROM message_labels "
                    f"WHERE label_id = ? AND {clause}",
                    (label_id, *params),
                )
                out.update((r["mailbox_message_id"], r["uid"]) for r in rows)
            return out

        return self._run("label_link_uids", txn_fn, readonly=True)

    # -- changing it -------------------------------------------------------------------------

    def store_label_flags(self, label_id, uids, flags, mode):
        """``store_flags`` in a label view: change the messages' own flags; fire with the view
        rows that changed."""
        if mode not in ("=", "+", "-"):
            raise ValueError(f"bad flag mode {mode!r}")
        uids = sorted(set(int(u) for u in uids))
        wanted_columns, wanted_keywords = _flag_columns(flags)
        wanted_system = {c for c, on in wanted_columns.items() if on}

        async def txn_fn(txn):
            changed = []
            for row in await self._label_view_rows(txn, label_id, uids, lock=True):
                mm = await self._apply_flags(
                    txn, row.folder_id, row, mode, wanted_system, wanted_keywords
                )
                if mm is not None:
                    changed.append(attrs.evolve(mm, uid=row.uid, modseq=0))
            return changed

        if not uids:
            return defer.succeed([])
        return self._run("store_label_flags", txn_fn)

    def expunge_label(self, label_id, uids=None):
        """EXPUNGE in a label view (API.md 5.5): the label leaves the messages marked
        ``\\Deleted`` (only those among ``uids`` when given), which stay where they live with
        the flag cleared. Fire with the link UIDs removed."""
        only = None if uids is None else sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            label = await self._get_label(txn, label_id, lock=True)
            if label is None:
                return []
            rows = await self._label_view_rows(txn, label_id, only, lock=True, deleted_only=True)
            for row in rows:
                await self._apply_flags(txn, row.folder_id, row, "-", {"imap_deleted"}, [])
            await self._unlink_label(txn, label, [row.id for row in rows])
            return [row.uid for row in rows]

        return self._run("expunge_label", txn_fn)

    def copy_to_label(self, source, uids, label_id, move=False):
        """COPY or MOVE into a label view from ``source``, ``("folder", folder_id)`` or
        ``("label", label_id)``: link each message to the label (one already linked keeps its
        UID). MOVE also takes them out of the source: out of a source label, or from a folder
        into the mailbox's Archive (from Archive itself: a new UID there). Fire with a
        ``CopyResult`` in the label's UIDs; ``NoSuchFolder`` when either end is gone."""
        kind, source_id = source
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn, notes):
            label = await self._get_label(txn, label_id, lock=True)
            if label is None:
                raise NoSuchFolder(label_id)
            if kind == "label":
                origin = await self._get_label(txn, source_id, lock=source_id != label_id)
                if origin is None or origin.mailbox_id != label.mailbox_id:
                    raise NoSuchFolder(source_id)
                rows = await self._label_view_rows(txn, source_id, uids, lock=True)
            else:
                row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (source_id,))
                origin = _folder(row) if row else None
                if origin is None or origin.mailbox_id != label.mailbox_id:
                    raise NoSuchFolder(source_id)
                rows = await self._folder_view_rows(txn, source_id, uids)
            target_uids = []
            for mm in rows:
                if move and kind == "label":
                    await self._unlink_label(txn, origin, [mm.id])
                link, _ = await self._link_label(txn, mm.id, label_id)
                target_uids.append(link.uid)
            if move and kind == "folder" and rows:
                archive = await self._archive_folder(txn, label.mailbox_id)
                await self._move_rows(txn, origin, archive, rows, notes)
            label = await self._get_label(txn, label_id)
            return CopyResult(
                label.id, label.uid_validity, tuple(mm.uid for mm in rows), tuple(target_uids)
            )

        return self._run_noting("copy_to_label", txn_fn)

    def copy_from_label(self, label_id, uids, target_folder_id, move=False):
        """COPY or MOVE out of a label view into a folder. COPY copies the messages there as a
        folder's COPY does (quota charged, all or none); MOVE moves each message from the folder
        it lives in and removes the label. Fire with a ``CopyResult``: the view's UIDs paired
        with the new UIDs in the folder. ``NoSuchFolder``, ``OverQuota``."""
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn, notes):
            label = await self._get_label(txn, label_id, lock=True)
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (target_folder_id,))
            target = _folder(row) if row else None
            if label is None:
                raise NoSuchFolder(label_id)
            if target is None or target.mailbox_id != label.mailbox_id:
                raise NoSuchFolder(target_folder_id)
            rows = await self._label_view_rows(txn, label_id, uids, lock=True)
            if not rows:
                return CopyResult(target.id, target.uid_validity)
            if not move:
                total = sum(mm.size_bytes for mm in rows)
                [refused] = await self._charge_quota(txn, [label.mailbox_id], total)
                if refused:
                    raise OverQuota(f"{label.mailbox_id} ({refused} quota)")
                new_uids = await self._copy_rows(txn, target, rows, notes)
                return CopyResult(
                    target.id, target.uid_validity, tuple(mm.uid for mm in rows), tuple(new_uids)
                )
            new_uid = {}
            by_folder: dict[str, list] = {}
            for mm in rows:
                by_folder.setdefault(mm.folder_id, []).append(mm)
            for folder_id, group in sorted(by_folder.items()):
                source = _folder(
                    await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
                )
                # _move_rows speaks of the messages under their UIDs in the source folder.
                in_folder = await self._folder_rows_by_id(txn, [mm.id for mm in group])
                result = await self._move_rows(txn, source, target, in_folder, notes)
                new_uid.update(zip((mm.id for mm in in_folder), result.target_uids, strict=True))
            await self._unlink_label(txn, label, [mm.id for mm in rows])
            return CopyResult(
                target.id,
                target.uid_validity,
                tuple(mm.uid for mm in rows),
                tuple(new_uid[mm.id] for mm in rows),
            )

        return self._run_noting("copy_from_label", txn_fn)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _folder_view_rows(txn, folder_id, uids):
        """A folder's live rows among ``uids``, locked, in UID order."""
        out = []
        for start in range(0, len(uids), _BATCH):
            clause, params = txn.in_clause("mm.uid", uids[start : start + _BATCH])
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                (folder_id, *params),
            )
            out.extend(_mailbox_message(r) for r in rows)
        return out

    @staticmethod
    async def _folder_rows_by_id(txn, mailbox_message_ids):
        """The rows with these ids as their folder has them (folder UIDs), in UID order."""
        out = []
        for start in range(0, len(mailbox_message_ids), _BATCH):
            clause, params = txn.in_clause("mm.id", mailbox_message_ids[start : start + _BATCH])
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE {clause} ORDER BY mm.uid",
                params,
            )
            out.extend(_mailbox_message(r) for r in rows)
        return out

    @staticmethod
    async def _archive_folder(txn, mailbox_id):
        """Where a message moved into a label goes: the \\Archive folder, else INBOX."""
        row = await txn.execute_one(
            "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = '\\Archive'",
            (mailbox_id,),
        )
        if row is None:
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND UPPER(name) = 'INBOX'",
                (mailbox_id,),
            )
        if row is None:
            raise NoSuchFolder("Archive")
        return _folder(row)
