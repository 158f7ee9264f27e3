"""The trace headers the MX prepends to every message it accepts (API.md 2.2).

In order: ``Received``, then (when filters ran) ``Authentication-Results`` and the header
fields filters asked for, then ``X-Haitatsu-Trace-ID`` and ``X-Haitatsu-Node``.
"""

from __future__ import annotations

import datetime
import email.utils
import re

#: Product token in the Received header, as the original server writes it.
PRODUCT = "Haitatsu/0.1"

# Characters a client-supplied HELO name keeps in the header; anything else (comment delimiters,
# quotes, backslashes) becomes "_" so the client cannot shape the header's structure.
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]@+=]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def address_literal(ip: str) -> str:
    """An IP address as RFC 5321 writes it in brackets: ``1.2.3.4`` or ``IPv6:2001:db8::1``."""
    return f"IPv6:{ip}" if ":" in ip else ip


def received(
    *,
    helo: str,
    remote_ip: str,
    remote_name: str | None,
    hostname: str,
    instance: str,
    trace_id: str,
    when: float,
    tls: bool = False,
) -> bytes:
    """The ``Received`` header (RFC 5321 4.4), folded before ``by``, ``with`` and the date so
    each line stays well under 78 characters for ordinary host names. ``with ESMTPS`` when the
    session was encrypted (RFC 3848)."""
    helo = _UNSAFE.sub("_", helo) or "unknown"
    name = _UNSAFE.sub("_", remote_name) if remote_name else remote_ip
    date = email.utils.format_datetime(datetime.datetime.fromtimestamp(when, datetime.UTC))
    return (
        f"Received: from {helo} ({name} [{address_literal(remote_ip)}])\r\n"
        f"\tby {_clean(hostname)} ({PRODUCT}; {_clean(instance)})\r\n"
        f"\twith {'ESMTPS' if tls else 'ESMTP'} id {trace_id};\r\n"
        f"\t{date}\r\n"
    ).encode("ascii", "replace")


def trace_headers(
    *,
    helo: str,
    remote_ip: str,
    remote_name: str | None,
    hostname: str,
    instance: str,
    trace_id: str,
    when: float,
    tls: bool = False,
    added: bytes = b"",
) -> bytes:
    """Every header prepended to an inbound message, as CRLF-terminated bytes; ``added``
    (complete fields: Authentication-Results and the filters' own) goes after Received."""
    return (
        received(
            helo=helo,
            remote_ip=remote_ip,
            remote_name=remote_name,
            hostname=hostname,
            instance=instance,
            trace_id=trace_id,
            when=when,
            tls=tls,
        )
        + added
        + (f"X-Haitatsu-Trace-ID: {trace_id}\r\nX-Haitatsu-Node: {_clean(instance)}\r\n").encode(
            "ascii", "replace"
        )
    )


def _clean(value: str) -> str:
    """Configuration values go in as they are, minus anything that could end the header."""
    return _CONTROL.sub("", value)
