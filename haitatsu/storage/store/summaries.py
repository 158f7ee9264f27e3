"""Light rows for IMAP's bulk commands: ``FETCH 1:* (FLAGS ENVELOPE)`` and SEARCH over a whole
folder read, per message, a few columns, not the whole message row.

``get_messages`` builds a ``MailboxMessage`` and a full ``MessageInfo`` per message (headers,
address lists, text extracts, part offsets: several JSON documents each); on a folder of
100,000 messages that costs seconds. ``message_summaries`` selects only the placement's flag
columns and the message fields asked for, and returns tuples.
"""

from __future__ import annotations

import json

from twisted.internet import defer

from haitatsu.storage.records import FLAG_COLUMNS, MessageSummary
from haitatsu.storage.store.base import StoreBase

#: The message fields ``message_summaries`` can add, with the column each comes from.
SUMMARY_FIELDS = {
    "envelope": "m.envelope",
    "body": "m.body",
    "bodystructure": "m.bodystructure",
    "header_size": "m.header_size",
    "subject": "m.subject",
    "text_body_extract": "m.text_body_extract",
    "html_body_extract": "m.html_body_extract",
    "blob_key": "m.blob_key",
    "layout": "m.layout",
    "parts": "m.parts",
    "header_fields": "m.header_fields",
}
_JSON_FIELDS = frozenset({"layout", "parts"})
#: Binary columns (PostgreSQL's driver returns a memoryview).
_BYTES_FIELDS = frozenset({"header_fields"})
#: The system flags as one number, bit ``i`` for the ``i``-th of ``FLAG_COLUMNS`` (fewer
#: columns per row is what makes reading a folder of 100,000 rows cheaper).
_FLAG_BITS = " + ".join(
    f"{1 << i} * CAST(mm.{column} AS INTEGER)" for i, column in enumerate(FLAG_COLUMNS.values())
)
_ROW_COLUMNS = f"mm.uid, mm.modseq, mm.internal_date, mm.size_bytes, mm.keywords, {_FLAG_BITS}"
_SYSTEM_FLAGS = tuple(FLAG_COLUMNS)
#: Where the message fields start in a row of ``_ROW_COLUMNS`` and the fields.
_FIRST_FIELD = 6
#: The defaults of ``MessageSummary``'s optional fields, in order.
_DEFAULTS = tuple(MessageSummary._field_defaults[f] for f in MessageSummary._fields[5:])
#: Reads ``read_message_ranges`` runs at once where it cannot read in one thread call.
_CONCURRENT_READS = 16
#: A UID range is read whole (and filtered) when at least this share of it is wanted.
_DENSE = 0.25


class SummariesMixin(StoreBase):
    def label_summaries(self, label_id, uids, fields=()):
        """``message_summaries`` for a label view (IMAP's ``Labels/<name>``): UIDs are the
        label's link UIDs."""
        return self.message_summaries(label_id, uids, fields, label=True)

    def label_folder_summaries(self, label_id):
        """``folder_summaries`` for a label view, by link UID."""

        async def txn_fn(txn):
            rows = await txn.execute_values(
                _select(txn, (), label=True) + "1 = 1 ORDER BY ml.uid", (label_id,)
            )
            return _summaries(rows, ())

        return self._run("label_folder_summaries", txn_fn, readonly=True)

    def message_summaries(self, folder_id, uids, fields=(), label=False):
        """Fire with a ``MessageSummary`` for each live placement of ``folder_id`` among
        ``uids``, in UID order, carrying the message ``fields`` asked for (names of
        ``SUMMARY_FIELDS``); UIDs that are not there are left out."""
        uids = sorted(set(int(u) for u in uids))
        fields = tuple(fields)
        unknown = set(fields) - set(SUMMARY_FIELDS)
        if unknown:
            raise ValueError(f"unknown summary fields: {sorted(unknown)}")
        wanted = set(uids)

        async def txn_fn(txn):
            select = _select(txn, fields, label)
            uid = "ml.uid" if label else "mm.uid"
            if len(uids) >= _DENSE * (uids[-1] - uids[0] + 1):
                rows = await txn.execute_values(
                    select + f"{uid} >= ? AND {uid} <= ? ORDER BY {uid}",
                    (folder_id, uids[0], uids[-1]),
                )
                if len(uids) != uids[-1] - uids[0] + 1:
                    rows = [r for r in rows if r[0] in wanted]
            else:
                rows = []
                for start in range(0, len(uids), 500):
                    clause, params = txn.in_clause(uid, uids[start : start + 500])
                    rows += await txn.execute_values(
                        select + clause + f" ORDER BY {uid}", (folder_id, *params)
                    )
            return _summaries(rows, fields)

        if not uids:
            return defer.succeed([])
        return self._run("message_summaries", txn_fn, readonly=True)

    def subject_candidates(self, folder_id, needle: str, label=False):
        """Fire with a ``MessageSummary`` carrying ``subject`` for each live placement of the
        folder (or, ``label``, the label view) whose subject may contain ``needle`` (a
        casefolded search string), in UID order: IMAP's SEARCH SUBJECT done by the database.

        Every subject whose casefold contains ``needle`` is among them; the caller tests the
        ones it gets. An all-ASCII subject casefolds to its ASCII lowercase, so for it the
        database's answer is exact (and it cannot contain a non-ASCII ``needle``); a subject
        with any other character is always returned (``ß`` casefolds to ``ss``, the Kelvin
        sign to ``k``), which is rare enough to leave to Python."""

        async def txn_fn(txn):
            column = "m.subject"
            if needle.isascii():
                condition = f"({txn.ascii_contains(column)} OR {txn.non_ascii(column)})"
                params = (needle,)
            else:
                condition, params = txn.non_ascii(column), ()
            uid = "ml.uid" if label else "mm.uid"
            rows = await txn.execute_values(
                _select(txn, ("subject",), label) + condition + f" ORDER BY {uid}",
                (folder_id, *params),
            )
            return _summaries(rows, ("subject",))

        return self._run("subject_candidates", txn_fn, readonly=True)

    def folder_summaries(self, folder_id):
        """Fire with a ``MessageSummary`` (no message fields) for every live placement of the
        folder, in UID order: what a session's view of a selected folder holds."""

        async def txn_fn(txn):
            rows = await txn.execute_values(
                f"SELECT {_ROW_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL ORDER BY mm.uid",
                (folder_id,),
            )
            return _summaries(rows, ())

        return self._run("folder_summaries", txn_fn, readonly=True)

    def read_message_ranges(self, requests):
        """Fire with, for each ``(info, ranges)`` of ``requests``, the bytes of the message at
        each ``(start, length)`` of ``ranges`` (a list of bytes per request, in order).
        ``info`` is a ``MessageInfo`` or a ``MessageSummary`` with ``blob_key`` and
        ``layout``. On a blob directory every range of a single-blob message is read in one
        thread call; other reads run concurrently, ``_CONCURRENT_READS`` at a time."""
        return defer.Deferred.fromCoroutine(self._read_message_ranges(list(requests)))

    async def _read_message_ranges(self, requests):
        out = [[None] * len(ranges) for _, ranges in requests]
        read_many = getattr(self.blobs, "read_many", None)
        if read_many is not None:
            where, wanted = [], []
            for n, (info, ranges) in enumerate(requests):
                if not info.layout:
                    for k, (start, length) in enumerate(ranges):
                        where.append((n, k))
                        wanted.append((info.blob_key, start, length))
            if wanted:
                for (n, k), data in zip(where, await read_many(wanted), strict=True):
                    out[n][k] = data
        rest = [
            (n, k, info, start, length)
            for n, (info, ranges) in enumerate(requests)
            for k, (start, length) in enumerate(ranges)
            if out[n][k] is None
        ]
        for first in range(0, len(rest), _CONCURRENT_READS):
            chunk = rest[first : first + _CONCURRENT_READS]
            datas = await defer.gatherResults(
                [self.read_message(info, start, length) for _, _, info, start, length in chunk],
                consumeErrors=True,
            )
            for (n, k, *_), data in zip(chunk, datas, strict=True):
                out[n][k] = data
        return out


