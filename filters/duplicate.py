"""``duplicate``: each mailbox gets a message (by its Message-ID) once within a window.

At DELIVERY, per recipient mailbox: the first copy of a Message-ID within ``window_seconds``
is delivered as usual; a later copy is dropped for that mailbox (``action = "discard"``: the
client gets its 250 and nothing is stored) or filed in ``folder`` (``action = "file"``; the
folder is created when the mailbox has none of that name). A message without a Message-ID is
never a duplicate.

The Message-IDs are in the database (migration 025), shared by every node. A copy is a
duplicate only once the first delivery's message is really in the mailbox: when that delivery
failed (the storage was down, the client got a 4xx and retries), the retry is delivered.

Options: ``window_seconds`` (86400), ``action`` (``"discard"`` or ``"file"``), ``folder``
(``"Duplicates"``, for ``file``).
"""

from __future__ import annotations

import hashlib
import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from haitatsu.filtering import (
    FilterResult,
    IFilter,
    IFilterFactory,
    Options,
    Stage,
    continue_,
    discard,
)

#: How often (seconds) a node deletes Message-IDs older than the window.
PRUNE_INTERVAL = 3600.0

_MSG_ID = re.compile(r"<([^<>]*)>")

_NOTE = "duplicate"


def message_key(value: str) -> str:
    """The digest a Message-ID field is remembered by: the id between the first ``<>`` (the
    whole value when there are none), without surrounding space; "" when there is nothing."""
    m = _MSG_ID.search(value)
    ident = (m.group(1) if m else value).strip()
    if not ident:
        return ""
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()


@implementer(IFilter)
class DuplicateFilter:
    name = "duplicate"
    #: The Message-ID is read at DATA (the client's header section), used at DELIVERY.
    stages = (Stage.DATA, Stage.DELIVERY)
    _log = Logger()

    def __init__(self, store, window: float, action: str, folder: str):
        self.store = store
        self.window = window
        self.action = action
        self.folder = folder
        self._next_prune = None

    async def check(self, stage, context):
        if stage is Stage.DATA:
            values = context.message.header("Message-ID")
            context.notes[_NOTE] = message_key(values[0]) if values else ""
            return None
        key = context.notes.get(_NOTE)
        if not key:
            return None
        target = context.target
        now = context.clock.seconds()
        state = await self.store.duplicate_check(
            target.mailbox_id, key, context.trace_id, int(now * 1e9), int(self.window * 1e9)
        )
        self._maybe_prune(now)
        if state != "duplicate":
            return None
        result = FilterResult(comment=target.mailbox_id)
        if self.action == "discard":
            return discard(reason="duplicate", results=result)
        if await self.store.get_folder(target.mailbox_id, self.folder) is None:
            try:
                await self.store.create_folder(target.mailbox_id, self.folder)
            except Exception as e:
                # Another delivery made it meanwhile; anything else is a real failure.
                if await self.store.get_folder(target.mailbox_id, self.folder) is None:
                    raise e
        target.folder = self.folder
        target.extra_folders.clear()
        return continue_(reason="duplicate", results=result)

    def _maybe_prune(self, now: float):
        """Now and then (at most once per ``PRUNE_INTERVAL``), forget Message-IDs older than
        the window, in the background."""
        if self._next_prune is None:
            self._next_prune = now + PRUNE_INTERVAL
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        d = defer.maybeDeferred(self.store.prune_duplicates, int((now - self.window) * 1e9))
        d.addCallback(lambda n: self._log.info("duplicate: pruned {n} rows", n=n))
        d.addErrback(lambda f: self._log.failure("duplicate: pruning failed", f))


@implementer(IPlugin, IFilterFactory)
class DuplicateFactory:
    name = "duplicate"
    description = "deliver a Message-ID to each mailbox once within a window"

    def build(self, options, environment):
        opts = Options(self.name, options)
        window = opts.number("window_seconds", default=86400.0, minimum=1)
        action = opts.choice("action", ["discard", "file"], default="discard")
        folder = opts.string("folder", default="Duplicates").strip().strip("/")
        if not folder:
            raise opts.error("folder", "must name a folder")
        opts.done()
        return DuplicateFilter(environment.store, window, action, folder)


duplicate = DuplicateFactory()
