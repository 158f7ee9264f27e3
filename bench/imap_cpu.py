"""CPU of IMAP commands on a mailbox loaded by ``bench/imap.py --keep DIR``, in one process.

    .venv/bin/python bench/imap_cpu.py DIR/bench-imap-haitatsu-*/haitatsu.pkl \\
        [--commands coldselect,select,uidfetch,subject] [--runs 5] [--profile uidfetch]

Opens the store the kept server used (stop nothing: ``bench/imap.py`` has stopped it), logs in
over a ``StringTransport`` (no sockets) with a new app password, and for each command runs a
warm-up then ``--runs`` timed runs, printing the median process CPU time (``process_time``:
every thread, so the store's SQL counts too) and wall time. ``coldselect`` is SELECT INBOX after
an UNSELECT (the folder's rows read again); ``select`` is a re-SELECT of the selected folder.
``--profile NAME`` prints cProfile (CPU clock) of the last run of that command. Less sensitive
to a loaded machine than the socket benchmark's wall times; the client's own work (matching
the tagged answer in the output) is in the figures too.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mailcorpus import BODY_WORD, SUBJECT_WORD  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from haitatsu.config.loader import load_config  # noqa: E402
from haitatsu.imap import IMAPFactory  # noqa: E402
from haitatsu.storage import build_store  # noqa: E402

PEER = IPv4Address("TCP", "127.0.0.1", 40999)
COMMANDS = {
    "coldselect": b"SELECT INBOX",
    "select": b"SELECT INBOX",
    "uidfetch": b"UID FETCH 1:* (FLAGS)",
    "envelope": b"FETCH 1:* (FLAGS ENVELOPE)",
    "subject": b"UID SEARCH SUBJECT " + SUBJECT_WORD.encode(),
    "body": b"UID SEARCH BODY " + BODY_WORD.encode(),
}


async def run(reactor, args):
    os.chdir(os.path.dirname(os.path.abspath(args.config)))
    config = load_config(args.config)
    store = build_store(config, reactor)
    await store.open()
    boxes = await store.list_mailboxes()
    box = boxes[0] if isinstance(boxes, list) else boxes.items[0]
    _, password = await store.create_app_password(box.id, "imap_cpu", ["imap"])
    factory = IMAPFactory(lambda: config, store, reactor, spool_dir=config.data_dir)
    server = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)

    async def command(line: bytes) -> bytes:
        tag = line.split(b" ", 1)[0]
        transport.clear()
        server.dataReceived(line + b"\r\n")
        done = re.compile(rb"^" + re.escape(tag) + rb" (OK|NO|BAD)[^\r\n]*\r\n", re.M)
        while not done.search(transport.value()):
            await task.deferLater(reactor, 0.0005, lambda: None)
        return transport.value()

    await command(b"L LOGIN %s %s" % (box.primary_address.encode(), password.encode()))
    await command(b"S SELECT INBOX")
    for name in args.commands.split(","):
        line = COMMANDS[name]
        await command(b"W " + line)
        cpus, walls = [], []
        for i in range(args.runs):
            if name == "coldselect":
                await command(b"U UNSELECT")
            profile = None
            if args.profile == name and i == args.runs - 1:
                profile = cProfile.Profile(time.process_time)
                profile.enable()
            cpu, wall = time.process_time(), time.monotonic()
            out = await command(b"T%d %s" % (i, line))
            cpus.append(time.process_time() - cpu)
            walls.append(time.monotonic() - wall)
            if profile is not None:
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        untagged = out.count(b"\r\n") - 1
        print(
            f"{name:11s} CPU {statistics.median(cpus):.3f} s  wall {statistics.median(walls):.3f} s"
            f"  ({untagged} untagged lines)",
            flush=True,
        )
    server.connectionLost(None)
    await store.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="haitatsu.pkl of a workdir kept by bench/imap.py --keep")
    parser.add_argument("--commands", default="coldselect,select,uidfetch,subject")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", default="", help="cProfile this command's last run")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