#: Covering indexes on ``messages`` (SQLite: migrations 017 and 032) and the fields each holds
#: beside the id: a read of only those fields names the index (``txn.index_hint``).
_COVERING_INDEXES = (
    ("messages_id_subject", frozenset({"subject"})),
    ("messages_id_envelope", frozenset({"envelope"})),
)


def _select(txn, fields, label=False) -> str:
    """The start of the SELECT for ``fields``, up to the UID condition. ``label``: the rows of
    a label view (``?`` is the label id, and the UID is the link's: ``ml.uid``)."""
    columns = _ROW_COLUMNS
    join = ""
    if fields:
        columns += ", " + ", ".join(SUMMARY_FIELDS[f] for f in fields)
        hint = next(
            (txn.index_hint(name) for name, held in _COVERING_INDEXES if set(fields) <= held), ""
        )
        join = f" JOIN messages m{hint} ON m.id = mm.message_id"
    if label:
        return (
            f"SELECT {columns.replace('mm.uid', 'ml.uid', 1)} FROM message_labels ml "
            f"JOIN mailbox_messages mm ON mm.id = ml.mailbox_message_id{join} "
            "WHERE ml.label_id = ? AND mm.deleted_at IS NULL AND "
        )
    return (
        f"SELECT {columns} FROM mailbox_messages mm{join} WHERE mm.folder_id = ? "
        "AND mm.deleted_at IS NULL AND "
    )


def _summaries(rows, fields) -> list[MessageSummary]:
    """Rows of ``_ROW_COLUMNS`` (then ``fields``) as ``MessageSummary`` values; the flags of
    rows with the same flag columns are one shared tuple."""
    flag_cache: dict = {}

    def flags_of(keywords, bits):
        key = (keywords, bits)
        flags = flag_cache.get(key)
        if flags is None:
            system = tuple(f for i, f in enumerate(_SYSTEM_FLAGS) if bits >> i & 1)
            flags = flag_cache[key] = system + tuple(json.loads(keywords or "[]"))
        return flags

    new = tuple.__new__
    if not fields:  # a folder's rows (SELECT): nothing but the row's own columns
        return [
            new(MessageSummary, (r[0], r[1], flags_of(r[4], r[5]), r[2], r[3], *_DEFAULTS))
            for r in rows
        ]
    positions = [MessageSummary._fields.index(f) for f in fields]
    json_positions = [p for p, f in zip(positions, fields, strict=True) if f in _JSON_FIELDS]
    bytes_positions = [p for p, f in zip(positions, fields, strict=True) if f in _BYTES_FIELDS]
    out = []
    for r in rows:
        values = [r[0], r[1], flags_of(r[4], r[5]), r[2], r[3], *_DEFAULTS]
        for position, value in zip(positions, r[_FIRST_FIELD:], strict=True):
            values[position] = value
        for position in json_positions:
            values[position] = json.loads(values[position]) if values[position] else None
        for position in bytes_positions:
            if values[position] is not None:
                values[position] = bytes(values[position])
        out.append(new(MessageSummary, values))
    return out
