"""The Sieve interpreter: runs a compiled script on one message for one recipient.

RFC 5228 with fileinto, reject/ereject (RFC 5429), envelope, body (RFC 5173), variables
(RFC 5229), imap4flags (RFC 5232), vacation (RFC 5230, 6131 :seconds), subaddress (RFC 5233),
relational (RFC 5231), copy (RFC 3894), mailbox (RFC 5490) and the i;ascii-numeric comparator
(RFC 4790).

``run`` is a pure function of the script, the message, the envelope and the mailbox's folders:
it returns the actions to take (``Outcome``), and does nothing itself. Sending (redirect,
vacation, rejection notices) and filing are the caller's. A runtime error (an action limit,
conflicting actions, a folder that does not exist) gives the implicit keep and nothing else, so
mail is never lost to a broken script (RFC 5228 2.10.6).
"""

from __future__ import annotations

import re

import attrs

from haitatsu.sieve.grammar import Node, Script

#: Defaults of ``Limits`` (``sieve.max_actions``, ``sieve.max_redirects``).
DEFAULT_MAX_ACTIONS = 32
DEFAULT_MAX_REDIRECTS = 4
#: Longest variable value kept (RFC 5229 section 3: at least 4000 octets).
MAX_VARIABLE_CHARS = 4096
#: Match variables ${0} to ${9}.
MAX_MATCH_VARIABLES = 10


class SieveRuntimeError(Exception):
    """The script cannot complete: the implicit keep applies."""


class _Stop(Exception):
    pass


# -- actions ----------------------------------------------------------------------------------


@attrs.frozen
class Keep:
    """File into the recipient's INBOX (explicit ``keep``, or the implicit keep)."""

    flags: tuple[str, ...] = ()
    implicit: bool = False


@attrs.frozen
class FileInto:
    folder: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False


@attrs.frozen
class Redirect:
    address: str
    copy: bool = False


@attrs.frozen
class Reject:
    text: str
    ereject: bool = False


@attrs.frozen
class Discard:
    pass


@attrs.frozen
class Vacation:
    reason: str
    subject: str = ""
    from_address: str = ""
    addresses: tuple[str, ...] = ()
    #: Seconds between two responses to one sender (``:days`` * 86400, or ``:seconds``).
    period: int = 7 * 86400
    handle: str = ""
    mime: bool = False
    #: Whether the script gave ``:days``/``:seconds`` (else the server's default applies).
    period_given: bool = False


@attrs.frozen
class Outcome:
    """What a script decided: ``actions`` in the order they are to be done (a ``Keep`` with
    ``implicit`` set when the implicit keep applies), and ``error`` (the runtime error that
    made it fall back to the implicit keep; "" when the script completed)."""

    actions: tuple = ()
    error: str = ""

    @property
    def kept(self) -> bool:
        return any(isinstance(a, Keep) for a in self.actions)


@attrs.frozen
class Limits:
    max_actions: int = DEFAULT_MAX_ACTIONS
    max_redirects: int = DEFAULT_MAX_REDIRECTS


@attrs.frozen
class Envelope:
    """``mail_from`` ("" for the null sender) and ``rcpt_to`` (this recipient's address)."""

    mail_from: str = ""
    rcpt_to: str = ""


