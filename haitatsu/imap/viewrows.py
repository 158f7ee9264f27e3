"""The rows of a selected folder as sessions hold them: one shared read plus each session's own
changes.

A session's view of a folder of 100,000 messages is 100,000 rows. Two thousand sessions in IDLE
on one INBOX (issue 5) cannot each hold their own copy, so ``SELECT`` shares: sessions that
select the same folder in the same state (same UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ) get the
same ``SharedRows``, read once, and each keeps only what has happened to its view since (rows
replaced by newer flags, messages expunged, messages added) in a ``ViewRows`` overlay. When an
overlay grows past a share of the folder, that session takes a private copy and starts again
from it. ``SharedRows`` are held weakly: the read goes away with the last view using it.
"""

from __future__ import annotations

import bisect
import operator
import weakref

from twisted.internet import defer
from twisted.python import failure


class SharedRows:
    """A folder's rows (sorted by UID) as one read returned them; never changed."""

    __slots__ = ("rows", "uids", "_flag_sets", "__weakref__")

    def __init__(self, rows):
        self.rows = list(rows)
        self.uids = [r.uid for r in self.rows]
        self._flag_sets = None

    def flag_sets(self) -> frozenset:
        """The distinct flag tuples of the rows (a few, however many rows), read once."""
        if self._flag_sets is None:
            self._flag_sets = frozenset(map(_FLAGS, self.rows))
        return self._flag_sets


_FLAGS = operator.attrgetter("flags")
_UID = operator.attrgetter("uid")


class SharedRowsCache:
    """``SharedRows`` by folder state, held only while some view uses them; and the most
    recent such read of each folder, which a ``SELECT`` after a change brings up to date
    (``updated``) instead of reading the whole folder again.

    ``read`` makes sessions that select a folder while its rows are being read wait for that
    read instead of each starting their own: at a burst of logins (2,000 clients opening IDLE
    sessions) every SELECT of a large INBOX until the first read finished would otherwise hold
    a private copy of its rows."""

    def __init__(self):
        self._entries: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._latest: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._latest_key: dict = {}
        self._reading: dict[tuple, list] = {}

    @staticmethod
    def key(folder) -> tuple:
        return (folder.id, folder.uid_validity, folder.uid_next, folder.highest_modseq)

    def get(self, folder) -> SharedRows | None:
        return self._entries.get(self.key(folder))

    def put(self, folder, shared: SharedRows) -> None:
        key = self.key(folder)
        self._entries[key] = shared
        latest = self._latest_key.get(folder.id)
        if latest is None or self._latest.get(folder.id) is None or key[3] >= latest[3]:
            self._latest[folder.id] = shared
            self._latest_key[folder.id] = key

    def latest(self, folder) -> tuple[int, SharedRows] | None:
        """``(highest_modseq, rows)`` of the newest read of ``folder`` still held by a view, in
        the same UIDVALIDITY, or None."""
        shared = self._latest.get(folder.id)
        key = self._latest_key.get(folder.id)
        if shared is None or key is None:
            self._latest_key.pop(folder.id, None)
            return None
        if key[1] != folder.uid_validity or key[3] > folder.highest_modseq:
            return None
        return key[3], shared

    def read(self, folder, read_rows) -> defer.Deferred:
        """Fire with the folder's ``SharedRows`` in its current state: the cached ones, the
        ones a read already under way returns, or those of a new read (``read_rows()``, a
        Deferred firing with the rows)."""
        shared = self.get(folder)
        if shared is not None:
            return defer.succeed(shared)
        key = self.key(folder)
        waiting = defer.Deferred()
        if key in self._reading:
            self._reading[key].append(waiting)
            return waiting
        self._reading[key] = [waiting]

        def done(result):
            waiters = self._reading.pop(key)
            if isinstance(result, failure.Failure):
                for d in waiters:
                    d.errback(result)
                return None
            shared = SharedRows(result)
            self.put(folder, shared)
            for d in waiters:
                d.callback(shared)
            return None

        defer.maybeDeferred(read_rows).addBoth(done)
        return waiting


def updated(shared: SharedRows, changed, vanished) -> SharedRows:
    """New ``SharedRows``: ``shared`` less the ``vanished`` UIDs, with the ``changed`` rows
    (a folder delta's: newer rows of its messages, and new messages) in place."""
    gone = set(vanished)
    rows = shared.rows
    if gone:
        rows = [r for r in rows if r.uid not in gone]
    else:
        rows = list(rows)
    uids = [r.uid for r in rows] if gone else shared.uids
    added = []
    for row in changed:
        if row.uid in gone:
            continue
        i = bisect.bisect_left(uids, row.uid)
        if i < len(uids) and uids[i] == row.uid:
            rows[i] = row
        else:
            added.append(row)
    if added:
        added.sort(key=_UID)
        rows.extend(added)
        if uids and added[0].uid < uids[-1]:
            rows.sort(key=_UID)
    return SharedRows(rows)


