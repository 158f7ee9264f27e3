"""The authentication checks' own thread pool."""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.trial import unittest

from haitatsu.mailauth import pool


class PoolTests(unittest.TestCase):
    async def test_runs_in_daemon_threads_of_its_own(self):
        def where():
            thread = threading.current_thread()
            return thread.name, thread.daemon

        name, daemon = await pool.run(reactor, where)
        self.assertIn("haitatsu-mailauth", name)
        self.assertTrue(daemon)
        self.assertIs(pool.pool(), pool.pool())

    async def test_at_most_max_threads_block(self):
        release = threading.Event()
        running = []
        lock = threading.Lock()

        def block():
            with lock:
                running.append(1)
            release.wait(10)

        waits = [pool.run(reactor, block) for _ in range(pool.MAX_THREADS + 5)]
        for _ in range(200):
            if len(running) >= pool.MAX_THREADS:
                break
            await deferLater(0.01)
        await deferLater(0.05)
        self.assertEqual(len(running), pool.MAX_THREADS)
        release.set()
        await defer.gatherResults(waits)
        self.assertEqual(len(running), pool.MAX_THREADS + 5)


def deferLater(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)
