"""Debian's Postfix as the relay: a throwaway instance on a loopback port (``bench.peers``)
that delivers to a maildir. What lands there is our stored message byte for byte, apart from
what Postfix adds on top (its Return-Path, X-Original-To, Delivered-To and Received header
fields) and the line ends a maildir file has (LF)."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.queue.helpers import MESSAGE, make_config, make_queue, queue_message
from tests.support import make_store

SKIP = None
if shutil.which("postfix") is None:
    SKIP = "Debian's postfix is not installed (apt-get install postfix)"
elif os.geteuid() != 0:
    SKIP = "a throwaway Postfix instance needs root (it runs as the postfix user)"

POSTFIX_HEADERS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")


def strip_postfix_headers(data: bytes) -> bytes:
    """Drop the header fields Postfix put above the message (with their folded lines)."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines) and (
        lines[i].lower().startswith(POSTFIX_HEADERS) or lines[i][:1] in (b" ", b"\t")
    ):
        i += 1
    return b"\n".join(lines[i:])


class PostfixRelayTests(unittest.TestCase):
    skip = SKIP
    timeout = 120

    async def test_postfix_receives_the_relayed_message_byte_exact(self):
        from bench.peers import Postfix

        workdir = tempfile.mkdtemp(prefix="haitatsu-postfix-")
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        postfix = Postfix(workdir, domain="remote.test")
        await deferToThread(postfix.start)
        self.addCleanup(lambda: deferToThread(postfix.stop))

        store = await make_store(self)
        queue = make_queue(self, store, make_config(f"127.0.0.1:{postfix.port}"))
        _, message_id, job_id = await queue_message(store, ["bob@remote.test"])
        self.assertEqual(await queue.process_due(), 1)
        job = await store.get_outbound_job(job_id)
        self.assertEqual(job.status, "sent", job.last_error)
        self.assertEqual(job.attempt_log[0].result["code"], 250)

        new = os.path.join(postfix.maildir, "box", "new")
        for _ in range(300):  # Postfix delivers from its queue a moment later
            if os.path.isdir(new) and os.listdir(new):
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        (name,) = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            delivered = f.read()
        self.assertIn(f"Return-Path: <bounces+{message_id}@example.com>".encode(), delivered)
        self.assertEqual(strip_postfix_headers(delivered), MESSAGE.replace(b"\r\n", b"\n"))
