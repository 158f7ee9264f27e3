"""CREATE-SPECIAL-USE (RFC 6154 section 3): ``CREATE name (USE (\\Archive))``.

A folder holds one special use (``Folder.special_use``), shown by LIST. Of the RFC 6154 uses we
store ``\\Archive``, ``\\Drafts``, ``\\Junk``, ``\\Sent`` and ``\\Trash``; ``\\All`` and
``\\Flagged`` (and RFC 8457's ``\\Important``) would be virtual folders we do not have. ``\\Trash``
and ``\\Junk`` belong to one folder each, because the server itself files mail there (EXPUNGE
moves to Trash, spam goes to Junk) and must know which folder that is; every mailbox has them
from the start, so asking for either again is refused. Several folders may share ``\\Archive``,
``\\Drafts`` or ``\\Sent``: those only tell clients what a folder is for.

Every refusal that is about the use is ``NO [USEATTR]`` and creates nothing (RFC 6154 section
3); a parameter that does not parse is ``BAD``.
"""

from __future__ import annotations

from haitatsu.imap.wire import Atom, IMAPSyntaxError

#: Every use attribute a client may name (RFC 6154 section 2, RFC 8457), canonical spelling.
KNOWN_USES = (
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Important",
    "\\Junk",
    "\\Sent",
    "\\Trash",
)
#: The uses a folder can be created with.
SUPPORTED_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")
#: Uses the server relies on finding in exactly one folder.
SINGLE_USES = ("\\Junk", "\\Trash")

_CANONICAL = {use.lower(): use for use in KNOWN_USES}


def parse_create_params(params) -> list[str]:
    """The use attributes of CREATE's parameter list (RFC 4466 ``create-param``), deduplicated,
    in canonical spelling when known. Raises IMAPSyntaxError."""
    if not isinstance(params, list) or not params:
        raise IMAPSyntaxError("CREATE parameters must be a parenthesised list")
    uses: list[str] = []
    seen_use = False
    i = 0
    while i < len(params):
        word = params[i]
        if not isinstance(word, Atom) or word.upper() != b"USE" or seen_use:
            raise IMAPSyntaxError("unknown CREATE parameter")
        seen_use = True
        if i + 1 >= len(params) or not isinstance(params[i + 1], list):
            raise IMAPSyntaxError("USE needs a list of special-use attributes")
        for token in params[i + 1]:
            if not isinstance(token, Atom) or not token.startswith(b"\\") or len(token) < 2:
                raise IMAPSyntaxError("special-use attributes start with a backslash")
            text = bytes(token).decode("ascii", "replace")
            use = _CANONICAL.get(text.lower(), text)
            if use not in uses:
                uses.append(use)
        i += 2
    return uses


def use_refusal(uses: list[str], folders) -> bytes | None:
    """Why a folder cannot be created with ``uses`` (the text after ``NO [USEATTR]``), or None.

    ``folders`` are the mailbox's folders."""
    if len(uses) > 1:
        return b"A mailbox can have only one special use"
    [use] = uses
    if use not in KNOWN_USES:
        return b"%s is not a special use" % use.encode("utf-8", "replace")[:40]
    if use not in SUPPORTED_USES:
        return b"%s is not supported" % use.encode()
    if use in SINGLE_USES:
        holder = next((f for f in folders if f.special_use == use), None)
        if holder is not None:
            return b"%s is already the special use of %s" % (
                use.encode(),
                holder.name.encode("utf-8", "replace"),
            )
    return None


class SpecialUseMixin:
    """CREATE's USE parameter for ``IMAPServer``."""

    async def _special_use_allowed(self, tag, uses: list[str]) -> bool:
        """Whether a folder may be created with ``uses``; if not, ``NO [USEATTR]`` is sent."""
        folders = await self.store.list_folders(self.account.mailbox_id)
        refusal = use_refusal(uses, folders)
        if refusal is None:
            return True
        self.sendNegativeResponse(tag, b"[USEATTR] " + refusal)
        return False
