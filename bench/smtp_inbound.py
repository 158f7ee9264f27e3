"""Inbound SMTP throughput (issue 4): haitatsu's MX against Postfix and a minimal Twisted server,
side by side in one run, then submission with AUTH on its own.

    .venv/bin/python bench/smtp_inbound.py [--messages 5000] [--sessions 20] [--size 10240]
        [--targets haitatsu,postgres-s3,postfix,minimal] [--submission-messages 1000]
        [--submission-threads 10] [--smtp-source-args "-d"]

MX: each target is started fresh in a temporary directory and Postfix's ``smtp-source`` (Debian
package ``postfix``) sends ``--messages`` messages of ``--size`` bytes over ``--sessions``
parallel sessions, all to one mailbox; extra ``smtp-source`` flags go in ``--smtp-source-args``.
Time runs from the first connection to the last 250 after DATA; afterwards the benchmark checks
that every message arrived.

- ``haitatsu``: ``twistd -n haitatsu`` from this checkout on the embedded default (SQLite + blob
  directory); 250 means blob fsynced and metadata committed.
- ``postgres-s3``: the same on PostgreSQL (a fresh database on ``HAITATSU_BENCH_POSTGRES_DSN``,
  default the local server) and S3 served by ``moto_server`` on loopback (a Python emulator
  that closes every connection after one request: it bounds this figure); skipped with a note
  when PostgreSQL cannot be reached.
- ``postfix``: a throwaway Postfix accepting into its queue (fsynced) and delivering to a maildir.
- ``minimal``: ``bench/minimal_smtp.py``, Twisted's ESMTP writing and fsyncing each message to a
  file: the ceiling of our own stack.

Submission: a fresh haitatsu with a plaintext submission listener (TLS off, loopback only), an
``smtp`` app password, and ``--submission-threads`` smtplib clients, each logging in once (AUTH
PLAIN) and sending its share of ``--submission-messages`` messages to the mailbox itself.

Method and latest figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import (  # noqa: E402
    Haitatsu,
    MinimalSMTP,
    Postfix,
    ensure_debian_packages,
    postgres_s3_config,
    process_cpu_seconds,
    remove,
)

DOMAIN = "bench.test"
BOX = f"box@{DOMAIN}"


def make_target(name: str, workdir: str):
    if name == "haitatsu":
        return Haitatsu(workdir, label="haitatsu sqlite+dir")
    if name == "postgres-s3":
        return Haitatsu(
            workdir, extra_config=postgres_s3_config(workdir), label="haitatsu postgres+s3"
        )
    if name == "postfix":
        return Postfix(workdir)
    if name == "minimal":
        return MinimalSMTP(workdir)
    raise SystemExit(f"unknown target {name!r}")


def smtp_source(port: int, messages: int, sessions: int, size: int, extra: list[str]) -> float:
    command = [
        "smtp-source",
        *extra,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "sender@source.test",
        "-t",
        BOX,
        f"127.0.0.1:{port}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.strip()}")
    return elapsed


def wait_arrived(target, messages: int, size: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if isinstance(target, Haitatsu):
            if target.stored_bytes() >= messages * size:
                return
        elif target.delivered() >= messages:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{target.name}: not every message arrived")


def run_mx(args) -> dict[str, float]:
    rates = {}
    extra = shlex.split(args.smtp_source_args)
    for name in args.targets.split(","):
        workdir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        try:
            target = make_target(name, workdir)
        except Exception as e:  # PostgreSQL not reachable: say so, go on with the others
            print(f"{name:>22}  skipped: {e}", flush=True)
            remove(workdir)
            continue
        cpu = ""
        try:
            target.start()
            pid = getattr(getattr(target, "proc", None), "pid", None)
            before = process_cpu_seconds(pid) if pid else None
            elapsed = smtp_source(target.port, args.messages, args.sessions, args.size, extra)
            if before is not None:
                used = process_cpu_seconds(pid) - before
                cpu = f"  {used * 1000 / args.messages:5.2f} ms CPU/msg"
            wait_arrived(target, args.messages, args.size)
        except BaseException:
            for log in ("twistd.log", "minimal.log"):
                path = os.path.join(workdir, log)
                if os.path.exists(path):
                    print(open(path, errors="replace").read()[-3000:], file=sys.stderr)
            raise
        finally:
            target.stop()
            remove(workdir)
        rates[name] = args.messages / elapsed
        print(
            f"{target.name:>22}  {args.size:>7} B  {args.messages:>5} msgs  {elapsed:7.2f} s  "
            f"{rates[name]:8.1f} msg/s{cpu}",
            flush=True,
        )
    for ours in ("haitatsu", "postgres-s3"):
        for peer, label in (("postfix", "Postfix"), ("minimal", "minimal")):
            if ours in rates and peer in rates:
                print(f"  {ours}/{label}: {rates[ours] / rates[peer]:5.2f}")
    return rates


def run_submission(args) -> float:
    workdir = tempfile.mkdtemp(prefix="bench-submission-")
    target = Haitatsu(workdir, label="haitatsu submission", submission=True)
    body = (b"x" * 78 + b"\r\n") * max(1, args.size // 80)
    message = f"From: {BOX}\r\nTo: {BOX}\r\nSubject: bench\r\n\r\n".encode() + body
    errors: list[BaseException] = []
    try:
        target.start()
        password = target.app_password()
        per_thread = [
            args.submission_messages // args.submission_threads
            + (1 if i < args.submission_messages % args.submission_threads else 0)
            for i in range(args.submission_threads)
        ]

        def client(count: int):
            try:
                with smtplib.SMTP("127.0.0.1", target.submission_port, timeout=60) as smtp:
                    smtp.login(BOX, password)
                    for _ in range(count):
                        smtp.sendmail(BOX, [BOX], message)
            except BaseException as e:  # reported after the run
                errors.append(e)

        threads = [threading.Thread(target=client, args=(n,)) for n in per_thread]
        before = process_cpu_seconds(target.proc.pid)
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(3600)
        elapsed = time.monotonic() - started
        used = process_cpu_seconds(target.proc.pid) - before
        if errors:
            raise RuntimeError(f"submission client failed: {errors[0]!r}")
    except BaseException:
        path = os.path.join(workdir, "twistd.log")
        if os.path.exists(path):
            print(open(path, errors="replace").read()[-3000:], file=sys.stderr)
        raise
    finally:
        target.stop()
        remove(workdir)
    rate = args.submission_messages / elapsed
    print(
        f"{target.name:>22}  {len(message):>7} B  {args.submission_messages:>5} msgs  "
        f"{elapsed:7.2f} s  {rate:8.1f} msg/s  {used * 1000 / args.submission_messages:5.2f} ms "
        f"CPU/msg  ({args.submission_threads} AUTH sessions)",
        flush=True,
    )
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--targets", default="haitatsu,postgres-s3,postfix,minimal")
    parser.add_argument("--smtp-source-args", default="", help="extra smtp-source flags")
    parser.add_argument("--submission-messages", type=int, default=1000)
    parser.add_argument("--submission-threads", type=int, default=10)
    args = parser.parse_args(argv)
    ensure_debian_packages("postfix")
    if args.targets:
        run_mx(args)
    if args.submission_messages:
        run_submission(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
