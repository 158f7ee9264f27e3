"""The filters of a session that has none: every hook answers None at once.

The SMTP session calls one hook per stage; with the empty chain (and on submission, which has
no chain) these are the hooks, so the session's path is the same as without filters: no
context, no Deferred, no spool rewrite.
"""

from __future__ import annotations


class NullFilters:
    """Stands in for ``SessionFilters`` when no filter runs."""

    active = False

    def connect(self, protocol):
        return None

    def helo(self, name):
        return None

    def mail(self, sender, params):
        return None

    def rcpt(self, address, recipient):
        return None

    def release(self):
        pass


NULL_FILTERS = NullFilters()
