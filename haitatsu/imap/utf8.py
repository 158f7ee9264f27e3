"""UTF8=ACCEPT (RFC 6855): a session that ran ``ENABLE UTF8=ACCEPT`` speaks UTF-8.

Before ENABLE, mailbox names travel in modified UTF-7 (RFC 3501 5.1.3) and raw UTF-8 from a
client is accepted as well (``wire.decode_mailbox``). After it:

- mailbox names are UTF-8 both ways: LIST, LSUB, STATUS and the rest send them as UTF-8 quoted
  strings, and a name from the client is read as UTF-8 only (``&`` is just ``&``);
- ``SEARCH`` with a ``CHARSET`` is ``BAD`` (RFC 6855 section 3: the strings are UTF-8 already);
  SORT and THREAD keep their mandatory charset argument;
- ``APPEND box UTF8 (~{n}...)`` (section 4) is accepted, as is a plain literal: both are
  stored as received.

Messages are stored as received, so one with UTF-8 header fields (RFC 6532) comes back as it
was: ENVELOPE and BODYSTRUCTURE carry such text as literals, which every client reads, enabled
or not. ENABLE UTF8=ACCEPT is honoured in the authenticated state only (section 3); in the
selected state it is left out of ``* ENABLED``.

Python's imaplib (up to at least 3.13, CPython gh-78319) sends ``UTF8 (`` and ``)`` inside the
literal instead of around it once UTF8=ACCEPT is on. No message can start with ``UTF8 (`` (it
is not a header field), so in an enabled session such a literal is unwrapped before it is stored.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from haitatsu.imap.wire import (
    Atom,
    IMAPSyntaxError,
    InvalidMailboxName,
    SpooledLiteral,
    String,
    decode_mailbox,
    decode_new_mailbox,
    encode_mailbox,
    quote,
)

UTF8_ACCEPT = b"UTF8=ACCEPT"
_WRAPPER_HEAD = b"UTF8 ("
_WRAPPER_TAIL = b")"


def _astring(token) -> bytes:
    if not isinstance(token, (Atom, String)):
        raise IMAPSyntaxError("string expected")
    return bytes(token)


def unwrap_utf8_literal(literal: SpooledLiteral) -> SpooledLiteral:
    """The message inside ``UTF8 (...)`` when imaplib put the wrapper inside the literal, else
    ``literal`` itself. Blocking: the inner bytes are copied into a new file that then replaces
    the spool file (same path, so the server's clean-up still finds it)."""
    size = literal.size
    if size < len(_WRAPPER_HEAD) + len(_WRAPPER_TAIL):
        return literal
    with open(literal.path, "rb") as f:
        head = f.read(len(_WRAPPER_HEAD))
        f.seek(size - len(_WRAPPER_TAIL))
        tail = f.read(len(_WRAPPER_TAIL))
        if head != _WRAPPER_HEAD or tail != _WRAPPER_TAIL:
            return literal
        inner = size - len(_WRAPPER_HEAD) - len(_WRAPPER_TAIL)
        fd, path = tempfile.mkstemp(
            prefix="imap-", suffix=".eml", dir=os.path.dirname(literal.path)
        )
        try:
            with os.fdopen(fd, "wb") as out:
                f.seek(len(_WRAPPER_HEAD))
                remaining = inner
                while remaining:
                    chunk = f.read(min(64 * 1024, remaining))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
            os.replace(path, literal.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
    return SpooledLiteral(path=literal.path, size=inner)


class UTF8Mixin:
    """Mailbox names and APPEND data for ``IMAPServer``, by whether UTF8=ACCEPT is on."""

    @property
    def utf8_accept(self) -> bool:
        return UTF8_ACCEPT in self.enabled

    def _may_enable(self, capability: bytes) -> bool:
        """RFC 6855 section 3: UTF8=ACCEPT is enabled in the authenticated state only."""
        return capability != UTF8_ACCEPT or self.state == "auth"

    def _mailbox_arg(self, token) -> str:
        """A mailbox name from the client, to look up (leniently decoded)."""
        value = _astring(token)
        if self.utf8_accept:
            return value.decode("utf-8", "replace")
        return decode_mailbox(value)

    def _new_mailbox_arg(self, token) -> str:
        """A mailbox name for CREATE or RENAME: canonical in the session's encoding."""
        value = _astring(token)
        if not self.utf8_accept:
            return decode_new_mailbox(value)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMailboxName("mailbox name is not UTF-8") from None

    def _mailbox_out(self, name: str) -> bytes:
        """A mailbox name as the client expects it: modified UTF-7, or UTF-8 once enabled."""
        if self.utf8_accept:
            return quote(name.encode("utf-8"))
        return encode_mailbox(name)

    def _refuse_search_charset(self, tokens) -> None:
        """RFC 6855 section 3: after ENABLE UTF8=ACCEPT a SEARCH names no charset."""
        if (
            self.utf8_accept
            and tokens
            and isinstance(tokens[0], Atom)
            and tokens[0].upper() == b"CHARSET"
        ):
            raise IMAPSyntaxError("SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT")

    async def _utf8_append_args(self, tokens) -> list:
        """APPEND's arguments after the mailbox with each ``UTF8 (literal)`` replaced by its
        literal (RFC 6855 section 4); imaplib's wrapped literals unwrapped."""
        out = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if isinstance(token, Atom) and token.upper() == b"UTF8":
                if not self.utf8_accept:
                    raise IMAPSyntaxError("APPEND UTF8 needs ENABLE UTF8=ACCEPT first")
                inner = tokens[i + 1] if i + 1 < len(tokens) else None
                if (
                    not isinstance(inner, list)
                    or len(inner) != 1
                    or not isinstance(inner[0], SpooledLiteral)
                ):
                    raise IMAPSyntaxError("APPEND UTF8 needs (literal8)")
                out.append(inner[0])
                i += 2
                continue
            if isinstance(token, SpooledLiteral) and self.utf8_accept:
                token = await self.run_blocking(unwrap_utf8_literal, token)
            out.append(token)
            i += 1
        return out


__all__ = ["UTF8Mixin", "UTF8_ACCEPT", "unwrap_utf8_literal"]
