"""SORT and THREAD (RFC 5256), computed from the metadata stored at delivery.

Every key comes from ``MessageInfo`` (subject, addresses, Date, Message-ID, In-Reply-To,
References) and the ``mailbox_messages`` row (internal date, size); no message is opened. The
base-subject algorithm (RFC 5256 section 2.1) is shared by SORT SUBJECT and both THREAD
algorithms. Ties are broken by sequence number, as the RFC asks.
"""

from __future__ import annotations

import re

import attrs

from haitatsu.imap.search import header_values
from haitatsu.imap.wire import Atom, IMAPSyntaxError

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO")
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")

# -- base subject (RFC 5256 section 2.1) ------------------------------------------------------

_WSP = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\s*\(fwd\)|\s+)$", re.I)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(r"^(?:" + _BLOB + r")*(?:re|fwd?)\s*(?:" + _BLOB + r")?:\s*", re.I)
_BLOB_LEADER = re.compile(r"^" + _BLOB)
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)


def base_subject(subject: str) -> tuple[str, bool]:
    """``(base subject, is a reply or forward)`` of a decoded subject.

    (1) whitespace runs become one space; (2) trailers ``(fwd)`` and whitespace go; (3) leaders
    ``Re:``/``Fw:``/``Fwd:`` with ``[blob]``s around them go, and a leading ``[blob]`` goes if
    something is left after it; (4) repeat 2-3; (5) ``[fwd: ...]`` unwraps and all repeats.
    The base subject is compared case-insensitively (i;ascii-casemap), so it is upper-cased
    in ASCII here.
    """
    text = _WSP.sub(" ", subject or "")
    refwd = False
    while True:
        while True:
            m = _TRAILER.search(text)
            if not m or not m.group(0):
                break
            if "fwd" in m.group(0).lower():
                refwd = True
            text = text[: m.start()]
        while True:
            before = text
            text = text.lstrip(" ")
            m = _LEADER.match(text)
            if m:
                text = text[m.end() :]
                refwd = True
            m = _BLOB_LEADER.match(text)
            if m and text[m.end() :]:
                text = text[m.end() :]
            if text == before:
                break
        m = _FWD_WRAP.match(text)
        if not m:
            break
        text = m.group(1)
        refwd = True
    text = text.strip(" ")
    return _ascii_upper(text), refwd


