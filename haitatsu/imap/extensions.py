"""IMAP extensions whose commands stand on their own: SORT and THREAD (RFC 5256), QUOTA
(RFC 9208), LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819), and MULTIAPPEND (RFC 3502).

``IMAPServer`` mixes this in; the handlers use its response helpers, its session view and its
SEARCH machinery (``_search``), and the store's metadata only (no message is opened).
"""

from __future__ import annotations

from ulid import ULID

from haitatsu.imap.search import BadCharset, compile_search
from haitatsu.imap.sort import (
    THREAD_ALGORITHMS,
    Item,
    format_threads,
    parse_sort_criteria,
    sort_items,
    thread_orderedsubject,
    thread_references,
)
from haitatsu.imap.wire import (
    Atom,
    IMAPSyntaxError,
    SpooledLiteral,
    String,
    format_uid_set,
    parse_date_time,
)
from haitatsu.interfaces import OverQuota
from haitatsu.storage.records import Delivery

_CHARSETS = (b"UTF-8", b"US-ASCII")


def _astring(token) -> bytes:
    if not isinstance(token, (Atom, String)):
        raise IMAPSyntaxError("string expected")
    return bytes(token)


class ExtensionsMixin:
    # -- SORT, THREAD (RFC 5256) -------------------------------------------------------------

    async def _sorted_candidates(self, tokens):
        """Run the search keys after the charset; return the matches as sort ``Item``s, or
        None when the charset is not one we search in (the caller answers BADCHARSET)."""
        if not tokens or not isinstance(tokens[0], (Atom, String)):
            raise IMAPSyntaxError("charset expected")
        charset = bytes(tokens[0]).upper()
        if charset not in _CHARSETS:
            return None
        if len(tokens) < 2:
            raise IMAPSyntaxError("missing search keys")
        try:
            program = compile_search(
                tokens[1:],
                self.view.uids,
                self.saved_uids,
                int(self.clock.seconds() * 1_000_000_000),
            )
        except BadCharset:
            return None
        if program.uses_modseq:
            self._enable_condstore()
        found = await self._search(program, need_info=True)
        return [
            Item(
                seq=c.seq,
                uid=c.row.uid,
                internal_date=c.row.internal_date,
                size=c.row.size_bytes,
                info=c.info,
            )
            for c in found
        ]

    async def _cmd_sort(self, tag, name, args, uid):
        if len(args) < 3:
            raise IMAPSyntaxError("SORT needs sort criteria, a charset and search keys")
        criteria = parse_sort_criteria(args[0])
        items = await self._sorted_candidates(list(args[1:]))
        if items is None:
            self.sendNegativeResponse(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            return
        ordered = sort_items(items, criteria)
        numbers = [b"%d" % (i.uid if uid else i.seq) for i in ordered]
        self.sendUntaggedResponse(b" ".join([b"SORT", *numbers]))
        self.sendPositiveResponse(tag, b"SORT completed")

    async def _cmd_thread(self, tag, name, args, uid):
        if len(args) < 3 or not isinstance(args[0], Atom):
            raise IMAPSyntaxError("THREAD needs an algorithm, a charset and search keys")
        algorithm = args[0].upper().decode("ascii", "replace")
        if algorithm not in THREAD_ALGORITHMS:
            raise IMAPSyntaxError("unknown threading algorithm")
        items = await self._sorted_candidates(list(args[1:]))
        if items is None:
            self.sendNegativeResponse(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            return
        if algorithm == "ORDEREDSUBJECT":
            roots = thread_orderedsubject(items)
        else:
            roots = thread_references(items)
        data = format_threads(roots, use_uid=uid)
        self.sendUntaggedResponse(b"THREAD " + data if data else b"THREAD")
        self.sendPositiveResponse(tag, b"THREAD completed")

    # -- QUOTA (RFC 9208) --------------------------------------------------------------------

    #: The one quota root: the mailbox's quota covers every folder.
    QUOTA_ROOT = b'""'

    async def _quota_line(self):
        """``QUOTA "" (STORAGE used limit)`` in KiB, or None when the mailbox has no limit."""
        mailbox = await self.store.get_mailbox(self.account.mailbox_id)
        if mailbox is None or mailbox.quota_bytes <= 0:
            return None
        used = (max(mailbox.used_bytes, 0) + 1023) // 1024
        return b"QUOTA %s (STORAGE %d %d)" % (self.QUOTA_ROOT, used, mailbox.quota_bytes // 1024)

    async def _cmd_getquotaroot(self, tag, name, args, uid):
        if len(args) != 1:
            raise IMAPSyntaxError("GETQUOTAROOT needs a mailbox")
        folder = await self.account.get_folder(self._mailbox_arg(args[0]))
        if folder is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        line = await self._quota_line()
        roots = [self._mailbox_out(folder.name)] + ([self.QUOTA_ROOT] if line else [])
        self.sendUntaggedResponse(b"QUOTAROOT " + b" ".join(roots))
        if line:
            self.sendUntaggedResponse(line)
        self.sendPositiveResponse(tag, b"GETQUOTAROOT completed")

    async def _cmd_getquota(self, tag, name, args, uid):
        if len(args) != 1:
            raise IMAPSyntaxError("GETQUOTA needs a quota root")
        line = await self._quota_line() if _astring(args[0]) == b"" else None
        if line is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such quota root")
            return
        self.sendUntaggedResponse(line)
        self.sendPositiveResponse(tag, b"GETQUOTA completed")

    async def _cmd_setquota(self, tag, name, args, uid):
        if len(args) != 2 or not isinstance(args[1], list):
            raise IMAPSyntaxError("SETQUOTA needs a quota root and a resource list")
        # No QUOTASET capability: quotas are the platform's to set (REST API), not the user's.
        self.sendNegativeResponse(tag, b"[NOPERM] Quotas are set by the administrator")

    # -- LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) ------------------------------------

    _SELECTION = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")

    def _parse_list_extended(self, args):
        """``(selection, reference, patterns, returns, status items)`` of an extended LIST."""
        args = list(args)
        selection = []
        if args and isinstance(args[0], list):
            for token in args.pop(0):
                option = _word(token)
                if option not in self._SELECTION:
                    raise IMAPSyntaxError("unknown LIST selection option")
                selection.append(option)
            if "RECURSIVEMATCH" in selection and len(set(selection) - {"REMOTE"}) < 2:
                raise IMAPSyntaxError("RECURSIVEMATCH needs another selection option")
        if len(args) < 2:
            raise IMAPSyntaxError("LIST needs a reference and a pattern")
        reference = self._mailbox_arg(args[0])
        if isinstance(args[1], list):
            if not args[1]:
                raise IMAPSyntaxError("empty pattern list")
            patterns = [self._mailbox_arg(p) for p in args[1]]
        else:
            patterns = [self._mailbox_arg(args[1])]
        rest = args[2:]
        returns, status_items = [], None
        if rest:
            if len(rest) != 2 or _word(rest[0]) != "RETURN" or not isinstance(rest[1], list):
                raise IMAPSyntaxError("expected RETURN (options)")
            tokens = list(rest[1])
            while tokens:
                option = _word(tokens.pop(0))
                if option == "STATUS":
                    if not tokens or status_items is not None:
                        raise IMAPSyntaxError("STATUS needs a list of items")
                    status_items = self._status_items(tokens.pop(0))
                elif option in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                    returns.append(option)
                else:
                    raise IMAPSyntaxError("unknown LIST return option")
        return selection, reference, patterns, returns, status_items

    async def _list_extended(self, tag, args):
        selection, reference, patterns, returns, status_items = self._parse_list_extended(args)
        folders = await self.store.list_folders(self.account.mailbox_id)
        subscribed = {f.name for f in folders if f.subscribed}
        seen = set()
        entries = []
        for pattern in patterns:
            if pattern == "" and not selection:
                if "" not in seen:
                    seen.add("")
                    self.sendUntaggedResponse(b'LIST (\\Noselect) "/" ""')
                continue
            for entry in await self.account.list_entries(reference, pattern):
                if entry.name not in seen:
                    seen.add(entry.name)
                    entries.append(entry)
        entries.sort(key=lambda e: (e.name != "INBOX", e.name))
        want_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
        for entry in entries:
            attributes = list(entry.attributes)
            extra = b""
            is_subscribed = entry.folder is not None and entry.name in subscribed
            if "SUBSCRIBED" in selection and not is_subscribed:
                below = any(n.startswith(entry.name + "/") for n in subscribed)
                if not ("RECURSIVEMATCH" in selection and below):
                    continue
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
            if "SPECIAL-USE" in selection and not (entry.folder and entry.folder.special_use):
                continue
            if want_subscribed and is_subscribed:
                attributes.append("\\Subscribed")
            self.sendUntaggedResponse(
                b'LIST (%s) "/" %s%s'
                % (" ".join(attributes).encode(), self._mailbox_out(entry.name), extra)
            )
            if status_items and entry.folder is not None:
                await self._send_status(entry.folder, status_items)
        self.sendPositiveResponse(tag, b"LIST completed")

    # -- MULTIAPPEND (RFC 3502) --------------------------------------------------------------

    @staticmethod
    def _append_messages(tokens):
        """``[(flags tokens or None, date bytes or None, SpooledLiteral)]`` from APPEND's
        arguments after the mailbox: one or more ``[flags] [date-time] literal``."""
        messages = []
        flags = date = None
        for token in tokens:
            if isinstance(token, SpooledLiteral):
                messages.append((flags, date, token))
                flags = date = None
            elif isinstance(token, list) and flags is None and date is None:
                flags = token
            elif isinstance(token, String) and date is None:
                date = parse_date_time(bytes(token))
            else:
                raise IMAPSyntaxError("invalid APPEND arguments")
        if flags is not None or date is not None or not messages:
            raise IMAPSyntaxError("APPEND needs the message as a literal")
        return messages

    async def _append_batch(self, tag, folder, messages, parse_flags):
        """Several messages in one APPEND: all stored in one transaction, or none."""
        trace_id = str(ULID())
        items = [
            (
                literal.path,
                Delivery(
                    mailbox_id=self.account.mailbox_id,
                    folder=folder.name,
                    flags=tuple(parse_flags(flags or [])),
                ),
                date,
            )
            for flags, date, literal in messages
        ]
        try:
            placed = await self.store.deliver_batch(items, trace_id)
        except OverQuota:
            self.sendNegativeResponse(tag, b"[OVERQUOTA] Mailbox is over its quota")
            return
        except ValueError:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        self._log.info(
            "APPEND of {count} messages to {folder}",
            count=len(placed),
            folder=folder.name,
            mailbox_id=self.account.mailbox_id,
            trace_id=trace_id,
        )
        if self.view is not None and self.view.folder.id == folder.id:
            await self._report_changes(own=True)
        uid_validity = folder.uid_validity
        if placed[0].folder_id != folder.id:
            current = await self.store.get_folder_by_id(placed[0].folder_id)
            uid_validity = current.uid_validity if current else uid_validity
        self.sendPositiveResponse(
            tag,
            b"[APPENDUID %d %s] APPEND completed"
            % (uid_validity, format_uid_set([mm.uid for mm in placed])),
        )


def _word(token) -> str:
    if not isinstance(token, Atom):
        raise IMAPSyntaxError("option expected")
    return token.upper().decode("ascii", "replace")