class ViewRows:
    """One session's rows: ``SharedRows`` plus its own replaced, removed and added rows.

    Positions are 0-based sequence positions in the view. Lookups cost a bisection over the
    shared UIDs and over the removed positions; nothing walks the whole folder."""

    #: A view whose own changes pass this share of the shared rows (and ``_MIN_OVERLAY``) copies.
    _OVERLAY_SHARE = 0.125
    _MIN_OVERLAY = 1024

    __slots__ = ("_shared", "_removed", "_changed", "_added", "_added_uids")

    def __init__(self, shared: SharedRows):
        self._shared = shared
        self._removed: list[int] = []  # shared indexes, sorted
        self._changed: dict = {}  # shared index -> row
        self._added: list = []  # rows after the shared ones, sorted by UID
        self._added_uids: list[int] = []

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._shared.uids) - len(self._removed) + len(self._added)

    def _shared_count(self) -> int:
        return len(self._shared.uids) - len(self._removed)

    def _shared_index(self, p: int) -> int:
        """The shared index of view position ``p`` (< ``_shared_count()``)."""
        removed = self._removed
        if not removed or p < removed[0]:
            return p
        lo, hi = p, p + len(removed)
        while lo < hi:  # smallest b with b - (removed at or below b) == p, b not removed
            mid = (lo + hi) // 2
            if mid - bisect.bisect_right(removed, mid) < p:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def uid_at(self, p: int) -> int:
        n = self._shared_count()
        if p < n:
            return self._shared.uids[self._shared_index(p)]
        return self._added_uids[p - n]

    def row_at(self, p: int):
        n = self._shared_count()
        if p < n:
            i = self._shared_index(p)
            row = self._changed.get(i)
            return self._shared.rows[i] if row is None else row
        return self._added[p - n]

    def position(self, uid: int) -> int:
        """The view position of ``uid``, or -1."""
        uids = self._shared.uids
        i = bisect.bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            if not self._removed:
                return i
            r = bisect.bisect_left(self._removed, i)
            if r == len(self._removed) or self._removed[r] != i:
                return i - r
        j = bisect.bisect_left(self._added_uids, uid)
        if j < len(self._added_uids) and self._added_uids[j] == uid:
            return self._shared_count() + j
        return -1

    def row_for(self, uid: int):
        p = self.position(uid)
        return None if p < 0 else self.row_at(p)

    def iter_uids(self):
        if not self._removed:
            yield from self._shared.uids
        else:
            removed = set(self._removed)
            for i, uid in enumerate(self._shared.uids):
                if i not in removed:
                    yield uid
        yield from self._added_uids

    def iter_rows(self):
        rows, changed = self._shared.rows, self._changed
        removed = set(self._removed)
        for i, row in enumerate(rows):
            if i not in removed:
                yield changed.get(i, row)
        yield from self._added

    def plain(self) -> SharedRows | None:
        """The shared rows when this view has no changes of its own (it is exactly them)."""
        if self._removed or self._changed or self._added:
            return None
        return self._shared

    def uids_slice(self, start: int, stop: int) -> list[int]:
        if not self._removed and stop <= len(self._shared.uids):
            return self._shared.uids[start:stop]
        return [self.uid_at(p) for p in range(start, min(stop, len(self)))]

    def rows_slice(self, start: int, stop: int) -> list:
        """The rows at view positions ``start`` to ``stop`` (exclusive)."""
        stop = min(stop, len(self))
        n = self._shared_count()
        if self._removed and start < n:
            return [self.row_at(p) for p in range(start, stop)]
        out = []
        if start < n:
            end = min(stop, n)
            out = self._shared.rows[start:end]
            for i, row in self._changed.items():
                if start <= i < end:
                    out[i - start] = row
        if stop > n:
            out.extend(self._added[max(start, n) - n : stop - n])
        return out

    # -- changing -----------------------------------------------------------------------------

    def replace(self, p: int, row) -> None:
        n = self._shared_count()
        if p < n:
            self._changed[self._shared_index(p)] = row
        else:
            self._added[p - n] = row
        self._maybe_copy()

    def delete(self, p: int) -> None:
        n = self._shared_count()
        if p < n:
            i = self._shared_index(p)
            bisect.insort(self._removed, i)
            self._changed.pop(i, None)
        else:
            del self._added[p - n]
            del self._added_uids[p - n]
        self._maybe_copy()

    def append(self, rows) -> None:
        """Add rows (sorted by UID, above every UID in the view) at the end."""
        for row in rows:
            self._added.append(row)
            self._added_uids.append(row.uid)
        self._maybe_copy()

    def _maybe_copy(self) -> None:
        own = len(self._removed) + len(self._changed) + len(self._added)
        if own > max(self._MIN_OVERLAY, self._OVERLAY_SHARE * len(self._shared.uids)):
            self._shared = SharedRows(list(self.iter_rows()))
            self._removed, self._changed, self._added, self._added_uids = [], {}, [], []


class UidSequence:
    """``view.uids``: the view's UIDs as a read-only sequence (index, slice, len, iter)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: ViewRows):
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        rows = self._rows
        if isinstance(index, slice):
            start, stop, step = index.indices(len(rows))
            if step == 1:
                return rows.uids_slice(start, stop)
            return [rows.uid_at(p) for p in range(start, stop, step)]
        if index < 0:
            index += len(rows)
        if not 0 <= index < len(rows):
            raise IndexError(index)
        return rows.uid_at(index)

    def __iter__(self):
        return self._rows.iter_uids()

    def __contains__(self, uid) -> bool:
        return self._rows.position(uid) >= 0

    def __bool__(self) -> bool:
        return len(self._rows) > 0


class RowSequence:
    """``view.rows``: the view's rows in sequence order, read-only."""

    __slots__ = ("_rows",)

    def __init__(self, rows: ViewRows):
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self._rows)
        if not 0 <= index < len(self._rows):
            raise IndexError(index)
        return self._rows.row_at(index)

    def __iter__(self):
        return self._rows.iter_rows()


class RowsByUid:
    """``view.by_uid``: rows by UID, read-only (``in``, ``[]``, ``get``)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: ViewRows):
        self._rows = rows

    def __contains__(self, uid) -> bool:
        return self._rows.position(uid) >= 0

    def __getitem__(self, uid):
        row = self._rows.row_for(uid)
        if row is None:
            raise KeyError(uid)
        return row

    def get(self, uid, default=None):
        row = self._rows.row_for(uid)
        return default if row is None else row

    def __len__(self) -> int:
        return len(self._rows)