# -- comparators and match types --------------------------------------------------------------

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def casemap(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _numeric(text: str):
    """i;ascii-numeric: the leading digits as an int, None (positive infinity) without any."""
    m = re.match(r"[0-9]+", text)
    return int(m.group(0)) if m else None


def _order(a: str, b: str, comparator: str) -> int:
    """-1, 0 or 1: how ``a`` compares with ``b`` under ``comparator``."""
    if comparator == "i;ascii-numeric":
        x, y = _numeric(a), _numeric(b)
        if x is None and y is None:
            return 0
        if x is None:
            return 1
        if y is None:
            return -1
        return (x > y) - (x < y)
    if comparator == "i;ascii-casemap":
        a, b = casemap(a), casemap(b)
    a8, b8 = a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    return (a8 > b8) - (a8 < b8)


_RELATIONS = {
    "gt": lambda c: c > 0,
    "ge": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "le": lambda c: c <= 0,
    "eq": lambda c: c == 0,
    "ne": lambda c: c != 0,
}


def _tokens(pattern: str, comparator: str) -> list:
    """A ``:matches`` pattern as tokens: ``"*"``, ``"?"``, or a literal character (``\\``
    quotes the next one), case-mapped for i;ascii-casemap."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            ch = pattern[i + 1]
            out.append(("lit", casemap(ch) if comparator == "i;ascii-casemap" else ch))
            i += 2
            continue
        if ch in "*?":
            out.append(ch)
        else:
            out.append(("lit", casemap(ch) if comparator == "i;ascii-casemap" else ch))
        i += 1
    return out


def wildcard_match(pattern: str, value: str, comparator: str):
    """Whether ``value`` matches the ``:matches`` ``pattern``: None, or what each wildcard
    matched, in order (for ``${1}``...). Each ``*`` takes as little as it can, the leftmost
    first (RFC 5229's example: ``"[*] *"`` on ``"[acme-users] [fwd] ..."`` gives
    ``acme-users``). The classic two-pointer glob match: it only ever goes back to the last
    ``*``, so its time is at most the product of the lengths, whatever the pattern."""
    tokens = _tokens(pattern, comparator)
    text = casemap(value) if comparator == "i;ascii-casemap" else value
    spans: dict[int, tuple[int, int]] = {}
    p = t = 0
    star = -1
    star_t = 0
    n = len(tokens)
    while t < len(text):
        token = tokens[p] if p < n else None
        if token == "?" or (isinstance(token, tuple) and token[1] == text[t]):
            if token == "?":
                spans[p] = (t, t + 1)
            p += 1
            t += 1
        elif token == "*":
            star, star_t = p, t
            spans[p] = (t, t)
            p += 1
        elif star >= 0:
            star_t += 1
            spans[star] = (spans[star][0], star_t)
            p, t = star + 1, star_t
        else:
            return None
    while p < n and tokens[p] == "*":
        spans[p] = (t, t)
        p += 1
    if p != n:
        return None
    return [value[a:b] for i, (a, b) in sorted(spans.items()) if tokens[i] in ("*", "?")]


def match_one(value: str, key: str, match: str, comparator: str, relation: str):
    """Whether ``value`` matches ``key``: False, or True, or for ``:matches`` the list of
    what the wildcards matched (for ``${1}``...)."""
    if match == ":value":
        return _RELATIONS[relation](_order(value, key, comparator))
    if match == ":is":
        if comparator == "i;ascii-numeric":
            return _order(value, key, comparator) == 0
        if comparator == "i;ascii-casemap":
            return casemap(value) == casemap(key)
        return value == key
    if match == ":contains":
        if comparator == "i;ascii-casemap":
            return casemap(key) in casemap(value)
        return key in value
    if match == ":matches":
        found = wildcard_match(key, value, comparator)
        if found is None:
            return False
        return found or True
    raise SieveRuntimeError(f"unknown match type {match}")


# -- addresses --------------------------------------------------------------------------------

_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"]+(\.[^@\s<>()\[\],;:\"]+)*@[^@\s<>()\[\],;:\"]+\Z")


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 320


def address_part(address: str, part: str, separator: str = "+"):
    """``address``'s ``:all``, ``:localpart``, ``:domain``, ``:user`` or ``:detail``; None
    when it has none (``:detail`` without a separator, RFC 5233 section 4)."""
    if address == "":
        return ""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if part == ":all":
        return address
    if part == ":localpart":
        return local
    if part == ":domain":
        return domain
    user, sep, detail = local.partition(separator)
    if part == ":user":
        return user
    if part == ":detail":
        return detail if sep else None
    raise SieveRuntimeError(f"unknown address part {part}")


# -- flags ------------------------------------------------------------------------------------

_SYSTEM_FLAGS = {
    "\\seen": "\\Seen",
    "\\answered": "\\Answered",
    "\\flagged": "\\Flagged",
    "\\deleted": "\\Deleted",
    "\\draft": "\\Draft",
}
_KEYWORD = re.compile(r"[^\s(){%*\"\\\]\x00-\x1f\x7f]+\Z")


def split_flags(values) -> list[str]:
    """Flags from a list of space-separated flag strings: each once (compared without case),
    system flags in their usual case, invalid ones dropped (RFC 5232 section 3)."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            canonical = _SYSTEM_FLAGS.get(flag.lower())
            if canonical is None:
                if flag.startswith("\\") or not _KEYWORD.match(flag):
                    continue
                canonical = flag
            if canonical.lower() not in seen:
                seen.add(canonical.lower())
                out.append(canonical)
    return out


# -- the interpreter --------------------------------------------------------------------------

_VARIABLE_REF = re.compile(r"\$\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Run:
    def __init__(self, script: Script, message, envelope: Envelope, folders, limits: Limits):
        self.script = script
        self.message = message
        self.envelope = envelope
        self.folders = folders
        self.limits = limits
        self.variables_on = "variables" in script.require
        self.variables: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.flags: list[str] = []  # imap4flags' internal variable
        self.actions: list = []
        self.implicit_keep = True
        self.redirects = 0

    # -- strings --------------------------------------------------------------------------

    def expand(self, text: str) -> str:
        if not self.variables_on or "${" not in text:
            return text

        def one(m):
            name = m.group(1)
            if name.isdigit():
                index = int(name)
                return self.match_vars[index] if index < len(self.match_vars) else ""
            if _NAME.match(name):
                return self.variables.get(name.lower(), "")
            return m.group(0)

        return _VARIABLE_REF.sub(one, text)

    def strings(self, value) -> list[str]:
        values = value if isinstance(value, list) else [value]
        return [self.expand(v) for v in values]

    def string(self, value) -> str:
        return self.expand(value)

    # -- running --------------------------------------------------------------------------

    def run(self) -> Outcome:
        try:
            self.block(self.script.commands)
        except _Stop:
            pass
        actions = list(self.actions)
        if self.implicit_keep:
            actions.append(Keep(tuple(self.flags), implicit=True))
        return Outcome(tuple(_dedupe(actions)))

    def block(self, commands) -> None:
        taken = True  # whether the if/elsif chain before has run a branch
        for node in commands:
            name = node.name
            if name == "require":
                continue
            if name == "if":
                taken = self.test(node.tests[0])
                if taken:
                    self.block(node.block)
                continue
            if name == "elsif":
                if not taken:
                    taken = self.test(node.tests[0])
                    if taken:
                        self.block(node.block)
                continue
            if name == "else":
                if not taken:
                    self.block(node.block)
                taken = True
                continue
            self.action(node)

    # -- tests ----------------------------------------------------------------------------

    def test(self, node: Node) -> bool:
        name = node.name
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self.test(node.tests[0])
        if name == "allof":
            return all(self.test(t) for t in node.tests)
        if name == "anyof":
            return any(self.test(t) for t in node.tests)
        if name == "size":
            limit = node.args["limit"]
            if ":over" in node.tags:
                return self.message.size > limit
            return self.message.size < limit
        if name == "exists":
            return all(self.message.raw_values(h) for h in self.strings(node.args["header-names"]))
        if name == "mailboxexists":
            names = self.strings(node.args["mailbox-names"])
            return all(self.folder_exists(n) for n in names)
        if name == "header":
            values = []
            for header in self.strings(node.args["header-names"]):
                values.extend(self.message.header_values(header))
            return self.compare(node, values)
        if name == "address":
            part = _part(node)
            addresses = []
            for header in self.strings(node.args["header-list"]):
                addresses.extend(self.message.addresses(header))
            return self.compare(node, _parts(addresses, part), count=len(addresses))
        if name == "envelope":
            part = _part(node)
            addresses = []
            for which in self.strings(node.args["header-list"]):
                which = which.lower()
                if which == "from":
                    addresses.append(self.envelope.mail_from)
                elif which == "to":
                    addresses.append(self.envelope.rcpt_to)
            return self.compare(node, _parts(addresses, part), count=len(addresses))
        if name == "string":
            values = self.strings(node.args["source"])
            counted = [v for v in values if v != ""]
            return self.compare(node, values, count=len(counted))
        if name == "hasflag":
            if "variable-list" in node.args:
                names = self.strings(node.args["variable-list"])
                values = split_flags(self.variables.get(n.lower(), "") for n in names)
            else:
                values = list(self.flags)
            keys = split_flags(self.strings(node.args["list-of-flags"]))
            return self.compare(node, values, keys=keys)
        if name == "body":
            tags = node.tags
            if ":raw" in tags:
                values = self.message.body_raw()
            elif ":content" in tags:
                values = self.message.body_parts(self.strings(tags[":content"]))
            else:
                values = self.message.body_parts(None)
            return self.compare(node, values)
        raise SieveRuntimeError(f"unsupported test {name}")

    def compare(self, node: Node, values: list, count: int | None = None, keys=None) -> bool:
        tags = node.tags
        comparator = tags.get(":comparator", "i;ascii-casemap")
        keys = keys if keys is not None else self.strings(node.args["key-list"])
        if ":count" in tags:
            n = len(values) if count is None else count
            return any(_RELATIONS[tags[":count"]](_order(str(n), k, comparator)) for k in keys)
        if ":value" in tags:
            match, relation = ":value", tags[":value"]
        elif ":matches" in tags:
            match, relation = ":matches", ""
        elif ":contains" in tags:
            match, relation = ":contains", ""
        else:
            match, relation = ":is", ""
        for value in values:
            for key in keys:
                found = match_one(value, key, match, comparator, relation)
                if found is False:
                    continue
                if match == ":matches":
                    captured = found if isinstance(found, list) else []
                    self.match_vars = [value, *captured][:MAX_MATCH_VARIABLES]
                return True
        return False

    # -- actions --------------------------------------------------------------------------

    def add(self, action) -> None:
        if len(self.actions) >= self.limits.max_actions:
            raise SieveRuntimeError(f"more than {self.limits.max_actions} actions")
        if isinstance(action, (Keep, FileInto, Redirect)) and any(
            isinstance(a, Reject) for a in self.actions
        ):
            raise SieveRuntimeError("reject conflicts with an action that delivers the message")
        if isinstance(action, Reject):
            if any(isinstance(a, Reject) for a in self.actions):
                raise SieveRuntimeError("reject or ereject used twice")
            if any(isinstance(a, (Keep, FileInto, Redirect, Vacation)) for a in self.actions):
                raise SieveRuntimeError("reject conflicts with another action")
        if isinstance(action, Vacation):
            if any(isinstance(a, Vacation) for a in self.actions):
                raise SieveRuntimeError("vacation used twice")
            if any(isinstance(a, Reject) for a in self.actions):
                raise SieveRuntimeError("vacation conflicts with reject")
        self.actions.append(action)

    def action_flags(self, node: Node) -> tuple[str, ...]:
        if ":flags" in node.tags:
            return tuple(split_flags(self.strings(node.tags[":flags"])))
        return tuple(self.flags)

    def folder_exists(self, name: str) -> bool:
        if self.folders is None:
            return True
        if name.upper() == "INBOX":
            return True
        return name in self.folders

    def action(self, node: Node) -> None:
        name = node.name
        tags = node.tags
        if name == "stop":
            raise _Stop()
        if name == "keep":
            self.add(Keep(self.action_flags(node)))
            self.implicit_keep = False
            return
        if name == "discard":
            self.add(Discard())
            self.implicit_keep = False
            return
        if name == "fileinto":
            folder = self.string(node.args["mailbox"])
            if folder.upper() == "INBOX":
                folder = "INBOX"
            create = ":create" in tags
            if not folder or (not create and not self.folder_exists(folder)):
                raise SieveRuntimeError(f"fileinto: no folder {folder!r}")
            self.add(FileInto(folder, self.action_flags(node), ":copy" in tags, create))
            if ":copy" not in tags:
                self.implicit_keep = False
            return
        if name == "redirect":
            address = self.string(node.args["address"]).strip()
            if address.startswith("<") and address.endswith(">"):
                address = address[1:-1]
            if not valid_address(address):
                raise SieveRuntimeError(f"redirect: invalid address {address!r}")
            if not any(
                isinstance(a, Redirect) and a.address.lower() == address.lower()
                for a in self.actions
            ):
                self.redirects += 1
                if self.redirects > self.limits.max_redirects:
                    raise SieveRuntimeError(f"more than {self.limits.max_redirects} redirects")
            self.add(Redirect(address, ":copy" in tags))
            if ":copy" not in tags:
                self.implicit_keep = False
            return
        if name in ("reject", "ereject"):
            self.add(Reject(self.string(node.args["text"]), ereject=name == "ereject"))
            self.implicit_keep = False
            return
        if name == "vacation":
            if ":seconds" in tags:
                period, given = max(0, tags[":seconds"]), True
            elif ":days" in tags:
                period, given = max(1, tags[":days"]) * 86400, True
            else:
                period, given = 7 * 86400, False
            self.add(
                Vacation(
                    reason=self.string(node.args["reason"]),
                    subject=self.string(tags.get(":subject", "")),
                    from_address=self.string(tags.get(":from", "")),
                    addresses=tuple(self.strings(tags.get(":addresses", []))),
                    period=period,
                    handle=self.string(tags.get(":handle", "")),
                    mime=":mime" in tags,
                    period_given=given,
                )
            )
            return
        if name == "set":
            self.set_variable(node)
            return
        if name in ("setflag", "addflag", "removeflag"):
            self.flag_action(node)
            return
        raise SieveRuntimeError(f"unsupported action {name}")

    def set_variable(self, node: Node) -> None:
        value = self.string(node.args["value"])
        tags = node.tags
        if ":lower" in tags:
            value = value.lower()
        elif ":upper" in tags:
            value = value.upper()
        if ":lowerfirst" in tags:
            value = value[:1].lower() + value[1:]
        elif ":upperfirst" in tags:
            value = value[:1].upper() + value[1:]
        if ":quotewildcard" in tags:
            value = re.sub(r"([*?\\])", r"\\\1", value)
        if ":length" in tags:
            value = str(len(value))
        self.variables[node.args["name"].lower()] = value[:MAX_VARIABLE_CHARS]

    def flag_action(self, node: Node) -> None:
        flags = split_flags(self.strings(node.args["list-of-flags"]))
        variable = node.args.get("variable-name")
        if variable is not None:
            current = split_flags([self.variables.get(variable.lower(), "")])
        else:
            current = list(self.flags)
        if node.name == "setflag":
            new = flags
        elif node.name == "addflag":
            new = split_flags([" ".join(current + flags)])
        else:
            drop = {f.lower() for f in flags}
            new = [f for f in current if f.lower() not in drop]
        if variable is not None:
            self.variables[variable.lower()] = " ".join(new)[:MAX_VARIABLE_CHARS]
        else:
            self.flags = new


def _part(node: Node) -> str:
    for part in (":localpart", ":domain", ":user", ":detail", ":all"):
        if part in node.tags:
            return part
    return ":all"


def _parts(addresses, part) -> list[str]:
    out = []
    for address in addresses:
        value = address_part(address, part)
        if value is not None:
            out.append(value)
    return out


def _dedupe(actions):
    """One store per folder (``keep`` is the INBOX) and one ``Redirect`` per address
    (RFC 5228 2.10.3): the first keeps its place and the flags are merged. ``Discard`` only
    cancels the implicit keep (it is listed once, and means nothing more)."""
    out: list = []
    where: dict = {}
    for action in actions:
        if isinstance(action, (Keep, FileInto)):
            folder = "INBOX" if isinstance(action, Keep) else action.folder
            key = ("folder", folder)
            if key in where:
                previous = out[where[key]]
                flags = tuple(split_flags([" ".join(previous.flags + action.flags)]))
                if isinstance(previous, Keep) or isinstance(action, Keep):
                    implicit = all(
                        getattr(a, "implicit", False) or not isinstance(a, Keep)
                        for a in (previous, action)
                    )
                    out[where[key]] = Keep(flags, implicit=implicit)
                else:
                    out[where[key]] = attrs.evolve(previous, flags=flags)
                continue
        elif isinstance(action, Redirect):
            key = ("redirect", action.address.lower())
            if key in where:
                continue
        elif isinstance(action, Discard):
            key = ("discard",)
            if key in where:
                continue
        else:
            key = None
        if key is not None:
            where[key] = len(out)
        out.append(action)
    return out


def run(
    script: Script,
    message,
    envelope: Envelope,
    folders=None,
    limits: Limits | None = None,
) -> Outcome:
    """Run ``script`` on ``message`` (a ``SieveMessage``) for one recipient.

    ``folders``: the names of the recipient's folders (``fileinto`` to any other is a runtime
    error unless ``:create``; None accepts any name). Never raises for a problem of the
    script: a runtime error gives ``Outcome((Keep(implicit=True),), error=...)``.
    """
    limits = limits or Limits()
    runner = _Run(script, message, envelope, folders, limits)
    try:
        return runner.run()
    except (SieveRuntimeError, RecursionError, ValueError, KeyError, IndexError) as e:
        return Outcome((Keep(implicit=True),), error=str(e) or e.__class__.__name__)
