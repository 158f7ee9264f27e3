"""QRESYNC's ``VANISHED (EARLIER)`` (RFC 7162 3.2.5.1 and 3.2.6): which UIDs to report to a
client that says which MODSEQ it last saw.

While the store still lists every UID that left the folder above that MODSEQ
(``VanishedReport.complete``), the answer is exactly those UIDs within the client's set. Once
housekeeping has pruned past it, the store cannot say what vanished, and RFC 7162 lets the
server over-report instead: every UID in the client's known UIDs (or ``1:UIDNEXT-1`` without
them) that is not in the folder now. Never under-report: a client that is told too little
keeps showing deleted mail. The answer is built from ranges, never a list of every UID, so
``1:4294967295`` costs the number of live messages.

Sequence match data (``(seqs uids)``, 3.2.5.2) narrows that over-report: when the client's
message number ``s`` had UID ``u`` and the folder's message ``s`` still has UID ``u``, no
message below ``u`` left (none can be added below ``u``, and the count below it is the
same), so only UIDs above ``u`` are reported.
"""

from __future__ import annotations

import bisect

from haitatsu.imap.wire import format_uid_set

#: Pairs of sequence match data looked at, at most (it only narrows the answer).
SEQ_MATCH_LIMIT = 100_000


def _announced(view) -> int:
    """The UIDNEXT this session announced, or reached since (its view): the client knows of
    no UID at or above it."""
    last = view.uids[-1] if view.uids else 0
    return max(view.folder.uid_next, last + 1)


def _spans(ranges, top: int) -> list[tuple[int, int]]:
    """Client ranges (``None`` is ``*``: up to ``top``, as ``_in_ranges`` reads it) as sorted,
    merged ``(low, high)`` spans within ``1..top``."""
    if ranges is None:
        ranges = [(1, top)]
    spans = []
    for low, high in ranges:
        if low is None and high is None:
            low, high = 1, top
        elif low is None or high is None:
            low, high = (high if low is None else low), top
        low, high = max(1, min(low, high)), min(top, max(low, high))
        if low <= high:
            spans.append((low, high))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _numbers(ranges):
    """The numbers of a sequence set without ``*``, in the client's order."""
    for low, high in ranges:
        step = 1 if high >= low else -1
        yield from range(low, high + step, step)


def _count(ranges) -> int | None:
    if any(low is None or high is None for low, high in ranges):
        return None
    return sum(abs(high - low) + 1 for low, high in ranges)


def matched_floor(seq_match, live_uids) -> int:
    """The highest UID ``u`` of the sequence match data whose message number still has it (0
    when none does, or the data is unusable: ``*`` in it, or sets of different sizes)."""
    if seq_match is None:
        return 0
    seqs, uids = seq_match
    n = _count(seqs)
    if n is None or n != _count(uids):
        return 0
    floor = 0
    for i, (seq, uid) in enumerate(zip(_numbers(seqs), _numbers(uids), strict=False)):
        if i >= SEQ_MATCH_LIMIT:
            break
        if 1 <= seq <= len(live_uids) and live_uids[seq - 1] == uid:
            floor = max(floor, uid)
    return floor


def missing_spans(spans, live_uids) -> list[tuple[int, int]]:
    """The parts of ``spans`` with no UID of ``live_uids`` (ascending) in them."""
    out = []
    for low, high in spans:
        i = bisect.bisect_left(live_uids, low)
        current = low
        while i < len(live_uids) and live_uids[i] <= high:
            if live_uids[i] > current:
                out.append((current, live_uids[i] - 1))
            current = live_uids[i] + 1
            i += 1
        if current <= high:
            out.append((current, high))
    return out


def format_spans(spans) -> bytes:
    return b",".join(b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in spans)


def vanished_earlier(report, ranges, view, seq_match=None) -> bytes:
    """The UID set of ``* VANISHED (EARLIER)`` for a session's ``view`` of the folder, from the
    store's ``VanishedReport``, the client's UID ranges (None: all it may know of) and its
    sequence match data; ``b""`` when there is nothing to report."""
    if report.complete:
        spans = _spans(ranges, max(report.uid_next, _announced(view)) - 1)
        gone = [
            uid
            for uid in report.uids
            if uid not in view.by_uid and any(lo <= uid <= hi for lo, hi in spans)
        ]
        return format_uid_set(gone)
    spans = _spans(ranges, min(report.uid_next, _announced(view)) - 1)
    floor = matched_floor(seq_match, view.uids)
    if floor:
        spans = [(max(lo, floor + 1), hi) for lo, hi in spans if hi > floor]
    return format_spans(missing_spans(spans, view.uids))
