"""Replies and the parsing of SMTP envelope commands (MAIL FROM, RCPT TO and their parameters).

Pure functions of bytes, so the rules that decide between 501, 553 and 555 are tested without a
connection. Addresses go through twisted.mail's ``Address``, which knows source routes and quoted
local parts; what it does not check (8-bit bytes, ESMTP parameters) is checked here.
"""

from __future__ import annotations

import re

import attrs
from twisted.mail.smtp import Address, AddressError


@attrs.frozen
class Reply:
    """One SMTP reply: the code, the RFC 3463 enhanced status code (empty where RFC 2034 has
    none: the greeting, EHLO/HELO and 354) and the text."""

    code: int
    enhanced: str = ""
    text: str = ""

    @property
    def message(self) -> bytes:
        """The reply text after the code, as twisted's ``sendCode`` takes it."""
        text = f"{self.enhanced} {self.text}" if self.enhanced else self.text
        return text.encode("ascii", "replace")


class Refused(Exception):
    """A command is refused with ``reply``; raised by the parsers below."""

    def __init__(self, reply: Reply):
        super().__init__(reply)
        self.reply = reply


# A path in angle brackets (a quoted local part may hold '>' or spaces), or a bare address,
# which RFC 5321 does not allow but which old clients send.
_PATH = rb'<(?:"(?:[^"\\]|\\.)*"|[^<>"])*>|[^\s<>]+'
_MAIL = re.compile(rb"FROM:[ \t]*(?P<path>" + _PATH + rb")(?:[ \t]+(?P<params>.*))?\Z", re.I | re.S)
_RCPT = re.compile(rb"TO:[ \t]*(?P<path>" + _PATH + rb")(?:[ \t]+(?P<params>.*))?\Z", re.I | re.S)
# esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2).
_PARAM = re.compile(rb"(?P<key>[A-Za-z0-9][A-Za-z0-9-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?\Z")

NON_ASCII_ADDRESS = Reply(553, "5.6.7", "non-ASCII address requires SMTPUTF8, which is not offered")


def parse_mail(rest: bytes, default_domain: bytes) -> tuple[str, dict[str, str | None]]:
    """Parse the argument of MAIL (``FROM:<path> params``); return the sender (``""`` for the
    null sender) and the parameters keyed by upper-case keyword."""
    m = _MAIL.match(rest.strip())
    if m is None:
        raise Refused(Reply(501, "5.5.4", "syntax: MAIL FROM:<address> [parameters]"))
    address = _address(m.group("path"), default_domain, "5.1.7", "sender")
    return address, parse_params(m.group("params"))


def parse_rcpt(rest: bytes, default_domain: bytes) -> tuple[str, dict[str, str | None]]:
    """Parse the argument of RCPT (``TO:<path> params``); return the recipient address and the
    parameters keyed by upper-case keyword."""
    m = _RCPT.match(rest.strip())
    if m is None:
        raise Refused(Reply(501, "5.5.4", "syntax: RCPT TO:<address> [parameters]"))
    address = _address(m.group("path"), default_domain, "5.1.3", "recipient")
    if not address:
        raise Refused(Reply(501, "5.1.3", "bad recipient address syntax"))
    return address, parse_params(m.group("params"))


def parse_params(raw: bytes | None) -> dict[str, str | None]:
    """Split ESMTP parameters; a malformed or repeated one is 501 5.5.4."""
    params: dict[str, str | None] = {}
    for word in (raw or b"").split():
        m = _PARAM.match(word)
        if m is None:
            raise Refused(Reply(501, "5.5.4", "malformed parameter"))
        key = m.group("key").decode("ascii").upper()
        if key in params:
            raise Refused(Reply(501, "5.5.4", f"duplicate parameter {key}"))
        value = m.group("value")
        params[key] = value.decode("ascii") if value is not None else None
    return params


def _address(path: bytes, default_domain: bytes, enhanced: str, role: str) -> str:
    if any(byte > 0x7F for byte in path):
        raise Refused(NON_ASCII_ADDRESS)
    if path == b"<>":
        return ""
    try:
        address = Address(path, default_domain)
    except AddressError:
        raise Refused(Reply(501, enhanced, f"bad {role} address syntax")) from None
    return str(address)
