"""Small functions several filters need (and plugins may use)."""

from __future__ import annotations

import ipaddress
import re

_BATV = re.compile(r"prvs=[0-9a-z]+=(.+)\Z")


def client_network(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network a client address counts as: ``192.0.2.0/24`` for ``192.0.2.7`` with
    ``ipv4_prefix=24``; IPv6 clients usually get a /64 each. An IPv4-mapped IPv6 address
    counts as its IPv4 address. A string that is no address is returned as it is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def normal_sender(address: str) -> str:
    """An envelope sender as greylisting and rate limits key it: lower case, without a BATV
    tag (``prvs=1234abcd=user@example.com`` is ``user@example.com``); ``<>`` for the null
    sender."""
    address = address.strip().lower()
    if not address:
        return "<>"
    local, at, domain = address.rpartition("@")
    if at:
        m = _BATV.match(local)
        if m:
            return f"{m.group(1)}@{domain}"
    return address