def _ascii_upper(text: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


# -- SORT -------------------------------------------------------------------------------------


@attrs.frozen
class SortCriterion:
    key: str
    reverse: bool = False


def parse_sort_criteria(token) -> list[SortCriterion]:
    if not isinstance(token, list) or not token:
        raise IMAPSyntaxError("SORT needs a parenthesised list of sort criteria")
    criteria = []
    reverse = False
    for t in token:
        if not isinstance(t, Atom):
            raise IMAPSyntaxError("invalid sort criterion")
        name = t.upper().decode("ascii", "replace")
        if name == "REVERSE":
            if reverse:
                raise IMAPSyntaxError("REVERSE twice")
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise IMAPSyntaxError("unknown sort criterion %s" % name[:40])
        criteria.append(SortCriterion(name, reverse))
        reverse = False
    if reverse or not criteria:
        raise IMAPSyntaxError("REVERSE needs a sort key after it")
    return criteria


@attrs.frozen
class Item:
    """One message as SORT and THREAD see it."""

    seq: int
    uid: int
    internal_date: int  # ns
    size: int
    info: object  # MessageInfo

    @property
    def sent_date(self) -> int:
        """RFC 5256: the Date header, or the internal date when it is missing or unparsable."""
        date = getattr(self.info, "date", None)
        return date if date is not None else self.internal_date


def _first_mailbox(addresses) -> str:
    for a in addresses or ():
        text = a.get("address", "") if isinstance(a, dict) else str(a)
        return _ascii_upper(text.rsplit("@", 1)[0] if "@" in text else text)
    return ""


def _key_value(item: Item, key: str):
    info = item.info
    if key == "ARRIVAL":
        return item.internal_date
    if key == "DATE":
        return item.sent_date
    if key == "SIZE":
        return item.size
    if key == "SUBJECT":
        return base_subject(info.subject or " ".join(header_values(info, "subject")))[0]
    field = {"FROM": "from", "TO": "to", "CC": "cc"}[key]
    return _first_mailbox(getattr(info, f"{field}_addresses", None))


class _Reversed:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __eq__(self, other):
        return self.value == other.value


def sort_items(items: list[Item], criteria: list[SortCriterion]) -> list[Item]:
    def key(item):
        parts = []
        for c in criteria:
            value = _key_value(item, c.key)
            parts.append(_Reversed(value) if c.reverse else value)
        parts.append(item.seq)
        return tuple(parts)

    return sorted(items, key=key)


# -- THREAD -----------------------------------------------------------------------------------

_MSGID = re.compile(r"<[^<>\s]*>")


def _message_ids(text: str) -> list[str]:
    return _MSGID.findall(text or "")


def _date_key(item: Item):
    return (item.sent_date, item.seq)


@attrs.define(eq=False)
class Container:
    item: Item | None = None
    parent: Container | None = None
    children: list = attrs.Factory(list)

    def has_descendant(self, other) -> bool:
        stack = list(self.children)
        while stack:
            c = stack.pop()
            if c is other:
                return True
            stack.extend(c.children)
        return False

    def date_key(self):
        if self.item is not None:
            return _date_key(self.item)
        return self.children[0].date_key() if self.children else (0, 0)


def _link(parent: Container, child: Container):
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def thread_orderedsubject(items: list[Item]) -> list[Container]:
    """RFC 5256 ORDEREDSUBJECT: by base subject, then date; the first of each subject is the
    parent of the others (as siblings); threads ordered by their first message's date."""
    ordered = sorted(items, key=lambda i: (_key_value(i, "SUBJECT"), _date_key(i)))
    roots: list[Container] = []
    current_subject = None
    for item in ordered:
        subject = _key_value(item, "SUBJECT")
        node = Container(item)
        if roots and subject == current_subject:
            _link(roots[-1], node)
        else:
            roots.append(node)
            current_subject = subject
    roots.sort(key=Container.date_key)
    return roots


def thread_references(items: list[Item]) -> list[Container]:
    """RFC 5256 REFERENCES (after Zawinski): parent/child from Message-ID, References and
    In-Reply-To, missing parents as dummies, pruning, root grouping by base subject."""
    table: dict[str, Container] = {}
    unique = 0

    def container(msgid):
        c = table.get(msgid)
        if c is None:
            c = table[msgid] = Container()
        return c

    for item in sorted(items, key=lambda i: i.seq):
        info = item.info
        ids = _message_ids(getattr(info, "rfc_message_id", "") or "") or _message_ids(
            " ".join(header_values(info, "message-id"))
        )
        msgid = ids[0] if ids else None
        if msgid is None or (msgid in table and table[msgid].item is not None):
            unique += 1
            msgid = f"\0unique-{unique}"
        this = container(msgid)
        this.item = item
        refs = _message_ids(" ".join(header_values(info, "references")))
        if not refs:
            refs = _message_ids(" ".join(header_values(info, "in-reply-to")))[:1]
        refs = [r for r in refs if r != msgid]
        # (1A) link the references chain, never changing an existing parent or making a loop.
        prev = None
        for ref in refs:
            c = container(ref)
            if prev is not None and c.parent is None and c is not prev:
                if not c.has_descendant(prev):
                    _link(prev, c)
            prev = c
        # (1B) the last reference is this message's parent (replacing any earlier one).
        if prev is not None and prev is not this and not this.has_descendant(prev):
            _link(prev, this)
        elif prev is None and this.parent is not None:
            this.parent.children.remove(this)
            this.parent = None
    roots = [c for c in table.values() if c.parent is None]
    # (3) prune dummies.
    roots = _prune(roots, at_root=True)
    for r in roots:
        r.parent = None
    # (4) sort by date; a dummy sorts by its first child after sorting the children.
    _sort_tree(roots)
    # (5) merge roots with the same base subject.
    subjects: dict[str, Container] = {}

    def subject_of(c):
        node = c if c.item is not None else c.children[0]
        info = node.item.info
        return base_subject(info.subject or " ".join(header_values(info, "subject")))

    for c in roots:
        subject, refwd = subject_of(c)
        if not subject:
            continue
        old = subjects.get(subject)
        if (
            old is None
            or (c.item is None and old.item is not None)
            or (old.item is not None and subject_of(old)[1] and c.item is not None and not refwd)
        ):
            subjects[subject] = c
    result = list(roots)
    for c in roots:
        subject, refwd = subject_of(c)
        entry = subjects.get(subject) if subject else None
        if entry is None or entry is c:
            continue
        result.remove(c)
        if entry.item is None and c.item is None:
            for child in list(c.children):
                _link(entry, child)
        elif entry.item is None or (refwd and c.item is not None and not subject_of(entry)[1]):
            _link(entry, c)
        else:
            dummy = Container()
            result[result.index(entry)] = dummy
            _link(dummy, entry)
            _link(dummy, c)
            subjects[subject] = dummy
    roots = result
    # (6) siblings by date at every level below the root.
    for r in roots:
        _sort_children(r)
    return roots


def _prune(nodes, at_root=False):
    out = []
    for c in nodes:
        c.children = _prune(c.children)
        for child in c.children:
            child.parent = c
        if c.item is None:
            if not c.children:
                continue
            if not at_root or len(c.children) == 1:
                out.extend(c.children)
                continue
        out.append(c)
    return out


def _sort_tree(nodes):
    for c in nodes:
        _sort_tree(c.children)
        c.children.sort(key=Container.date_key)
    nodes.sort(key=Container.date_key)


def _sort_children(node):
    node.children.sort(key=Container.date_key)
    for c in node.children:
        _sort_children(c)


def format_threads(roots: list[Container], use_uid: bool) -> bytes:
    """The THREAD response data: ``(2)(3 6 (4 23)(44 7 96))``."""

    def number(c):
        return b"%d" % (c.item.uid if use_uid else c.item.seq)

    def members(c) -> bytes:
        parts = []
        node = c
        if node.item is None:
            return b"".join(b"(" + members(ch) + b")" for ch in node.children)
        parts.append(number(node))
        while len(node.children) == 1 and node.children[0].item is not None:
            node = node.children[0]
            parts.append(number(node))
        out = b" ".join(parts)
        if node.children:
            out += b" " + b"".join(b"(" + members(ch) + b")" for ch in node.children)
        return out

    return b"".join(b"(" + members(r) + b")" for r in roots)
