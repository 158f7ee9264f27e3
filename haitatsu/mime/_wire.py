"""IMAP wire forms (RFC 3501 section 7.4.2) of what the parser found: strings, ENVELOPE, BODY and
BODYSTRUCTURE.

The results are ``str`` meant to be sent encoded as UTF-8: the octet count of a literal is the
length of its UTF-8 encoding.
"""

from __future__ import annotations

import re

from haitatsu.mime._headers import Address, first, parse_addresses, raw_text

# Characters a quoted string may carry: CHAR (0x01-0x7F) except CR and LF.
_NOT_QUOTABLE = re.compile(r"[^\x01-\x09\x0b\x0c\x0e-\x7f]")


def astring(value: str) -> str:
    """A quoted string, or a literal when the value holds CR, LF or non-ASCII characters."""
    value = value.replace("\x00", "")
    if _NOT_QUOTABLE.search(value) is None:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{%d}\r\n%s" % (len(value.encode("utf-8")), value)


def nstring(value: str | None) -> str:
    return "NIL" if value is None else astring(value)


def address_list(addresses: list[Address]) -> str:
    if not addresses:
        return "NIL"
    return (
        "("
        + "".join(
            "("
            + " ".join(
                (
                    nstring(address.name),
                    nstring(address.route),
                    nstring(address.mailbox),
                    nstring(address.host),
                )
            )
            + ")"
            for address in addresses
        )
        + ")"
    )


def envelope(fields: list[tuple[str, bytes]], cap: int | None = None) -> str:
    """The ENVELOPE of a message header: raw (undecoded) header text, first occurrences.

    ``cap`` bounds each field's length (in characters) for encapsulated messages, whose number is
    not bounded by anything but the message size.
    """

    def text(name: str) -> str | None:
        value = first(fields, name)
        if value is None:
            return None
        result = raw_text(value)
        return result[:cap] if cap is not None else result

    def addresses(name: str) -> list[Address]:
        value = text(name)
        return [] if value is None else parse_addresses(value)

    sender_from = addresses("From")
    sender = addresses("Sender") or sender_from
    reply_to = addresses("Reply-To") or sender_from
    return (
        "("
        + " ".join(
            (
                nstring(text("Date")),
                nstring(text("Subject")),
                address_list(sender_from),
                address_list(sender),
                address_list(reply_to),
                address_list(addresses("To")),
                address_list(addresses("Cc")),
                address_list(addresses("Bcc")),
                nstring(text("In-Reply-To")),
                nstring(text("Message-ID")),
            )
        )
        + ")"
    )


def param_list(params: list[tuple[str, str]]) -> str:
    if not params:
        return "NIL"
    return (
        "(" + " ".join(astring(name.upper()) + " " + astring(value) for name, value in params) + ")"
    )


def disposition(kind: str, params: list[tuple[str, str]]) -> str:
    if not kind:
        return "NIL"
    return "(" + astring(kind.upper()) + " " + param_list(params) + ")"


def languages(values: list[str]) -> str:
    if not values:
        return "NIL"
    if len(values) == 1:
        return astring(values[0])
    return "(" + " ".join(astring(value) for value in values) + ")"
