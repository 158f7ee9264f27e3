"""Parsing Sieve scripts: sievelib's parser with our extensions, turned into a small tree.

sievelib (PyPI) parses RFC 5228 and most extensions. What it lacks we add through its documented
hook, ``sievelib.commands.add_commands``: ``ereject`` (RFC 5429), the ``string`` test
(RFC 5229), ``mailboxexists`` (RFC 5490), ``:user``/``:detail`` (RFC 5233) and any
comparator name in ``:comparator`` (we check comparators ourselves, with a clearer message).
The hook replaces commands by class name, so our ``address``, ``envelope``, ``header``,
``body``, ``hasflag`` and ``string`` stand in for sievelib's.

``compile_script`` parses, then converts sievelib's commands into ``Node`` trees (strings
unquoted, multi-line strings decoded, numbers with their K/M/G multipliers applied) and checks
what the parser does not: the ``require`` list against the extensions we implement,
comparators, relational operators, variable names, and the script size. Errors are
``SieveSyntaxError`` with a line number.
"""

from __future__ import annotations

import re

import attrs
from sievelib import commands as sc
from sievelib.parser import Parser

#: Extensions the interpreter implements (what ``require`` may name; ManageSieve's SIEVE).
EXTENSIONS = (
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "body",
    "variables",
    "imap4flags",
    "vacation",
    "vacation-seconds",
    "subaddress",
    "relational",
    "copy",
    "mailbox",
    "comparator-i;ascii-numeric",
)

COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric")
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")

#: Deepest nesting of blocks and tests accepted.
MAX_NESTING = 32

#: Largest script accepted (ManageSieve's MAXSCRIPTSIZE, ``sieve.max_script_bytes``).
DEFAULT_MAX_SCRIPT_BYTES = 64 * 1024


