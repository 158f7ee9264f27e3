"""CONDSTORE and QRESYNC (RFC 7162): what changed in a folder since a MODSEQ.

Every change to a folder takes a new MODSEQ from ``folders.highest_modseq``: a delivery or copy
in (the new row carries it), a flag change (the row carries it), a UID leaving (expunge, move,
POP3 deletion: ``record_vanished`` writes the UID to ``expunged_uids`` with it, in the
transaction that removes the UID). A client that last saw MODSEQ n is therefore told exactly
the rows with ``modseq > n`` and the UIDs vanished with ``modseq > n``.

Vanished UIDs are not kept for ever: ``prune_vanished`` (run by housekeeping) drops the rows
older than a horizon and raises the folder's ``vanished_pruned_modseq`` to the highest MODSEQ
it dropped. Every UID that left above that MODSEQ is still listed, so the answer for a client
whose MODSEQ is at or above it stays exact; below it, ``vanished_report`` says the list is
incomplete and the IMAP server reports every UID the client may know of that is gone.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from haitatsu.storage.records import now_ns
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
    at = now_ns()
    for uid in uids:
        await txn.execute(
            "INSERT INTO expunged_uids (folder_id, uid, modseq, expunged_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = excluded.modseq, "
            "expunged_at = excluded.expunged_at",
            (folder_id, uid, modseq, at),
        )
    return modseq


@attrs.frozen
class FolderDelta:
    """What ``folder_delta`` read: the folder as it is (None once deleted), its live rows with
    a MODSEQ above the one asked about (by UID), and the UIDs that left it since (ascending).

    ``complete`` is False when the MODSEQ asked about is below the folder's pruned horizon:
    ``vanished`` may then miss UIDs, and ``changed`` holds every live row of the folder, so
    the reader takes whatever it knows and is not among them as gone."""

    folder: object
    changed: tuple = ()
    vanished: tuple[int, ...] = ()
    complete: bool = True


@attrs.frozen
class VanishedReport:
    """What ``vanished_report`` read: the UIDs that left the folder above a MODSEQ
    (ascending), whether that list is complete (False when the MODSEQ is below the pruned
    horizon, ``pruned_modseq``), and the folder's UIDNEXT (no UID at or above it ever
    existed). None of it when the folder is gone: ``uid_next`` 0."""

    uids: tuple[int, ...] = ()
    complete: bool = True
    uid_next: int = 0
    pruned_modseq: int = 0


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


async def _vanished_rows(txn, folder_id, modseq) -> list:
    """The folder's ``horizon`` (``vanished_pruned_modseq``) and ``uid_next`` with each UID that
    left it above ``modseq`` (one row with ``uid`` None when none did; no row when the folder
    is gone), in one statement."""
    return await txn.execute(
        "SELECT f.vanished_pruned_modseq AS horizon, f.uid_next AS uid_next, e.uid AS uid "
        "FROM folders f LEFT JOIN expunged_uids e ON e.folder_id = f.id AND e.modseq > ? "
        "WHERE f.id = ?",
        (int(modseq), folder_id),
    )


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

    def vanished_report(self, folder_id, modseq):
        """Fire with a ``VanishedReport``: ``vanished_since`` and whether pruning may have
        taken UIDs from it (``modseq`` below the folder's ``vanished_pruned_modseq``).

        The UIDs and the horizon come from one statement (one snapshot, on PostgreSQL too):
        a prune never leaves a short list that claims to be complete."""

        async def txn_fn(txn):
            rows = await _vanished_rows(txn, folder_id, modseq)
            if not rows:
                return VanishedReport()
            pruned = int(rows[0]["horizon"])
            return VanishedReport(
                tuple(sorted(r["uid"] for r in rows if r["uid"] is not None)),
                complete=int(modseq) >= pruned,
                uid_next=int(rows[0]["uid_next"]),
                pruned_modseq=pruned,
            )

        return self._run("vanished_report", txn_fn, readonly=True)

    def prune_vanished(self, older_than_ns, should_continue=None):
        """Drop the ``expunged_uids`` rows written before ``older_than_ns``, one folder per
        transaction, raising each folder's ``vanished_pruned_modseq`` to the highest MODSEQ
        dropped. Rows are dropped by MODSEQ (every row at or below that MODSEQ goes, whatever
        its time), so each row above the horizon stays. Fire with ``{"folders", "uids"}``."""
        return defer.Deferred.fromCoroutine(
            self._prune_vanished(int(older_than_ns), should_continue)
        )

    async def _prune_vanished(self, older_than, should_continue):
        async def candidates(txn):
            return await txn.execute(
                "SELECT folder_id, MAX(modseq) AS modseq FROM expunged_uids "
                "WHERE expunged_at < ? GROUP BY folder_id ORDER BY folder_id",
                (older_than,),
            )

        async def prune(txn, folder_id, modseq):
            row = await txn.execute_one(
                "SELECT vanished_pruned_modseq FROM folders WHERE id = ?" + txn.for_update,
                (folder_id,),
            )
            if row is None:
                return 0
            await txn.execute(
                "DELETE FROM expunged_uids WHERE folder_id = ? AND modseq <= ?",
                (folder_id, modseq),
            )
            dropped = txn.rowcount
            if modseq > int(row["vanished_pruned_modseq"]):
                await txn.execute(
                    "UPDATE folders SET vanished_pruned_modseq = ? WHERE id = ?",
                    (modseq, folder_id),
                )
            return dropped

        done = {"folders": 0, "uids": 0}
        for row in await self._run("prune_vanished.candidates", candidates, readonly=True):
            if should_continue is not None and not should_continue():
                break
            dropped = await self._run("prune_vanished", prune, row["folder_id"], int(row["modseq"]))
            done["folders"] += 1
            done["uids"] += max(dropped, 0)
        return done

    def folder_delta(self, folder_id, modseq):
        """Fire with a ``FolderDelta``: everything an IMAP session that has seen the folder up
        to ``modseq`` needs to catch up, in one read transaction whose cost is the number of
        changes since, not the size of the folder.

        The folder (and its HIGHESTMODSEQ) is read first: every change up to that MODSEQ is
        in the rows and UIDs read after it (a later one may be too, which a reader sees twice
        at most). The rows are read before the vanished UIDs, so a message expunged between
        the two reads (PostgreSQL reads each statement afresh) is among the vanished.

        Below the folder's pruned horizon the delta is every live row, ``complete`` False.
        The vanished UIDs are read in one statement with the horizon (one snapshot, on
        PostgreSQL too), so a prune that took UIDs this reader wanted is always seen."""

        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return FolderDelta(None)
            complete = int(modseq) >= int(row["vanished_pruned_modseq"])
            if complete:
                changed = await _changed_rows(txn, folder_id, modseq)
                gone = await _vanished_rows(txn, folder_id, modseq)
                complete = bool(gone) and int(modseq) >= int(gone[0]["horizon"])
            if not complete:
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    "AND mm.deleted_at IS NULL",
                    (folder_id,),
                )
                live = sorted((_mailbox_message(r) for r in rows), key=lambda mm: mm.uid)
                return FolderDelta(_folder(row), tuple(live), (), complete=False)
            uids = sorted(r["uid"] for r in gone if r["uid"] is not None)
            return FolderDelta(_folder(row), tuple(changed), tuple(uids))

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
