"""The store is one class made of mixins: two parts must never define the same name, or one
silently replaces the other (whichever comes first in the MRO wins)."""

from __future__ import annotations

from collections import defaultdict

from twisted.trial import unittest

from haitatsu.storage.store import MailStore


class StorePartsTests(unittest.SynchronousTestCase):
    def test_no_two_parts_define_the_same_name(self):
        owners = defaultdict(list)
        for part in MailStore.__mro__[1:]:
            if part is object:
                continue
            for name in vars(part):
                if not name.startswith("__"):
                    owners[name].append(part.__name__)
        clashes = {name: parts for name, parts in owners.items() if len(parts) > 1}
        self.assertEqual(clashes, {})
