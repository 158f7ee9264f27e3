"""The threads the authentication checks block in.

pyspf and dkimpy wait in their thread for each DNS answer (up to ``dns.timeout_seconds``, and
pyspf makes up to ten lookups). In the reactor's own pool (10 threads) a burst of mail from
domains with slow DNS would hold every thread and delay what else uses it, such as writing
blobs of mail already accepted. So the checks get a pool of their own: they wait for each other,
not the storage. Its threads are daemon threads, so one stuck on DNS never holds up the process
at exit.
"""

from __future__ import annotations

import functools
import threading

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

#: At most this many checks block at once; more wait their turn.
MAX_THREADS = 20

_pool: ThreadPool | None = None
_lock = threading.Lock()


class _DaemonThreadPool(ThreadPool):
    threadFactory = staticmethod(functools.partial(threading.Thread, daemon=True))


def pool() -> ThreadPool:
    """The process's pool for authentication checks, started on first use."""
    global _pool
    with _lock:
        if _pool is None:
            started = _DaemonThreadPool(0, MAX_THREADS, "haitatsu-mailauth")
            started.start()
            _pool = started
    return _pool


def run(reactor, f, *args, **kwargs):
    """``f(*args, **kwargs)`` in the pool; a Deferred of its result, fired in the reactor."""
    return deferToThreadPool(reactor, pool(), f, *args, **kwargs)
