"""A generated mailbox for the benchmarks: realistic messages, loaded fast through the store.

    .venv/bin/python bench/corpus.py --config DIR/haitatsu.pkl --address box@bench.test \\
        [--messages 100000] [--batch 250] [--concurrency 4] [--seed 1] [--out DIR/corpus.json]

Loading 100,000 messages over SMTP takes most of an hour; this writes them through the store's
own delivery path instead (``MailStore.deliver_batch``: parse, split into blobs, lease, put,
one metadata transaction per batch, FTS index by trigger), in-process, on the store the config
names (SQLite + blob directory, or PostgreSQL + S3), before the server starts. It creates the
mailbox when the address has none, delivers ``--messages`` generated messages to its INBOX in
batches of ``--batch``, ``--concurrency`` batches at a time, and writes a JSON summary to
``--out``: the mailbox id, the count, and the ids of every placed message (``ids``, newest
first, as the REST list orders them) with their ``created_at``.

The messages (``generate``) look like a real inbox: trace and DKIM headers, display names,
encoded-word subjects now and then, text only, text + HTML, and some with an attachment (a few
large enough for a blob of their own), dated over the last year. The same seed gives the same
messages.

``generate`` and ``load`` are importable by other benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import email.header
import email.utils
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORDS = (
    "the quarterly report meeting invoice update project review budget schedule draft "
    "proposal team customer release notes deadline agenda feedback summary contract order "
    "shipping account security alert password reset welcome newsletter offer weekly digest "
    "travel booking confirmation receipt payment reminder question answer build failure fixed "
    "deploy server database migration performance latency storage backup restore holiday "
    "lunch friday monday plan roadmap design document ticket issue comment approved pending "
    "and for with from about your our this that will have please thanks regards today "
    "tomorrow next last new important follow up re fwd"
).split()
_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy".split()
_LAST = "Smith Tanaka Müller García Rossi Novak Dubois Kowalski Johansson Sato Silva".split()
_DOMAINS = (
    "example.com example.org example.net mail.example.io lists.example.dev shop.example.co "
    "news.example.info corp.example.test"
).split()
_SUBJECT_EXTRAS = ("Grüße aus Köln", "会議の議事録", "Résumé", "Café ☕ Friday", "naïve façade")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    address = f"{first.lower()}.{rng.randrange(1000)}@{rng.choice(_DOMAINS)}"
    return f"{first} {last}", address


def _address_header(name: str, address: str) -> str:
    return email.utils.formataddr((name, address), charset="utf-8")


def _sentence_pool(size: int = 4096) -> list[str]:
    rng = random.Random(0)
    pool = []
    for _ in range(size):
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))
        pool.append(line[0].upper() + line[1:] + ".")
    return pool


_SENTENCES = _sentence_pool()


def _paragraphs(rng: random.Random, size: int) -> str:
    """Plain text of about ``size`` characters in lines and paragraphs (sentences drawn from
    a fixed pool: generating 100,000 messages must not cost more than storing them)."""
    lines, total = [], 0
    while total < size:
        line = _SENTENCES[rng.getrandbits(12)]
        if total and rng.getrandbits(3) == 0:
            line = ""
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines)


def _folded_b64(data: bytes, width: int = 76) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return "\r\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))


def generate(index: int, rng: random.Random, to_address: str, now: float | None = None) -> bytes:
    """Message number ``index`` for ``to_address``: CRLF bytes, about 2 to 200 KB, most
    between 3 and 15 KB."""
    now = time.time() if now is None else now
    sender_name, sender = _person(rng)
    sent = now - rng.uniform(0, 365 * 86400)
    domain = sender.split("@", 1)[1]
    subject = _words(rng, rng.randint(3, 9)).capitalize()
    if rng.random() < 0.08:
        subject += " " + rng.choice(_SUBJECT_EXTRAS)
    if rng.random() < 0.25:
        subject = "Re: " + subject
    headers = [
        f"Return-Path: <{sender}>",
        f"Received: from mx.{domain} (mx.{domain} [192.0.2.{rng.randrange(1, 255)}])\r\n"
        f"\tby haitatsu.bench.local with ESMTPS id {rng.getrandbits(48):012x}\r\n"
        f"\tfor <{to_address}>; {email.utils.formatdate(sent + 2)}",
        f"Received: from [10.0.{rng.randrange(256)}.{rng.randrange(256)}] by mx.{domain}\r\n"
        f"\twith ESMTPSA; {email.utils.formatdate(sent)}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail;\r\n"
        f"\th=from:to:subject:date:message-id; bh={_folded_b64(rng.randbytes(32))};\r\n"
        "\tb=" + _folded_b64(rng.randbytes(256)).replace("\r\n", "\r\n\t "),
        f"From: {_address_header(sender_name, sender)}",
        f"To: {to_address}",
    ]
    if rng.random() < 0.3:
        cc = [_address_header(*_person(rng)) for _ in range(rng.randint(1, 4))]
        headers.append("Cc: " + ",\r\n ".join(cc))
    if not subject.isascii():
        subject = email.header.Header(subject, "utf-8").encode()
    headers += [
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(sent, localtime=False)}",
        f"Message-ID: <{index}.{rng.getrandbits(64):016x}@{domain}>",
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.2:
        headers.append(f"List-Unsubscribe: <https://{domain}/unsubscribe/{rng.getrandbits(40):x}>")
    text = _paragraphs(rng, int(rng.lognormvariate(8.0, 0.7)))  # median about 3 KB
    kind = rng.random()
    if kind < 0.55:
        headers.append("Content-Type: text/plain; charset=utf-8")
        headers.append("Content-Transfer-Encoding: 8bit")
        body = text
    else:
        boundary = f"b{rng.getrandbits(64):016x}"
        html = (
            "<html><body>"
            + "".join(f"<p>{p}</p>" for p in text.split("\r\n") if p)
            + "</body></html>"
        )
        alternative = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n--{boundary}--"
        )
        if kind < 0.88:
            headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
            body = alternative
        else:
            outer = f"o{rng.getrandbits(64):016x}"
            size = int(rng.lognormvariate(10.0, 1.0))  # median about 22 KB, a few past 64 KiB
            size = min(size, 400_000)
            name = f"{_words(rng, 2).replace(' ', '-')}.pdf"
            headers.append(f'Content-Type: multipart/mixed; boundary="{outer}"')
            body = (
                f'--{outer}\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n'
                f"\r\n{alternative}\r\n"
                f'--{outer}\r\nContent-Type: application/pdf; name="{name}"\r\n'
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
                f"{_folded_b64(rng.randbytes(size))}\r\n--{outer}--"
            )
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode("utf-8")


async def load(
    store,
    mailbox_id: str,
    address: str,
    count: int,
    batch: int = 250,
    concurrency: int = 4,
    seed: int = 1,
    spool_dir: str | None = None,
    progress=None,
) -> list:
    """Deliver ``count`` generated messages to the INBOX of ``mailbox_id`` with
    ``store.deliver_batch``; return the placed ``MailboxMessage`` rows in delivery order.

    ``concurrency`` batches are in flight at once (parsing and blob writes overlap; the metadata
    transactions take turns). ``progress(done)`` is called after each batch.
    """
    from twisted.internet import defer

    from haitatsu.storage.records import Delivery

    own_spool = spool_dir is None
    spool = tempfile.mkdtemp(prefix="corpus-spool-") if own_spool else spool_dir
    rng = random.Random(seed)
    now = time.time()
    delivery = Delivery(
        mailbox_id=mailbox_id, folder="INBOX", original_rcpt=address, base_rcpt=address
    )
    placed_by_batch: dict[int, list] = {}
    starts = list(range(0, count, batch))
    done = 0

    def write_batch(start: int) -> list:
        items = []
        for index in range(start, min(start + batch, count)):
            path = os.path.join(spool, f"{index}.eml")
            data = generate(index, rng, address, now)
            with open(path, "wb") as f:
                f.write(data)
            internal = int((now - (count - index)) * 1e9)
            items.append((path, delivery, internal))
        return items

    async def worker(queue: list) -> None:
        nonlocal done
        while queue:
            start = queue.pop(0)
            items = write_batch(start)  # the generator's state is only touched here, in order
            try:
                placed_by_batch[start] = await store.deliver_batch(items, f"corpus-{start}")
            finally:
                for path, _, _ in items:
                    os.unlink(path)
            done += len(items)
            if progress is not None:
                progress(done)

    try:
        queue = list(starts)
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(worker(queue)) for _ in range(max(1, concurrency))],
            consumeErrors=True,
        )
    except defer.FirstError as e:
        e.subFailure.raiseException()
    finally:
        if own_spool:
            shutil.rmtree(spool, ignore_errors=True)
    return [mm for start in starts for mm in placed_by_batch[start]]


async def load_from_config(
    reactor, config_path: str, address: str, count: int, batch: int, concurrency: int, seed: int
) -> dict:
    """Open the store ``config_path`` names, create the mailbox if needed, load, close."""
    sys.path.insert(0, ROOT)
    from haitatsu.config.loader import load_config
    from haitatsu.storage import build_store

    config = load_config(config_path)
    store = build_store(config, reactor)
    await store.open()
    try:
        mailbox = await store.find_mailbox(address)
        if mailbox is None:
            mailbox = await store.create_mailbox(address)
        started = time.monotonic()
        last = [started]

        def progress(done):
            if time.monotonic() - last[0] >= 10 or done == count:
                last[0] = time.monotonic()
                rate = done / (last[0] - started)
                print(f"  loaded {done}/{count} ({rate:.0f} msg/s)", file=sys.stderr, flush=True)

        placed = await load(
            store, mailbox.id, address, count, batch, concurrency, seed, progress=progress
        )
        elapsed = time.monotonic() - started
    finally:
        await store.close()
    newest_first = sorted(placed, key=lambda mm: (mm.created_at, mm.id), reverse=True)
    return {
        "mailbox_id": mailbox.id,
        "address": address,
        "messages": len(placed),
        "seconds": elapsed,
        "ids": [mm.id for mm in newest_first],
        "created_at": [mm.created_at for mm in newest_first],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the haitatsu.pkl of the instance")
    parser.add_argument("--address", default="box@bench.test")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="where to write the JSON summary (default: stdout)")
    args = parser.parse_args(argv)

    from twisted.internet import defer, task

    result = {}

    def run(reactor):
        async def go():
            result.update(
                await load_from_config(
                    reactor,
                    args.config,
                    args.address,
                    args.messages,
                    args.batch,
                    args.concurrency,
                    args.seed,
                )
            )

        return defer.Deferred.fromCoroutine(go())

    try:
        task.react(run)
    except SystemExit as e:
        if e.code:
            raise
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
