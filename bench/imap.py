"""IMAP on a large mailbox (issue 5): haitatsu against Dovecot, side by side in one run.

    .venv/bin/python bench/imap.py [--messages 100000] [--runs 3] [--targets haitatsu,dovecot]
        [--append-messages 2000] [--append-connections 4] [--idle-connections 2000]
        [--skip append,idle] [--keep DIR]

Run as root (Dovecot's throwaway instance is started by root and drops to ``nobody``).

Load: a generated corpus (``bench/mailcorpus.py``: realistic sizes and MIME shapes, the same
bytes from the same seed) goes into both servers' INBOX, in the same order with the same flags
and internal dates. haitatsu gets it through its store's real delivery path
(``store.deliver_batch``, the MULTIAPPEND path: parse, blobs, one metadata transaction per batch)
in a loader process on the same configuration as the running server; Dovecot gets a maildir
written directly (what its LDA would write) and indexes it on first access.

Timed: each command to its tagged OK, the whole response read by a raw-socket client (literals
included): SELECT INBOX, ``UID FETCH 1:* (FLAGS)``, ``FETCH 1:* (FLAGS ENVELOPE)``,
``UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (...)])`` (Thunderbird's
message list), ``UID SEARCH SUBJECT <word>``, ``UID SEARCH BODY <word>``. The first SELECT
after the load is reported on its own (Dovecot builds its index there: cold); then every
command runs once as a warm-up and ``--runs`` times timed, the targets taking turns, and the
median is reported.
APPEND: ``--append-messages`` further corpus messages over ``--append-connections`` sessions
(LITERAL+), messages per second. IDLE: each server is restarted, then ``--idle-connections``
clients LOGIN, SELECT INBOX and IDLE; server memory is read before and with them open
(haitatsu: the twistd process; Dovecot: every process of the instance, RSS and PSS summed).

Targets: ``haitatsu`` (``twistd -n haitatsu`` from this checkout on the embedded default),
``haitatsu-pg`` (the same on PostgreSQL + S3 via moto: see ``peers.postgres_s3_config``),
``dovecot`` (the peer; ratios are against it). Method and latest figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mailcorpus import BODY_WORD, SUBJECT_WORD, Corpus  # noqa: E402
from peers import (  # noqa: E402
    Dovecot,
    Haitatsu,
    cpu_seconds,
    ensure_debian_packages,
    memory_kib,
    remove,
)

USER = "box@bench.test"
LOAD_BATCH = 100
#: Batches the loader stores at once: blob writes and fsyncs overlap, commits take turns.
LOAD_WORKERS = 4

#: What Thunderbird fetches for a folder's message list (its default header set).
THUNDERBIRD_ITEMS = (
    b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID "
    b"Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])"
)
COMMANDS = (
    ("SELECT INBOX", b"SELECT INBOX"),
    ("UID FETCH 1:* (FLAGS)", b"UID FETCH 1:* (FLAGS)"),
    ("FETCH 1:* (FLAGS ENVELOPE)", b"FETCH 1:* (FLAGS ENVELOPE)"),
    ("UID FETCH 1:* Thunderbird headers", b"UID FETCH 1:* " + THUNDERBIRD_ITEMS),
    ("UID SEARCH SUBJECT", b"UID SEARCH SUBJECT " + SUBJECT_WORD.encode()),
    ("UID SEARCH BODY", b"UID SEARCH BODY " + BODY_WORD.encode()),
)
#: Which commands the 1.5x time target applies to (issue 5).
TIME_TARGET = 1.5

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class IMAPError(Exception):
    pass


class RawIMAP:
    """A blocking IMAP client on a raw socket that times a command to its tagged answer."""

    def __init__(self, port: int, timeout: float = 1800):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb", buffering=1 << 20)
        self.counter = 0
        greeting = self.file.readline()
        if not greeting.startswith(b"* OK"):
            raise IMAPError(f"greeting: {greeting!r}")

    def command(self, line: bytes, literal: bytes | None = None, keep=b""):
        """Send ``line`` (and a LITERAL+ literal); return ``(seconds, untagged responses,
        bytes received, kept)`` where kept are the untagged lines starting with ``keep``."""
        self.counter += 1
        tag = b"b%d" % self.counter
        out = tag + b" " + line
        if literal is not None:
            out += b" {%d+}\r\n" % len(literal) + literal
        started = time.perf_counter()
        self.sock.sendall(out + b"\r\n")
        untagged, received, kept = 0, 0, []
        readline, read = self.file.readline, self.file.read
        while True:
            text = readline()
            if not text:
                raise IMAPError("connection closed")
            received += len(text)
            first = text
            while text.endswith(b"}\r\n"):
                m = _LITERAL.search(text)
                if not m:
                    break
                size = int(m.group(1))
                received += size
                read(size)
                text = readline()
                received += len(text)
            if first.startswith(b"* "):
                untagged += 1
                if keep and first.startswith(keep):
                    kept.append(first)
            elif first.startswith(tag + b" "):
                elapsed = time.perf_counter() - started
                if not first.startswith(tag + b" OK"):
                    raise IMAPError(f"{line[:60]!r}: {first!r}")
                return elapsed, untagged, received, kept

    def login(self, user: str, password: str):
        return self.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))

    def close(self):
        try:
            self.command(b"LOGOUT")
        except (OSError, IMAPError):
            pass
        self.sock.close()


# -- targets -----------------------------------------------------------------------------------


class HaitatsuTarget:
    def __init__(self, workdir: str, label: str, extra_config: str = ""):
        self.peer = Haitatsu(workdir, label=label, imap=True, extra_config=extra_config)
        self.name = label
        self.password = None

    @property
    def port(self):
        return self.peer.imap_port

    def start(self):
        self.peer.start()
        self.password = self.peer.app_password(scopes=("imap",), dkim=False)

    def load(self, messages: int, seed: int) -> subprocess.Popen:
        """The loader process (``--load-haitatsu``); the caller waits for it."""
        return subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--load-haitatsu",
                self.peer.config_path,
                "--mailbox-id",
                self.peer.mailbox_id,
                "--messages",
                str(messages),
                "--seed",
                str(seed),
            ],
            cwd=self.peer.workdir,
            env=self.peer.env(),
        )

    def restart(self):
        self.peer.restart()

    def memory(self) -> tuple[int, int, int]:
        rss, pss = memory_kib([self.peer.proc.pid])
        return rss, pss, 1

    def cpu(self) -> float:
        return cpu_seconds([self.peer.proc.pid])

    def stop(self):
        self.peer.stop()


class DovecotTarget:
    def __init__(self, workdir: str):
        self.peer = Dovecot(workdir)
        self.name = "dovecot"
        self.password = Dovecot.password

    @property
    def port(self):
        return self.peer.port

    def start(self):
        self.peer.configure()
        self.peer.start()

    def load(self, messages: int, seed: int) -> None:
        write_maildir(self.peer.maildir, Corpus(seed), messages)

    def restart(self):
        self.peer.stop()
        self.peer.start()

    def memory(self) -> tuple[int, int, int]:
        pids = self.peer.pids()
        rss, pss = memory_kib(pids)
        return rss, pss, len(pids)

    def cpu(self) -> float:
        return cpu_seconds(self.peer.pids())

    def stop(self):
        self.peer.stop()


def write_maildir(maildir: str, corpus: Corpus, messages: int) -> None:
    """The corpus as a maildir in ``cur/`` (flags in the names, internal date as mtime), owned
    by ``nobody`` like the mail Dovecot's processes write."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    for sub in ("cur", "new", "tmp"):
        path = os.path.join(maildir, sub)
        os.makedirs(path, exist_ok=True)
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    letters = {"\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
    cur = os.path.join(maildir, "cur")
    for i in range(messages):
        data, flags, date = corpus.message(i)
        info = "".join(sorted(letters[f] for f in flags))
        path = os.path.join(cur, f"{date}.M{i:06d}P1.bench,S={len(data)}:2,{info}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, nobody.pw_uid, nobody.pw_gid)
        finally:
            os.close(fd)
        os.utime(path, (date, date))


def make_target(name: str, root: str):
    workdir = tempfile.mkdtemp(prefix=f"bench-imap-{name}-", dir=root)
    if name == "haitatsu":
        return HaitatsuTarget(workdir, "haitatsu")
    if name == "haitatsu-pg":
        from peers import postgres_s3_config

        return HaitatsuTarget(workdir, "haitatsu-pg", extra_config=postgres_s3_config(workdir))
    if name == "dovecot":
        return DovecotTarget(workdir)
    raise SystemExit(f"unknown target {name!r}")


# -- the loader (a separate process on the server's configuration) ----------------------------


def load_haitatsu(config_path: str, mailbox_id: str, messages: int, seed: int) -> int:
    from twisted.internet import defer, task

    from haitatsu.config.loader import load_config
    from haitatsu.storage import build_store
    from haitatsu.storage.records import Delivery

    async def load(reactor):
        config = load_config(config_path)
        store = build_store(config, reactor)
        await store.open()
        spool = tempfile.mkdtemp(prefix="load-", dir=os.path.dirname(config_path))
        corpus = Corpus(seed)
        started = time.monotonic()
        batches = iter(range(0, messages, LOAD_BATCH))
        done = [0]

        async def worker():
            for start in batches:
                items = []
                for i in range(start, min(messages, start + LOAD_BATCH)):
                    data, flags, date = corpus.message(i)
                    path = os.path.join(spool, f"{i}.eml")
                    with open(path, "wb") as f:
                        f.write(data)
                    delivery = Delivery(mailbox_id=mailbox_id, folder="INBOX", flags=flags)
                    items.append((path, delivery, date * 1_000_000_000))
                await store.deliver_batch(items, trace_id=f"bench-load-{start}")
                for path, _, _ in items:
                    os.unlink(path)
                before, done[0] = done[0], done[0] + len(items)
                if done[0] // 10000 != before // 10000:
                    rate = done[0] / (time.monotonic() - started)
                    print(f"  haitatsu loader: {done[0]} messages, {rate:.0f}/s", flush=True)

        try:
            workers = [defer.ensureDeferred(worker()) for _ in range(LOAD_WORKERS)]
            await defer.gatherResults(workers, consumeErrors=True)
        finally:
            remove(spool)
            await store.close()

    task.react(lambda reactor: defer.ensureDeferred(load(reactor)))
    return 0


# -- phases ------------------------------------------------------------------------------------


def run_load(targets, args) -> dict:
    """Load every target at once (the loaders are separate processes or the maildir writer),
    then each target's first SELECT."""
    timings = {}
    started = time.monotonic()
    loaders = [
        (t, t.load(args.messages, args.seed)) for t in targets if isinstance(t, HaitatsuTarget)
    ]
    for t in targets:
        if isinstance(t, DovecotTarget):
            t.load(args.messages, args.seed)
            timings[t.name] = time.monotonic() - started
            print(f"  {t.name}: maildir written in {timings[t.name]:.1f} s", flush=True)
    for t, proc in loaders:
        if proc.wait() != 0:
            raise RuntimeError(f"{t.name}: the loader failed")
        timings[t.name] = time.monotonic() - started
        print(f"  {t.name}: loaded in {timings[t.name]:.1f} s", flush=True)
    return timings


def run_commands(targets, args) -> dict:
    results = {t.name: {} for t in targets}
    clients = {}
    for t in targets:
        client = RawIMAP(t.port)
        client.login(USER, t.password)
        elapsed, untagged, _, _ = client.command(b"SELECT INBOX", keep=b"* ")
        results[t.name]["first SELECT after load"] = elapsed
        print(f"  {t.name}: first SELECT after load {elapsed:.3f} s", flush=True)
        clients[t.name] = client
    checks = {}
    for label, line in COMMANDS:
        keep = b"* SEARCH" if b"SEARCH" in line else b""
        for t in targets:  # warm-up
            clients[t.name].command(line, keep=keep)
        times = {t.name: [] for t in targets}
        cpus = {t.name: [] for t in targets}
        for _ in range(args.runs):
            for t in targets:
                cpu = t.cpu()
                elapsed, untagged, received, kept = clients[t.name].command(line, keep=keep)
                cpus[t.name].append(t.cpu() - cpu)
                times[t.name].append(elapsed)
                checks.setdefault(label, {})[t.name] = (
                    len(kept[0].split()) - 2 if kept else untagged,
                    received,
                )
        for t in targets:
            results[t.name][label] = statistics.median(times[t.name])
            results[t.name][label + " (server CPU)"] = statistics.median(cpus[t.name])
        shown = "  ".join(
            f"{t.name} {results[t.name][label]:.3f} s, CPU "
            f"{results[t.name][label + ' (server CPU)']:.2f} s ({checks[label][t.name][0]} "
            f"{'found' if keep else 'responses'}, {checks[label][t.name][1] / 1e6:.1f} MB)"
            for t in targets
        )
        print(f"  {label}: {shown}", flush=True)
    for client in clients.values():
        client.close()
    return results


def run_append(targets, args) -> dict:
    corpus = Corpus(args.seed + 1)
    messages = [corpus.message(i) for i in range(args.append_messages)]
    results = {}
    for t in targets:
        errors = []
        shares = [messages[i :: args.append_connections] for i in range(args.append_connections)]
        clients = []
        for _ in shares:
            client = RawIMAP(t.port)
            client.login(USER, t.password)
            clients.append(client)

        def work(client, share, errors=errors):
            try:
                for data, flags, _ in share:
                    client.command(b"APPEND INBOX (%s)" % " ".join(flags).encode(), literal=data)
            except BaseException as e:
                errors.append(e)

        threads = [
            threading.Thread(target=work, args=(c, s)) for c, s in zip(clients, shares, strict=True)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        for client in clients:
            client.close()
        if errors:
            raise RuntimeError(f"{t.name}: APPEND failed: {errors[0]!r}")
        rate = len(messages) / elapsed
        results[t.name] = {"APPEND msg/s": rate}
        print(
            f"  {t.name}: {len(messages)} APPENDs over {args.append_connections} sessions in "
            f"{elapsed:.2f} s, {rate:.1f} msg/s",
            flush=True,
        )
    return results


async def _idle_session(port, password, sem, sessions, stop):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        await reader.readline()

        async def command(tag: bytes, line: bytes):
            writer.write(tag + b" " + line + b"\r\n")
            while True:
                text = await reader.readline()
                if not text:
                    raise IMAPError("connection closed")
                if text.startswith(tag + b" "):
                    if not text.startswith(tag + b" OK"):
                        raise IMAPError(text)
                    return
                m = _LITERAL.search(text)
                if m:
                    await reader.readexactly(int(m.group(1)))

        await command(b"a", b'LOGIN "%s" "%s"' % (USER.encode(), password.encode()))
        await command(b"b", b"SELECT INBOX")
        writer.write(b"c IDLE\r\n")
        while not (await reader.readline()).startswith(b"+"):
            pass
        sessions.append((reader, writer))
    await stop.wait()


async def _idle(target, count, concurrency, cap_kib):
    sem = asyncio.Semaphore(concurrency)
    sessions, stop = [], asyncio.Event()
    tasks = [
        asyncio.ensure_future(_idle_session(target.port, target.password, sem, sessions, stop))
        for _ in range(count)
    ]
    started = time.monotonic()
    capped = False
    while len(sessions) < count:
        await asyncio.sleep(0.5)
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            stop.set()
            raise RuntimeError(f"{target.name}: IDLE session failed: {failed[0].exception()!r}")
        if target.memory()[1] > cap_kib:
            capped = True
            break
    opened = time.monotonic() - started
    await asyncio.sleep(5)
    rss, pss, processes = target.memory()
    stop.set()
    for _, writer in sessions:
        writer.write(b"DONE\r\nd LOGOUT\r\n")
        writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(sessions), opened, rss, pss, processes, capped


def run_idle(targets, args) -> dict:
    results = {}
    for t in targets:
        t.restart()
        time.sleep(2)
        client = RawIMAP(t.port)
        client.login(USER, t.password)
        client.command(b"SELECT INBOX")
        client.close()
        time.sleep(1)
        base_rss, base_pss, base_processes = t.memory()
        opened_count, opened, rss, pss, processes, capped = asyncio.run(
            _idle(t, args.idle_connections, 50, args.idle_memory_cap_mb * 1024)
        )
        results[t.name] = {
            "memory before (MB, PSS)": base_pss / 1024,
            "IDLE sessions": opened_count,
            "memory with IDLE (MB, PSS)": pss / 1024,
            "memory with IDLE (MB, RSS)": rss / 1024,
        }
        note = " (stopped at the memory cap)" if capped else ""
        print(
            f"  {t.name}: {opened_count} IDLE sessions open in {opened:.1f} s{note}; memory "
            f"before {base_pss / 1024:.0f} MB PSS ({base_processes} processes), with them "
            f"{pss / 1024:.0f} MB PSS, {rss / 1024:.0f} MB RSS ({processes} processes)",
            flush=True,
        )
    return results


def report(results: dict, names: list[str]) -> None:
    labels = []
    for name in names:
        for label in results.get(name, {}):
            if label not in labels:
                labels.append(label)
    peer = "dovecot" if "dovecot" in names else None
    ours = [n for n in names if n != "dovecot"]
    header = f"{'':42}" + "".join(f"{n:>14}" for n in names)
    if peer:
        header += "".join(f"{n + '/dovecot':>22}" for n in ours)
    print(header)
    for label in labels:
        row = f"{label:42}"
        for name in names:
            value = results.get(name, {}).get(label)
            row += f"{value:>14.3f}" if isinstance(value, float) else f"{value!s:>14}"
        if peer:
            for name in ours:
                a, b = results.get(name, {}).get(label), results.get(peer, {}).get(label)
                ratio = f"{a / b:.2f}" if isinstance(a, float) and b else "-"
                row += f"{ratio:>22}"
        print(row)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", default="haitatsu,dovecot")
    parser.add_argument("--append-messages", type=int, default=2000)
    parser.add_argument("--append-connections", type=int, default=4)
    parser.add_argument("--idle-connections", type=int, default=2000)
    parser.add_argument(
        "--idle-memory-cap-mb",
        type=int,
        default=4096,
        help="stop opening IDLE sessions when a server's memory passes this",
    )
    parser.add_argument("--skip", default="", help="phases to leave out: commands,append,idle")
    parser.add_argument("--keep", help="work under this directory and leave it in place")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--load-haitatsu", help=argparse.SUPPRESS)
    parser.add_argument("--mailbox-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_haitatsu:
        return load_haitatsu(args.load_haitatsu, args.mailbox_id, args.messages, args.seed)

    names = args.targets.split(",")
    skip = set(args.skip.split(",")) - {""}
    if "dovecot" in names:
        ensure_debian_packages("dovecot-imapd")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = args.keep or tempfile.mkdtemp(prefix="bench-imap-")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    targets = []
    results: dict = {}
    try:
        for name in names:
            target = make_target(name, root)
            target.start()
            targets.append(target)
        print(f"loading {args.messages} messages into {', '.join(names)}", flush=True)
        for name, seconds in run_load(targets, args).items():
            results.setdefault(name, {})["load (s)"] = seconds
        if "commands" not in skip:
            print("commands (median of %d after a warm-up):" % args.runs, flush=True)
            for name, values in run_commands(targets, args).items():
                results.setdefault(name, {}).update(values)
        if "append" not in skip and args.append_messages:
            print("APPEND:", flush=True)
            for name, values in run_append(targets, args).items():
                results[name].update(values)
        if "idle" not in skip and args.idle_connections:
            print(f"IDLE with {args.idle_connections} sessions:", flush=True)
            for name, values in run_idle(targets, args).items():
                results[name].update(values)
    except BaseException:
        for target in targets:
            for log in ("twistd.log", "dovecot.log"):
                path = os.path.join(target.peer.workdir, log)
                if os.path.exists(path):
                    print(f"--- {path}", file=sys.stderr)
                    print(open(path, errors="replace").read()[-3000:], file=sys.stderr)
        raise
    finally:
        for target in targets:
            target.stop()
        if not args.keep:
            remove(root)
    print()
    print(f"{args.messages} messages; times in seconds (median of {args.runs}), lower is better")
    report(results, names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"messages": args.messages, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
