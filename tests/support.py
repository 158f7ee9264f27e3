"""Shared test fixtures: real stores on temporary storage, cleaned up after each test."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, reactor

from haitatsu.storage import open_sqlite_store


async def make_store(testcase, root: str | None = None):
    """A real ``MailStore`` on a temporary SQLite file and blob directory.

    The store is closed when the test ends. ``root`` defaults to a fresh directory under the
    test's temporary path.
    """
    root = root or testcase.mktemp()
    os.makedirs(root, exist_ok=True)
    store = await open_sqlite_store(
        reactor, os.path.join(root, "haitatsu.db"), os.path.join(root, "blobs")
    )
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
    return store


async def deliver_bytes(
    store,
    data: bytes,
    mailbox_id: str,
    folder: str = "INBOX",
    flags=(),
    testcase=None,
    trace_id: str = "TRACE",
):
    """Deliver ``data`` to one mailbox folder through the store's real delivery path."""
    from haitatsu.storage.records import Delivery

    fd, path = tempfile.mkstemp(suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        placed = await store.deliver(
            path,
            [Delivery(mailbox_id=mailbox_id, folder=folder, flags=tuple(flags))],
            trace_id=trace_id,
        )
    finally:
        os.unlink(path)
    return placed
