"""CONDSTORE and QRESYNC (RFC 7162): what changed in a folder since a MODSEQ.

Every change to a folder takes a new MODSEQ from ``folders.highest_modseq``: a delivery or copy
in (the new row carries it), a flag change (the row carries it), a UID leaving (expunge, move,
POP3 deletion: ``record_vanished`` writes the UID to ``expunged_uids`` with it, in the
transaction that removes the UID). A client that last saw MODSEQ n is therefore told exactly
the rows with ``modseq > n`` and the UIDs vanished with ``modseq > n``.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _flag_columns,
    _folder,
    _mailbox_message,
)


async def record_vanished(txn, folder_id, uids) -> int | None:
    """Take one MODSEQ of the folder for ``uids`` leaving it and remember each UID with it, in
    the caller's transaction. Return the MODSEQ (None when ``uids`` is empty: nothing left)."""
    uids = sorted(set(uids))
    if not uids:
        return None
    modseq = await StoreBase._bump_modseq(txn, folder_id)
    for uid in uids:
        await txn.execute(
            "INSERT INTO expunged_uids (folder_id, uid, modseq) VALUES (?, ?, ?) "
            "ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = excluded.modseq",
            (folder_id, uid, modseq),
        )
    return modseq


@attrs.frozen
class FolderDelta:
    """What ``folder_delta`` read: the folder as it is (None once deleted), its live rows with
    a MODSEQ above the one asked about (by UID), and the UIDs that left it since (ascending)."""

    folder: object
    changed: tuple = ()
    vanished: tuple[int, ...] = ()


@attrs.frozen
class FolderCounts:
    """A folder's totals for STATUS, summed by the database (no row leaves it)."""

    messages: int = 0
    unseen: int = 0
    size: int = 0
    deleted: int = 0
    deleted_size: int = 0
    last_uid: int = 0


async def _changed_rows(txn, folder_id, modseq) -> list:
    # No ORDER BY: with one, a planner may walk (folder_id, uid) to save the sort and read
    # every row of the folder; the range on (folder_id, modseq) is what keeps this small.
    rows = await txn.execute(
        f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
        "AND mm.modseq > ? AND mm.deleted_at IS NULL",
        (folder_id, int(modseq)),
    )
    return sorted((_mailbox_message(r) for r in rows), key=lambda mm: mm.uid)


@attrs.frozen
class ConditionalStore:
    """What ``store_flags_unchanged_since`` did: the rows it changed, and the UIDs it left alone
    because they had changed after the client's MODSEQ (RFC 7162 ``MODIFIED``)."""

    changed: tuple = ()
    modified: tuple[int, ...] = ()


class SyncMixin(StoreBase):
    def changed_since(self, folder_id, modseq):
        """Fire with the folder's live ``MailboxMessage`` rows whose MODSEQ is above
        ``modseq``, ordered by UID (new messages and flag changes since then)."""

        async def txn_fn(txn):
            return await _changed_rows(txn, folder_id, modseq)

        return self._run("changed_since", txn_fn, readonly=True)

    def vanished_since(self, folder_id, modseq):
        """Fire with the UIDs that left the folder at a MODSEQ above ``modseq``, ascending."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT uid FROM expunged_uids WHERE folder_id = ? AND modseq > ? ORDER BY uid",
                (folder_id, int(modseq)),
            )
            return [r["uid"] for r in rows]

        return self._run("vanished_since", txn_fn, readonly=True)

    def folder_delta(self, folder_id, modseq):
        """Fire with a ``FolderDelta``: everything an IMAP session that has seen the folder up
        to ``modseq`` needs to catch up, in one read transaction whose cost is the number of
        changes since, not the size of the folder.

        The folder (and its HIGHESTMODSEQ) is read first: every change up to that MODSEQ is
        in the rows and UIDs read after it (a later one may be too, which a reader sees twice
        at most). The rows are read before the vanished UIDs, so a message expunged between
        the two reads (PostgreSQL reads each statement afresh) is among the vanished."""

        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return FolderDelta(None)
            changed = await _changed_rows(txn, folder_id, modseq)
            gone = await txn.execute(
                "SELECT uid FROM expunged_uids WHERE folder_id = ? AND modseq > ?",
                (folder_id, int(modseq)),
            )
            return FolderDelta(_folder(row), tuple(changed), tuple(sorted(r["uid"] for r in gone)))

        return self._run("folder_delta", txn_fn, readonly=True)

    def folder_counts(self, folder_id):
        """Fire with the folder's ``FolderCounts`` (live messages only): one aggregate query,
        for IMAP STATUS on folders of any size."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT COUNT(*) AS messages, "
                "COALESCE(SUM(CASE WHEN mm.read THEN 0 ELSE 1 END), 0) AS unseen, "
                "COALESCE(SUM(mm.size_bytes), 0) AS size, "
                "COALESCE(SUM(CASE WHEN mm.imap_deleted THEN 1 ELSE 0 END), 0) AS deleted, "
                "COALESCE(SUM(CASE WHEN mm.imap_deleted THEN mm.size_bytes ELSE 0 END), 0) "
                "AS deleted_size, COALESCE(MAX(mm.uid), 0) AS last_uid "
                "FROM mailbox_messages mm WHERE mm.folder_id = ? AND mm.deleted_at IS NULL",
                (folder_id,),
            )
            return FolderCounts(**{k: int(v) for k, v in row.items()})

        return self._run("folder_counts", txn_fn, readonly=True)

    def store_flags_unchanged_since(self, folder_id, uids, flags, mode, unchanged_since):
        """``store_flags`` for ``STORE (UNCHANGEDSINCE n)``: a message whose MODSEQ is above
        ``unchanged_since`` is left as it is and reported in ``modified``; the others are
        changed as ``store_flags`` would, in the same transaction. Fire with a
        ``ConditionalStore``."""
        if mode not in ("=", "+", "-"):
            raise ValueError(f"bad flag mode {mode!r}")
        uids = sorted(set(int(u) for u in uids))
        limit = int(unchanged_since)
        wanted_columns, wanted_keywords = _flag_columns(flags)
        wanted_system = {c for c, on in wanted_columns.items() if on}

        async def txn_fn(txn):
            changed, modified = [], []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                    (folder_id, *params),
                )
                for row in rows:
                    current = _mailbox_message(row)
                    if current.modseq > limit:
                        modified.append(current.uid)
                        continue
                    mm = await self._apply_flags(
                        txn, folder_id, current, mode, wanted_system, wanted_keywords
                    )
                    if mm is not None:
                        changed.append(mm)
            return ConditionalStore(tuple(changed), tuple(modified))

        if not uids:
            return defer.succeed(ConditionalStore())
        return self._run("store_flags_unchanged_since", txn_fn)
