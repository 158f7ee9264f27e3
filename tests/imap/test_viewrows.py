"""``viewrows``: a session's rows as a shared read plus its own changes answer every question
exactly as a private list would, through any sequence of replacements, expunges and arrivals
(checked against a plain list model), and sessions in the same state share one read."""

from __future__ import annotations

import bisect
import gc
import random
from typing import NamedTuple

from twisted.trial import unittest

from haitatsu.imap.account import FolderView
from haitatsu.imap.viewrows import SharedRows, SharedRowsCache, ViewRows, updated


class Row(NamedTuple):
    uid: int
    modseq: int
    flags: tuple = ()


class Folder(NamedTuple):
    id: str = "f"
    uid_validity: int = 1
    uid_next: int = 1
    highest_modseq: int = 1


def check(testcase, view: FolderView, model: list):
    uids = [r.uid for r in model]
    testcase.assertEqual(view.exists, len(model))
    testcase.assertEqual(list(view.uids), uids)
    testcase.assertEqual(list(view.rows), model)
    testcase.assertEqual([view.uids[i] for i in range(len(uids))], uids)
    testcase.assertEqual([view.rows[i] for i in range(len(uids))], model)
    if uids:
        testcase.assertEqual(view.uids[-1], uids[-1])
        testcase.assertEqual(view.uids[2:7], uids[2:7])
        testcase.assertEqual(view.view_rows.rows_slice(1, 6), model[1:6])
        testcase.assertEqual(view.view_rows.rows_slice(0, len(model) + 5), model)
        testcase.assertEqual(view.rows_for(uids[1:4]), (2, model[1:4]))
        if len(uids) > 3:
            testcase.assertIsNone(view.rows_for([uids[0], uids[2]]))
    testcase.assertIsNone(view.rows_for([]))
    for seq, row in enumerate(model, 1):
        testcase.assertEqual(view.seq(row.uid), seq)
        testcase.assertIn(row.uid, view.by_uid)
        testcase.assertEqual(view.row(row.uid), row)
    absent = set(range(0, (uids[-1] if uids else 0) + 3)) - set(uids)
    for uid in absent:
        testcase.assertNotIn(uid, view.by_uid)
        testcase.assertIsNone(view.by_uid.get(uid))
        with testcase.assertRaises(KeyError):
            view.seq(uid)
    # Bisection over the sequence works as over a list (resolve_sequence_set does this).
    for uid in list(absent)[:5] + uids[:5]:
        testcase.assertEqual(bisect.bisect_left(view.uids, uid), bisect.bisect_left(uids, uid))


class ViewRowsTests(unittest.SynchronousTestCase):
    def test_random_changes_match_a_plain_list(self):
        rng = random.Random(7)
        self.patch(ViewRows, "_MIN_OVERLAY", 16)
        for _ in range(20):
            model = [Row(uid, uid) for uid in sorted(rng.sample(range(1, 300), 120))]
            view = FolderView(folder=None, readonly=False, rows=SharedRows(model))
            modseq, top = 1000, model[-1].uid
            for _ in range(60):
                action = rng.random()
                if action < 0.35 and model:
                    doomed = rng.sample([r.uid for r in model], min(len(model), rng.randint(1, 4)))
                    expected = sorted(
                        ([r.uid for r in model].index(u) + 1 for u in doomed), reverse=True
                    )
                    self.assertEqual(view.remove(doomed + [100_000]), expected)
                    model = [r for r in model if r.uid not in doomed]
                elif action < 0.7 and model:
                    i = rng.randrange(len(model))
                    modseq += 1
                    new = Row(model[i].uid, modseq, ("\\Seen",))
                    self.assertEqual(view.update_rows([new, Row(100_001, 1)]), [new.uid])
                    model[i] = new
                else:
                    # UIDs only grow: never one the folder had before.
                    added = [Row(top + k, modseq) for k in range(1, rng.randint(2, 5))]
                    top = added[-1].uid
                    view.append_rows(added)
                    model += added
                check(self, view, model)

    def test_a_delta_reports_what_changed(self):
        rows = [Row(1, 1), Row(2, 2), Row(3, 3)]
        view = FolderView(folder=None, readonly=False, rows=rows)
        update = view.apply_delta([Row(3, 5, ("\\Flagged",)), Row(4, 6)], [2])
        self.assertEqual((update.expunged, update.vanished), ([2], [2]))
        self.assertEqual(update.flags, [(2, Row(3, 5, ("\\Flagged",)))])
        self.assertEqual(update.exists, 3)
        check(self, view, [Row(1, 1), Row(3, 5, ("\\Flagged",)), Row(4, 6)])

    def test_uids_at_reads_runs(self):
        view = FolderView(folder=None, readonly=False, rows=[Row(u, u) for u in range(1, 11)])
        view.remove([4])
        self.assertEqual(view.uids_at([0, 1, 2, 3, 4, 8]), [1, 2, 3, 5, 6, 10])
        self.assertEqual(view.uids_at([]), [])

    def test_keywords_and_first_unseen(self):
        rows = [Row(1, 1, ("\\Seen", "$b")), Row(2, 2, ("$a",)), Row(3, 3, ("\\Seen", "$a"))]
        view = FolderView(folder=None, readonly=False, rows=rows)
        self.assertEqual(view.keywords(), ["$a", "$b"])
        self.assertEqual(view.first_unseen(), 2)
        view.update_rows([Row(2, 4, ("\\Seen",))])
        self.assertIsNone(view.first_unseen())
        self.assertEqual(view.keywords(), ["$a", "$b"])


