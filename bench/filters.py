"""What the filter chain costs the MX (issue 7): SMTP acceptance with the default chain (spf,
dkim, dmarc, spam_score, sieve) against the empty chain, and each filter alone.

    .venv/bin/python bench/filters.py [--messages 5000] [--sessions 20] [--size 10240]
        [--chain spf,dkim,dmarc,spam_score,sieve] [--alone spf,dkim,dmarc,spam_score,sieve]
        [--rounds 1] [--smtp-source-args ""]

The workload is bench/smtp_inbound.py's, with its code: Postfix's ``smtp-source`` sends
``--messages`` messages of ``--size`` bytes from ``sender@source.test`` over ``--sessions``
parallel sessions to one mailbox of a fresh ``twistd -n haitatsu`` (embedded default: SQLite and
a blob directory); time runs from the first connection to the last 250 after DATA, and every
message is checked to have arrived. Each configuration gets its own fresh server:

- ``empty``: ``filters = new Listing {}``;
- ``chain``: the filters of ``--chain`` in that order;
- one run per filter of ``--alone``, that filter the only one in the chain (left out when the
  chain is that filter alone).

Every configuration runs ``--rounds`` times, each round in a rotated order, and its median
counts; with one round the empty chain runs again at the end. Every run of the empty chain is
printed: their spread is the noise of the machine, to read the other figures by.

Filters that look things up in DNS ask a ``twisted.names`` server on loopback
(``peers.NameServer``) serving ``source.test``: SPF ``v=spf1 ip4:127.0.0.0/8 -all`` (so SPF
passes) and DMARC ``p=none``; smtp-source's messages carry no DKIM signature. A filter whose
plugin is not installed (spf, dkim, dmarc and sieve are being written alongside this one) is
left out with a printed note.

Printed: messages/s per configuration (median of its runs), the ratio to the empty chain, and
the cost in milliseconds of server throughput per message (``1000/rate - 1000/empty_rate``).
Method and figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from peers import ROOT, Haitatsu, NameServer, ensure_debian_packages, remove  # noqa: E402
from smtp_inbound import smtp_source, wait_arrived  # noqa: E402

DEFAULT_CHAIN = "spf,dkim,dmarc,spam_score,sieve"

ZONES = """
zone = [
    SOA("source.test", mname="ns.source.test", rname="root.source.test", serial=1,
        refresh=60, retry=60, expire=60, minimum=300, ttl=300),
    TXT("source.test", b"v=spf1 ip4:127.0.0.0/8 -all", ttl=300),
    TXT("_dmarc.source.test", b"v=DMARC1; p=none", ttl=300),
    A("source.test", "127.0.0.1", ttl=300),
]
"""


def installed_filters() -> set[str]:
    """The filter plugins this checkout has (built-ins, as the server finds them)."""
    sys.path.insert(0, ROOT)
    from haitatsu.filtering.registry import discover

    return set(discover())


def chain_config(names) -> str:
    entries = " ".join(f'new {{ name = "{name}" }}' for name in names)
    return f"filters = new Listing {{ {entries} }}\n"


def run(label: str, names, args, dns: NameServer) -> float:
    """One fresh server with the chain ``names``; its acceptance rate (messages/s)."""
    workdir = tempfile.mkdtemp(prefix="bench-filters-")
    extra = dns.haitatsu_config() + chain_config(names)
    target = Haitatsu(workdir, extra_config=extra, label=label)
    try:
        target.start()
        elapsed = smtp_source(
            target.port, args.messages, args.sessions, args.size, shlex.split(args.smtp_source_args)
        )
        wait_arrived(target, args.messages, args.size)
    except BaseException:
        path = os.path.join(workdir, "twistd.log")
        if os.path.exists(path):
            print(open(path, errors="replace").read()[-3000:], file=sys.stderr)
        raise
    finally:
        target.stop()
        remove(workdir)
    rate = args.messages / elapsed
    print(f"{label:>44}  {elapsed:7.2f} s  {rate:8.1f} msg/s", flush=True)
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--chain", default=DEFAULT_CHAIN, help="the chain to compare")
    parser.add_argument("--alone", default=DEFAULT_CHAIN, help="filters to run one by one")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration")
    parser.add_argument("--smtp-source-args", default="", help="extra smtp-source flags")
    args = parser.parse_args(argv)
    ensure_debian_packages("postfix")  # smtp-source

    installed = installed_filters()
    wanted = [n for n in args.chain.split(",") if n]
    alone = [n for n in args.alone.split(",") if n]
    for name in dict.fromkeys(wanted + alone):
        if name not in installed:
            print(f"note: filter {name!r} is not installed here: left out", flush=True)
    chain = [n for n in wanted if n in installed]
    configs = {"empty chain": []}
    if chain:
        configs["chain: " + " ".join(chain)] = chain
    for name in alone:
        if name in installed and [name] != chain:
            configs[f"{name} alone"] = [name]

    dns = NameServer(tempfile.mkdtemp(prefix="bench-dns-"), ZONES)
    dns.start()
    print(
        f"{args.messages} messages of {args.size} B over {args.sessions} sessions, "
        f"{args.rounds} round(s), DNS on 127.0.0.1:{dns.port}",
        flush=True,
    )
    rates: dict[str, list[float]] = {label: [] for label in configs}
    labels = list(configs)
    try:
        for round_ in range(args.rounds):
            # Each round starts one configuration later, so none always runs first.
            shift = round_ % len(labels)
            for label in labels[shift:] + labels[:shift]:
                rates[label].append(run(label, configs[label], args, dns))
        if args.rounds == 1 and len(labels) > 1:
            rates["empty chain"].append(run("empty chain", [], args, dns))  # the drift
    finally:
        dns.stop()
        remove(dns.workdir)

    empty = statistics.median(rates["empty chain"])
    spread = ", ".join(f"{r:.1f}" for r in rates["empty chain"])
    print(f"\nempty chain: {spread} msg/s (median {empty:.1f})")
    print(f"{'configuration':>44}  {'msg/s':>8}  {'/empty':>6}  {'ms/msg':>7}  runs")
    for label, runs in rates.items():
        if label == "empty chain":
            continue
        rate = statistics.median(runs)
        cost = 1000 / rate - 1000 / empty
        shown = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{label:>44}  {rate:8.1f}  {rate / empty:6.2f}  {cost:+7.2f}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
