"""Where an IMAP session in IDLE keeps its memory: a tracemalloc diff around opening them.

    .venv/bin/python bench/imap_idle_memory.py [--messages 20000] [--sessions 500] [--top 25]

The server runs in this process on a temporary SQLite store (the real ``IMAPFactory``, real TCP
on loopback); passwords are checked with twisted.cred's in-memory checker, so the figure is
the sessions' and not argon2id's (``bench/imap.py`` measures the whole server with app
passwords). The INBOX gets ``--messages`` rows: a few delivered messages copied within the
folder until there are enough (rows are what a selected folder costs; their bytes are not).
A child process opens ``--sessions`` connections that LOGIN, SELECT INBOX and IDLE.

Printed: Python heap (tracemalloc) before and with the sessions, per session, the allocation
sites that grew most, the size of one session's own objects (``sys.getsizeof`` over its
attributes), and the process's RSS/PSS.
"""

from __future__ import annotations

import argparse
import gc
import os
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse  # noqa: E402
from twisted.cred.portal import Portal  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from haitatsu.auth.throttle import ThrottledPortal  # noqa: E402
from haitatsu.config.model import Config, IMAPConfig  # noqa: E402
from haitatsu.imap import IMAPFactory  # noqa: E402
from haitatsu.imap.account import IMAPRealm  # noqa: E402
from haitatsu.storage import open_sqlite_store  # noqa: E402
from haitatsu.storage.records import Delivery  # noqa: E402

PASSWORD = "in-memory secret"
MESSAGE = (
    b"From: a@example.test\r\nTo: box@example.test\r\nSubject: idle memory\r\n"
    b"Message-ID: <m@example.test>\r\n\r\nbody\r\n"
)

CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    port, user, password, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def session(sem, ready):
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            for tag, line in ((b"a", b'LOGIN "%s" "%s"' % (user.encode(), password.encode())),
                              (b"b", b"SELECT INBOX")):
                writer.write(tag + b" " + line + b"\\r\\n")
                while not (await reader.readline()).startswith(tag + b" "):
                    pass
            writer.write(b"c IDLE\\r\\n")
            while not (await reader.readline()).startswith(b"+"):
                pass
            ready.append(writer)

    async def main():
        sem, ready = asyncio.Semaphore(50), []
        await asyncio.gather(*[session(sem, ready) for _ in range(count)])
        print("ready", len(ready), flush=True)
        sys.stdin.readline()
        for writer in ready:
            writer.close()

    asyncio.run(main())
    """
)


def memory_kib() -> tuple[int, int]:
    rss = pss = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def own_size(obj, seen=None, top=True) -> int:
    """``sys.getsizeof`` of ``obj``, its ``__dict__`` and the plain containers and values in
    it (two levels); other objects it refers to are not counted (they may be shared: the
    reactor, the store, the factory); ``seen`` objects are not counted."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type) or callable(obj):
        return 0
    if not top and hasattr(obj, "__dict__"):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(own_size(x, seen, False) for x in obj)
    elif isinstance(obj, dict):
        size += sum(own_size(v, seen, False) for v in obj.values())
    elif top and hasattr(obj, "__dict__"):
        size += own_size(vars(obj), seen, False)
    return size