class SharedRowsCacheTests(unittest.SynchronousTestCase):
    def test_one_read_per_folder_state_held_while_used(self):
        cache = SharedRowsCache()
        folder = Folder()
        shared = SharedRows([Row(1, 1)])
        cache.put(folder, shared)
        self.assertIs(cache.get(folder), shared)
        self.assertIsNone(cache.get(folder._replace(highest_modseq=2)))
        self.assertIsNone(cache.get(folder._replace(uid_next=5)))
        self.assertIsNone(cache.get(folder._replace(uid_validity=9)))
        first = FolderView(folder=folder, readonly=False, rows=shared)
        second = FolderView(folder=folder, readonly=False, rows=shared)
        # One session's changes stay its own.
        first.remove([1])
        self.assertEqual(list(second.uids), [1])
        self.assertEqual(list(first.uids), [])
        del shared, first, second
        gc.collect()
        self.assertIsNone(cache.get(folder))

    def test_the_latest_read_of_a_folder_while_held(self):
        cache = SharedRowsCache()
        folder = Folder(highest_modseq=5)
        old, new = SharedRows([Row(1, 1)]), SharedRows([Row(1, 1), Row(2, 7)])
        cache.put(folder, old)
        self.assertEqual(cache.latest(folder._replace(highest_modseq=9)), (5, old))
        cache.put(folder._replace(highest_modseq=7), new)
        cache.put(folder._replace(highest_modseq=6), SharedRows([]))  # older: not the latest
        self.assertEqual(cache.latest(folder._replace(highest_modseq=9)), (7, new))
        # Not from another UIDVALIDITY, nor newer than the folder asked about.
        self.assertIsNone(cache.latest(folder._replace(uid_validity=2, highest_modseq=9)))
        self.assertIsNone(cache.latest(folder._replace(highest_modseq=6)))
        del new
        gc.collect()
        self.assertIsNone(cache.latest(folder._replace(highest_modseq=9)))

    def test_updated_applies_a_delta_to_a_read(self):
        shared = SharedRows([Row(u, u) for u in (1, 2, 4, 6, 8)])
        # 4 and 9 vanished (9 arrived and left), 2 changed, 5 arrived below the last UID (a
        # late commit), 10 arrived at the end.
        changed = [Row(2, 11, ("\\Seen",)), Row(5, 12), Row(10, 13), Row(9, 14)]
        result = updated(shared, changed, [4, 9])
        expected = [
            Row(1, 1),
            Row(2, 11, ("\\Seen",)),
            Row(5, 12),
            Row(6, 6),
            Row(8, 8),
            Row(10, 13),
        ]
        self.assertEqual(result.rows, expected)
        self.assertEqual(result.uids, [1, 2, 5, 6, 8, 10])
        self.assertEqual(result.flag_sets(), {(), ("\\Seen",)})
        # The read it started from is unchanged (other views share it).
        self.assertEqual(shared.rows, [Row(u, u) for u in (1, 2, 4, 6, 8)])
        self.assertEqual(updated(shared, [], []).rows, shared.rows)

    def test_a_view_with_many_changes_takes_its_own_copy(self):
        self.patch(ViewRows, "_MIN_OVERLAY", 4)
        shared = SharedRows([Row(u, u) for u in range(1, 41)])
        view = FolderView(folder=None, readonly=False, rows=shared)
        view.remove([1, 2, 3, 4, 5, 6])
        self.assertIsNot(view.view_rows._shared, shared)
        self.assertEqual(len(shared.rows), 40)
        check(self, view, [Row(u, u) for u in range(7, 41)])
