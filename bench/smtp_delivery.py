"""Delivery throughput of the SMTP path: haitatsu's storage engines against Postfix, side by side.

    .venv/bin/python bench/smtp_delivery.py [--messages 2000] [--sessions 20]
        [--sizes 10240,1048576] [--targets sqlite,postgres-s3,postfix]

For each message size, every target is started fresh in a temporary directory, then Postfix's
``smtp-source`` (Debian package ``postfix``) sends the same workload to it: ``--messages`` messages
of the size over ``--sessions`` parallel SMTP sessions, each to one mailbox. The time is from the
first connection to the last 250 reply; a 250 from haitatsu means the message is durable (blob
fsynced, metadata committed), from Postfix that it is in its queue (fsynced). Afterwards the
benchmark checks that every message arrived (Postfix's maildir, haitatsu's used bytes).

Targets:
- ``sqlite``: haitatsu on the embedded default (SQLite + blob directory);
- ``postgres-s3``: haitatsu on PostgreSQL (``HAITATSU_BENCH_POSTGRES_DSN``, default the local
  server) and S3 (a ``moto_server`` started on loopback: Python, so it bounds the S3 figures);
- ``postfix``: a throwaway Postfix instance delivering to a maildir (the peer: ratios are
  against it).

The method and the latest figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import Haitatsu, Postfix, ensure_debian_packages, remove  # noqa: E402


def make_target(name: str, workdir: str):
    if name == "postfix":
        return Postfix(workdir)
    if name == "sqlite":
        return Haitatsu(workdir, label="haitatsu sqlite+dir")
    if name == "postgres-s3":
        from peers import postgres_s3_config

        return Haitatsu(
            workdir, extra_config=postgres_s3_config(workdir), label="haitatsu postgres+s3"
        )
    raise SystemExit(f"unknown target {name!r}")


def run_workload(port: int, messages: int, sessions: int, size: int) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "sender@source.test",
            "-t",
            "box@bench.test",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.strip()}")
    return elapsed


def check_arrived(target, messages: int, size: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if isinstance(target, Postfix):
            if target.delivered() >= messages:
                return
        elif target.stored_bytes() >= messages * size:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{target.name}: not every message arrived")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--sizes", default="10240,1048576")
    parser.add_argument("--targets", default="sqlite,postgres-s3,postfix")
    args = parser.parse_args(argv)
    ensure_debian_packages("postfix")
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = args.targets.split(",")
    results = {}
    for size in sizes:
        # 1 MB messages: fewer of them, so every size takes a comparable time.
        count = args.messages if size < 100_000 else max(args.messages // 10, args.sessions)
        for name in targets:
            workdir = tempfile.mkdtemp(prefix=f"bench-{name}-")
            target = make_target(name, workdir)
            try:
                target.start()
                elapsed = run_workload(target.port, count, args.sessions, size)
                check_arrived(target, count, size)
            except BaseException:
                log = os.path.join(workdir, "twistd.log")
                if os.path.exists(log):
                    print(open(log).read()[-3000:], file=sys.stderr)
                raise
            finally:
                target.stop()
                remove(workdir)
            results[(size, name)] = (count, elapsed)
            print(
                f"{target.name:>22}  {size:>8} B  {count:>5} msgs  {elapsed:7.2f} s  "
                f"{count / elapsed:8.1f} msg/s  {count * size / elapsed / 1e6:7.2f} MB/s",
                flush=True,
            )
    if "postfix" in targets:
        print("\nratio against Postfix (messages/s; above 1 is faster than Postfix):")
        for size in sizes:
            count, peer = results[(size, "postfix")]
            for name in targets:
                if name == "postfix":
                    continue
                count, elapsed = results[(size, name)]
                print(f"  {name:>12} at {size:>8} B: {peer / elapsed:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