async def run(args):
    root = tempfile.mkdtemp(prefix="imap-idle-memory-")
    try:
        store = await open_sqlite_store(
            reactor, os.path.join(root, "haitatsu.db"), os.path.join(root, "blobs")
        )
        mailbox = await store.create_mailbox("box@example.test")
        path = os.path.join(root, "m.eml")
        with open(path, "wb") as f:
            f.write(MESSAGE)
        for _ in range(min(args.messages, 10)):
            await store.deliver(path, [Delivery(mailbox.id, folder="INBOX")], trace_id="T")
        inbox = await store.get_folder(mailbox.id, "INBOX")
        count = min(args.messages, 10)
        while count < args.messages:
            rows = await store.folder_summaries(inbox.id)
            uids = [r.uid for r in rows][: args.messages - count]
            await store.copy_messages(inbox.id, uids, inbox.id)
            count += len(uids)
        config = Config(imap=IMAPConfig(idle_timeout_seconds=1800))
        factory = IMAPFactory(lambda: config, store, reactor, spool_dir=root)
        factory.sessions = None
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{mailbox.id: PASSWORD.encode()})
        factory.portal = ThrottledPortal(Portal(IMAPRealm(store), [checker]), factory.throttle)
        sessions = []
        build = factory.buildProtocol

        def remember(addr):
            p = build(addr)
            sessions.append(p)
            return p

        factory.buildProtocol = remember
        port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
        number = port.getHost().port

        async def clients(n):
            proc = subprocess.Popen(
                [sys.executable, "-c", CLIENT, str(number), mailbox.id, PASSWORD, str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            while True:
                await task.deferLater(reactor, 0.2, lambda: None)
                if proc.poll() is not None:
                    raise RuntimeError("the client process ended")
                if select.select([proc.stdout], [], [], 0)[0]:
                    line = proc.stdout.readline()
                    break
            print("  client:", line.decode().strip(), flush=True)
            return proc

        # One session first (the folder's shared rows then exist before and after), unless
        # --cold: then the sessions' SELECTs read the rows, 50 at a time as in bench/imap.py.
        first = None if args.cold else await clients(1)
        await task.deferLater(reactor, 1, lambda: None)
        gc.collect()
        rss0, pss0 = memory_kib()
        trace = not args.no_tracemalloc
        if trace:
            tracemalloc.start(args.frames)
            before = tracemalloc.take_snapshot()
            heap0 = tracemalloc.get_traced_memory()[0]
        proc = await clients(args.sessions)
        await task.deferLater(reactor, 2, lambda: None)
        gc.collect()
        if trace:
            after = tracemalloc.take_snapshot()
            heap1 = tracemalloc.get_traced_memory()[0]
        rss1, pss1 = memory_kib()
        live = [s for s in sessions if s.transport is not None and s.transport.connected]
        live = live if args.cold else live[1:]
        n = max(1, len(live))
        print(f"{args.messages} messages in INBOX, {len(live)} sessions in IDLE")
        print(
            f"process: RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MB, "
            f"PSS {pss0 / 1024:.0f} -> {pss1 / 1024:.0f} MB "
            f"({(pss1 - pss0) * 1024 / n:.0f} bytes a session"
            f"{', tracemalloc on' if trace else ''})"
        )
        if trace:
            print(
                f"Python heap (tracemalloc): +{(heap1 - heap0) / 1024:.0f} KiB, "
                f"{(heap1 - heap0) / n:.0f} bytes a session"
            )
            print(f"top {args.top} allocation sites by growth:")
            key = "traceback" if args.frames > 1 else "lineno"
            for stat in after.compare_to(before, key)[: args.top]:
                where = " <- ".join(
                    f"{os.path.relpath(fr.filename, os.getcwd())}:{fr.lineno}"
                    for fr in stat.traceback[:3]
                )
                print(f"  {stat.size_diff / n:8.0f} B/session  {where}")
        if live:
            s = live[-1]
            print("one session's own objects (sys.getsizeof, shallow):")
            parts = {
                "IMAPServer": s,
                "transport": s.transport,
                "account": getattr(s, "account", None),
                "view": s.view,
                "view rows": s.view.view_rows if s.view is not None else None,
            }
            for label, obj in parts.items():
                if obj is not None:
                    print(f"  {label}: {own_size(obj)} bytes")
        if not args.cold:
            shared = {id(s.view.view_rows._shared) for s in live if s.view is not None}
            print(f"distinct reads of the folder's rows held by the sessions: {len(shared)}")
        for p in (proc, first):
            if p is not None:
                p.stdin.close()
                p.wait()
        port.stopListening()
        await store.close()
    finally:
        shutil.rmtree(root, True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="no session before the measure")
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
