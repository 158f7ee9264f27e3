"""Spool files and the spool directory: buffering, files made ahead and removed in threads."""

from __future__ import annotations

import os
import stat

from twisted.internet import reactor, task
from twisted.trial import unittest

from haitatsu.smtp.spool import PREFIX, SpoolDirectory, SpoolFile
from tests.smtp.helpers import temp_dir


async def eventually(condition, timeout=10.0):
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class SpoolFileTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_small_message_stays_buffered_until_close(self):
        spool = SpoolFile.create(self.dir, "01TRACE")
        self.assertEqual(os.path.basename(spool.path), f"{PREFIX}01TRACE.eml")
        self.assertEqual(stat.S_IMODE(os.stat(spool.path).st_mode), 0o600)
        spool.write(b"Subject: hi\r\n\r\n")
        spool.write(b"body\r\n")
        self.assertEqual(os.path.getsize(spool.path), 0)
        self.assertEqual(spool.size, 21)
        spool.close()
        spool.close()
        with open(spool.path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: hi\r\n\r\nbody\r\n")

    def test_a_full_buffer_is_written_through(self):
        spool = SpoolFile.create(self.dir)
        chunk = b"x" * 1000 + b"\r\n"
        for _ in range(SpoolFile.BUFFER // len(chunk) + 1):
            spool.write(chunk)
        self.assertGreaterEqual(os.path.getsize(spool.path), SpoolFile.BUFFER)
        spool.write(b"tail")
        spool.close()
        self.assertEqual(os.path.getsize(spool.path), spool.size)

    def test_a_message_in_memory_is_rewritten_there(self):
        spool = SpoolFile.create(self.dir)
        spool.write(b"Subject: hi\r\n\r\nbody\r\n")
        self.assertTrue(spool.in_memory)
        self.assertEqual(spool.buffered(), b"Subject: hi\r\n\r\nbody\r\n")
        spool.rewrite(b"Received: x\r\n" + spool.buffered())
        self.assertEqual(spool.size, 34)
        self.assertEqual(os.path.getsize(spool.path), 0)
        spool.close()
        self.assertFalse(spool.in_memory)
        with open(spool.path, "rb") as f:
            self.assertEqual(f.read(), b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n")

    def test_once_written_out_it_cannot_be_rewritten(self):
        spool = SpoolFile.create(self.dir)
        spool.write(b"Subject: hi\r\n\r\n")
        spool.flush()
        self.assertFalse(spool.in_memory)
        with open(spool.path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: hi\r\n\r\n")
        with self.assertRaises(ValueError):
            spool.rewrite(b"other")
        spool.write(b"body\r\n")
        spool.close()
        with open(spool.path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: hi\r\n\r\nbody\r\n")

    def test_discard_drops_unwritten_bytes_and_the_file(self):
        spool = SpoolFile.create(self.dir)
        spool.write(b"never written")
        path = spool.path
        spool.discard()
        spool.discard()
        self.assertFalse(os.path.exists(path))
        with self.assertRaises(OSError):
            spool.write(b"after discard")

    def test_names_clash_falls_back_to_a_fresh_name(self):
        first = SpoolFile.create(self.dir, "SAME")
        second = SpoolFile.create(self.dir, "SAME")
        self.assertNotEqual(first.path, second.path)
        self.assertTrue(os.path.basename(second.path).startswith(PREFIX))

    def test_unusable_directory(self):
        with self.assertRaises(OSError):
            SpoolFile.create(os.path.join(self.dir, "missing"), "X")


class SpoolDirectoryWithoutThreadsTests(unittest.SynchronousTestCase):
    """With a clock that runs no threads (tests), files are made and removed at once."""

    def test_make_and_remove_at_once(self):
        path = os.path.join(temp_dir(self), "spool")
        spool_dir = SpoolDirectory(path, task.Clock())
        spool_dir.start()
        self.assertEqual(os.listdir(path), [])
        spool = spool_dir.take("01ABC")
        self.assertEqual(os.listdir(path), [f"{PREFIX}01ABC.eml"])
        spool.discard()
        self.assertEqual(os.listdir(path), [])
        spool_dir.stop()


class SpoolDirectoryTests(unittest.TestCase):
    """On the real reactor: empty files are made ahead in a thread, used ones removed in a
    thread many at a time, and nothing is left after ``stop``."""

    def setUp(self):
        self.path = os.path.join(temp_dir(self), "spool")
        self.spool_dir = SpoolDirectory(self.path, reactor)
        self.spool_dir.start()
        self.addCleanup(self.spool_dir.stop)

    def files(self):
        return set(os.listdir(self.path))

    async def test_files_made_ahead_are_used_and_replenished(self):
        await eventually(lambda: len(self.files()) == SpoolDirectory.READY)
        ahead = self.files()
        taken = [self.spool_dir.take("unused-name") for _ in range(SpoolDirectory.READY)]
        self.assertEqual({os.path.basename(s.path) for s in taken}, ahead)
        # Taking them asked for more, made in a thread.
        await eventually(lambda: len(self.files()) > SpoolDirectory.READY)
        for number, spool in enumerate(taken):
            spool.write(b"message %d\r\n" % number)
            spool.close()
            with open(spool.path, "rb") as f:
                self.assertEqual(f.read(), b"message %d\r\n" % number)

    async def test_removals_happen_in_a_thread_in_batches(self):
        await eventually(lambda: len(self.files()) == SpoolDirectory.READY)
        spools = [self.spool_dir.take() for _ in range(40)]
        for spool in spools:
            spool.write(b"x")
            spool.close()
        paths = [s.path for s in spools]
        for spool in spools:
            spool.discard()
        # Queued, not removed on the reactor.
        self.assertTrue(all(os.path.exists(p) for p in paths))
        await eventually(lambda: not any(os.path.exists(p) for p in paths))

    async def test_stop_removes_files_made_ahead_and_queued_removals(self):
        await eventually(lambda: len(self.files()) == SpoolDirectory.READY)
        spool = self.spool_dir.take()
        spool.discard()
        self.spool_dir.stop()
        self.assertEqual(self.files(), set())
        # After stop, a removal happens at once.
        late = SpoolFile.create(self.path, "late", self.spool_dir.remove)
        late.discard()
        self.assertEqual(self.files(), set())

    async def test_take_works_before_anything_was_made_ahead(self):
        spool = self.spool_dir.take("01FIRST")
        spool.write(b"first")
        spool.close()
        self.assertEqual(os.path.getsize(spool.path), 5)