class SieveSyntaxError(Exception):
    """A script that does not compile: ``line`` (1-based, 0 when unknown) and ``message``."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


def valid_script_name(name: str) -> bool:
    """RFC 5804 section 1.6: 1 to 128 characters, none of them a control character (and for
    us no ``/``, which a URL path could not carry)."""
    return (
        0 < len(name) <= 128
        and "/" not in name
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in name)
    )


# -- sievelib extensions ----------------------------------------------------------------------

_comparator = {
    "name": "comparator",
    "type": ["tag"],
    "values": [":comparator"],
    "extra_arg": {"type": "string"},
    "required": False,
}
_address_part = {
    "name": "address-part",
    "values": [":localpart", ":domain", ":all"],
    "extension_values": {":user": "subaddress", ":detail": "subaddress"},
    "type": ["tag"],
    "required": False,
}
_match_type = sc.match_type


class AddressCommand(sc.TestCommand):
    args_definition = [
        _comparator,
        _address_part,
        _match_type,
        {"name": "header-list", "type": ["string", "stringlist"], "required": True},
        {"name": "key-list", "type": ["string", "stringlist"], "required": True},
    ]


class EnvelopeCommand(sc.TestCommand):
    extension = "envelope"
    args_definition = AddressCommand.args_definition


class HeaderCommand(sc.TestCommand):
    args_definition = [
        _comparator,
        _match_type,
        {"name": "header-names", "type": ["string", "stringlist"], "required": True},
        {"name": "key-list", "type": ["string", "stringlist"], "required": True},
    ]


class StringCommand(sc.TestCommand):
    """RFC 5229 section 5: ``string [COMPARATOR] [MATCH-TYPE] <source> <key-list>``."""

    extension = "variables"
    args_definition = [
        _comparator,
        _match_type,
        {"name": "source", "type": ["string", "stringlist"], "required": True},
        {"name": "key-list", "type": ["string", "stringlist"], "required": True},
    ]


class BodyCommand(sc.TestCommand):
    extension = "body"
    args_definition = [
        _comparator,
        _match_type,
        {
            "name": "body-transform",
            "values": [":raw", ":content", ":text"],
            "extra_arg": {"type": ["string", "stringlist"], "valid_for": [":content"]},
            "type": ["tag"],
            "required": False,
        },
        {"name": "key-list", "type": ["string", "stringlist"], "required": True},
    ]


class HasflagCommand(sc.HasflagCommand):
    args_definition = [
        _comparator,
        _match_type,
        {"name": "variable-list", "type": ["string", "stringlist"], "required": False},
        {"name": "list-of-flags", "type": ["string", "stringlist"], "required": True},
    ]


class ErejectCommand(sc.ActionCommand):
    extension = "ereject"
    args_definition = [{"name": "text", "type": ["string"], "required": True}]


class MailboxexistsCommand(sc.TestCommand):
    extension = "mailbox"
    args_definition = [
        {"name": "mailbox-names", "type": ["string", "stringlist"], "required": True}
    ]


sc.add_commands(
    [
        AddressCommand,
        EnvelopeCommand,
        HeaderCommand,
        StringCommand,
        BodyCommand,
        HasflagCommand,
        ErejectCommand,
        MailboxexistsCommand,
    ]
)


# -- the tree ---------------------------------------------------------------------------------


@attrs.frozen
class Node:
    """One command or test: ``name``; ``tags`` (``{":copy": True, ":comparator": "i;octet",
    ":count": "ge", ":days": 7, ":content": [...]}``: a tag maps to its argument, or True);
    ``args`` (positional arguments by sievelib's names: strings, string lists, numbers);
    ``tests`` (a test's sub-tests, an ``if``'s condition); ``block`` (the commands inside
    braces)."""

    name: str
    tags: dict = attrs.field(factory=dict, hash=False)
    args: dict = attrs.field(factory=dict, hash=False)
    tests: tuple = ()
    block: tuple = ()
    line: int = 0


@attrs.frozen
class Script:
    """A compiled script: the ``require``d extensions and the top-level commands."""

    require: frozenset
    commands: tuple
    size: int


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def unquote(token: str) -> str:
    """A string token's value: a quoted string loses its quotes and backslash escapes; a
    ``text:`` multi-line string its first line and final dot, and dot-stuffing."""
    if token.startswith('"'):
        return _ESCAPE.sub(r"\1", token[1:-1])
    if token[:5].lower() == "text:":
        body = token.split("\n", 1)[1] if "\n" in token else ""
        lines = body.replace("\r\n", "\n").split("\n")
        if lines and lines[-1].strip() == ".":
            lines = lines[:-1]
        out = [line[1:] if line.startswith("..") else line for line in lines]
        return "".join(line + "\r\n" for line in out)
    return token


_MULTIPLIERS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def number(token: str) -> int:
    if token[-1:].lower() in _MULTIPLIERS:
        return int(token[:-1]) * _MULTIPLIERS[token[-1].lower()]
    return int(token)


def _value(value, kind):
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str):
        if "number" in kind and value[:1].isdigit():
            return number(value)
        return unquote(value)
    return value


def _convert(command) -> Node:
    tags: dict = {}
    args: dict = {}
    tests: list = []
    for definition in command.args_definition:
        name = definition["name"]
        if name not in command.arguments:
            continue
        value = command.arguments[name]
        kind = definition["type"]
        if "tag" in kind:
            tag = value.lower()
            if name in command.extra_arguments:
                extra = definition["extra_arg"]["type"]
                extra = extra if isinstance(extra, list) else [extra]
                tags[tag] = _value(command.extra_arguments[name], extra)
            else:
                tags[tag] = True
            continue
        if kind in (["test"], ["testlist"]):
            tests.extend(value if isinstance(value, list) else [value])
            continue
        args[name] = _value(value, kind)
    return Node(
        name=command.name,
        tags=tags,
        args=args,
        tests=tuple(_convert(t) for t in tests),
        block=tuple(_convert(c) for c in command.children),
    )


def compile_script(text: str | bytes, max_bytes: int = DEFAULT_MAX_SCRIPT_BYTES) -> Script:
    """Parse and check ``text``; return a ``Script`` or raise ``SieveSyntaxError``."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > max_bytes:
        raise SieveSyntaxError(0, f"script is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SieveSyntaxError(line, "script is not valid UTF-8") from None
    try:
        return _compile(raw)
    except RecursionError:
        raise SieveSyntaxError(0, "script nested too deeply") from None


def _compile(raw: bytes) -> Script:
    parser = Parser()
    if not parser.parse(raw):
        line = parser.error_pos[0] if getattr(parser, "error_pos", None) else 0
        message = parser.error
        prefix = f"line {line}: "
        if message.startswith(prefix):
            message = message[len(prefix) :]
        raise SieveSyntaxError(line, message.removeprefix("parsing error: "))
    last = None
    for ttype, _start in _tokens(raw):
        last = ttype
    if last not in (None, "semicolon", "right_cbracket"):
        line = raw.rstrip().count(b"\n") + 1
        raise SieveSyntaxError(line, "end of script reached while ';' expected")
    commands = tuple(_convert(c) for c in parser.result)
    _number_lines(commands, iter(_command_lines(raw)))
    require: set[str] = set()
    _check(commands, require, top=True, seen_other=[False])
    _check_depth(commands, 0)
    return Script(frozenset(require), commands, len(raw))


_IDENTIFIER = re.compile(rb"[a-zA-Z_]\w*")


def _command_lines(raw: bytes) -> list[int]:
    """The line of every command, in source order: used for error messages only. Scans the
    tokens the way the parser does (comments, strings and tags skipped) and takes each
    identifier that starts a command or test."""
    lines = []
    for ttype, start in _tokens(raw):
        if ttype == "identifier":
            lines.append(raw[:start].count(b"\n") + 1)
    return lines


def _tokens(raw: bytes):
    from sievelib.parser import Lexer

    lexer = Lexer(Parser.lrules)
    try:
        for ttype, _value in lexer.scan(raw):
            if ttype in ("hash_comment", "bracket_comment"):
                continue
            yield ttype, lexer.pos
    except Exception:
        return


def _number_lines(commands, counter) -> None:
    """Give each node the line of its identifier: the parse tree lists commands and tests in
    source order (a command, then its tests, then its block), which is the order the
    identifiers appear in."""

    def walk(node):
        line = next(counter, 0)
        object.__setattr__(node, "line", line)
        for test in node.tests:
            walk(test)
        for child in node.block:
            walk(child)

    for node in commands:
        walk(node)


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Which extension each command or test needs (sievelib checks most; these we check too).
_NEEDS = {
    "fileinto": "fileinto",
    "reject": "reject",
    "ereject": "ereject",
    "envelope": "envelope",
    "body": "body",
    "set": "variables",
    "string": "variables",
    "setflag": "imap4flags",
    "addflag": "imap4flags",
    "removeflag": "imap4flags",
    "hasflag": "imap4flags",
    "vacation": "vacation",
    "mailboxexists": "mailbox",
}

_ACTIONS = {
    "keep",
    "discard",
    "stop",
    "redirect",
    "fileinto",
    "reject",
    "ereject",
    "vacation",
    "set",
    "setflag",
    "addflag",
    "removeflag",
}
_CONTROLS = {"if", "elsif", "else", "require"}
_TESTS = {
    "address",
    "allof",
    "anyof",
    "envelope",
    "exists",
    "false",
    "header",
    "not",
    "size",
    "true",
    "body",
    "string",
    "hasflag",
    "mailboxexists",
}


def _check(nodes, require: set, top: bool, seen_other: list) -> None:
    for node in nodes:
        if node.name == "require":
            if not top or seen_other[0]:
                raise SieveSyntaxError(node.line, "require must come before any other command")
            names = node.args["capabilities"]
            for name in names if isinstance(names, list) else [names]:
                if name not in EXTENSIONS:
                    raise SieveSyntaxError(node.line, f"unsupported extension {name!r}")
                require.add(name)
            continue
        seen_other[0] = True
        if node.name not in _ACTIONS | _CONTROLS | _TESTS:
            raise SieveSyntaxError(node.line, f"unsupported command {node.name!r}")
        _check_node(node, require)
        _check(node.tests, require, top=False, seen_other=seen_other)
        _check(node.block, require, top=False, seen_other=seen_other)


def _check_depth(nodes, depth: int) -> None:
    for node in nodes:
        if depth > MAX_NESTING:
            raise SieveSyntaxError(node.line, f"nested more than {MAX_NESTING} levels deep")
        _check_depth(node.tests, depth + 1)
        _check_depth(node.block, depth + 1)


def _check_node(node: Node, require: set) -> None:
    need = _NEEDS.get(node.name)
    if need and need not in require:
        raise SieveSyntaxError(node.line, f"{node.name} needs require {need!r}")
    if node.name not in _TESTS | _ACTIONS | _CONTROLS:
        raise SieveSyntaxError(node.line, f"unsupported test {node.name!r}")
    tags = node.tags
    comparator = tags.get(":comparator")
    if comparator is not None:
        if comparator not in COMPARATORS:
            raise SieveSyntaxError(node.line, f"unknown comparator {comparator!r}")
        if comparator == "i;ascii-numeric" and "comparator-i;ascii-numeric" not in require:
            raise SieveSyntaxError(
                node.line, "comparator i;ascii-numeric needs require 'comparator-i;ascii-numeric'"
            )
        if comparator == "i;ascii-numeric" and (":contains" in tags or ":matches" in tags):
            raise SieveSyntaxError(
                node.line, "comparator i;ascii-numeric supports only :is, :value and :count"
            )
    for relational in (":count", ":value"):
        if relational in tags:
            if "relational" not in require:
                raise SieveSyntaxError(node.line, f"{relational} needs require 'relational'")
            if tags[relational] not in RELATIONS:
                raise SieveSyntaxError(
                    node.line, f"{relational} needs one of {', '.join(RELATIONS)}"
                )
    if ":copy" in tags and "copy" not in require:
        raise SieveSyntaxError(node.line, ":copy needs require 'copy'")
    if ":flags" in tags and "imap4flags" not in require:
        raise SieveSyntaxError(node.line, ":flags needs require 'imap4flags'")
    if ":create" in tags and "mailbox" not in require:
        raise SieveSyntaxError(node.line, ":create needs require 'mailbox'")
    if (":user" in tags or ":detail" in tags) and "subaddress" not in require:
        raise SieveSyntaxError(node.line, ":user and :detail need require 'subaddress'")
    if ":seconds" in tags and "vacation-seconds" not in require:
        raise SieveSyntaxError(node.line, ":seconds needs require 'vacation-seconds'")
    if node.name == "set":
        if not _VARIABLE_NAME.match(node.args["name"]):
            raise SieveSyntaxError(node.line, f"invalid variable name {node.args['name']!r}")
    if node.name in ("setflag", "addflag", "removeflag") and "variable-name" in node.args:
        if not _VARIABLE_NAME.match(node.args["variable-name"]):
            raise SieveSyntaxError(
                node.line, f"invalid variable name {node.args['variable-name']!r}"
            )
    if node.name == "hasflag" and "variable-list" in node.args:
        names = node.args["variable-list"]
        for name in names if isinstance(names, list) else [names]:
            if not _VARIABLE_NAME.match(name):
                raise SieveSyntaxError(node.line, f"invalid variable name {name!r}")
    if node.name == "vacation":
        if ":days" in tags and ":seconds" in tags:
            raise SieveSyntaxError(node.line, "vacation takes :days or :seconds, not both")
        if (":days" in tags and not isinstance(tags[":days"], int)) or (
            ":seconds" in tags and not isinstance(tags[":seconds"], int)
        ):
            raise SieveSyntaxError(node.line, "vacation :days and :seconds take a number")
