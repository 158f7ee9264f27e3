"""Messages as the REST API changes and searches them (API.md 1.7).

Flag changes, moves, deletes and restores of one mailbox_message, each one transaction that
announces what IMAP sessions must hear (``flags``, ``expunge``, ``exists``); and the message
list with every filter of the ``q`` search syntax as SQL, the free text through the engine's
full-text clause (FTS5 on SQLite, the tsvector on PostgreSQL).
"""

from __future__ import annotations

import attrs

from haitatsu.interfaces import NoSuchFolder
from haitatsu.storage.records import FLAG_COLUMNS, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _MSG_COLUMNS,
    _folder,
    _json,
    _live_entry,
    _mailbox_message,
    _message_info,
    _page_where,
)
from haitatsu.storage.store.labels import WrongMailbox
from haitatsu.storage.store.sync import record_vanished
from haitatsu.storage.views import (
    VIEW_MM_COLUMNS,
    MessageView,
    mailbox_message_object,
    message_object,
)


class UnknownSearchName(ValueError):
    """A ``folder:`` or ``label:`` search token names nothing in the mailbox."""


@attrs.frozen
class MessageQuery:
    """The filters of a message list (API.md 1.7): every one given must hold.

    Substring filters (``from_``, ``to``, ``cc``, ``subject``) compare without case; ``after``
    and ``before`` are inclusive bounds in ns on the message's Date, or its arrival without
    one; ``text`` is full-text search in web-search syntax.
    """

    folder_id: str | None = None
    label_id: str | None = None
    read: tuple[bool, ...] = ()
    flagged: tuple[bool, ...] = ()
    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: tuple[str, ...] = ()
    folder_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    has_attachment: bool = False
    plus_tags: tuple[str, ...] = ()
    after: tuple[int, ...] = ()
    before: tuple[int, ...] = ()
    text: str = ""


def _like(value: str) -> str:
    """A LIKE pattern for "contains ``value``", lowercased, with ``!`` as the escape."""
    escaped = value.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


class MessageOpsMixin(StoreBase):
    @staticmethod
    async def _mm_row(txn, mailbox_message_id, include_deleted=False):
        """The mailbox_message, locked for the change that follows; None if missing."""
        sql = f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?"
        if not include_deleted:
            sql += " AND mm.deleted_at IS NULL"
        row = await txn.execute_one(sql + txn.for_update, (mailbox_message_id,))
        return _mailbox_message(row) if row else None

    @staticmethod
    async def _reread(txn, mailbox_message_id):
        row = await txn.execute_one(
            f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?",
            (mailbox_message_id,),
        )
        return _mailbox_message(row)

    def update_message(self, mailbox_message_id, **changes):
        """Set ``read``, ``flagged``, ``answered``, ``draft`` (bools) and/or ``keywords`` (the
        whole list) of a live message; fire with the row, or None if there is none. A change
        takes a new MODSEQ and is announced to IMAP sessions like a STORE."""
        allowed = {"read", "flagged", "answered", "draft", "keywords"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}")

        async def txn_fn(txn):
            mm = await self._mm_row(txn, mailbox_message_id)
            if mm is None:
                return None
            values = {c: getattr(mm, c) for c in FLAG_COLUMNS.values()}
            keywords = list(mm.keywords)
            for name, value in changes.items():
                if name == "keywords":
                    keywords = list(dict.fromkeys(value))
                else:
                    values[name] = bool(value)
            if values == {c: getattr(mm, c) for c in FLAG_COLUMNS.values()} and keywords == list(
                mm.keywords
            ):
                return mm
            modseq = await self._bump_modseq(txn, mm.folder_id)
            sets = ", ".join(f"{c} = ?" for c in values)
            await txn.execute(
                f"UPDATE mailbox_messages SET {sets}, keywords = ?, modseq = ?, updated_at = ? "
                "WHERE id = ?",
                (*values.values(), _json(keywords), modseq, now_ns(), mm.id),
            )
            mm = await self._reread(txn, mm.id)
            await self._announce(
                txn,
                mm.mailbox_id,
                {
                    "type": "flags",
                    "folder_id": mm.folder_id,
                    "uid": mm.uid,
                    "id": mm.id,
                    "flags": list(mm.flags),
                },
            )
            return mm

        return self._run("update_message", txn_fn)

    async def _place(self, txn, mm, folder):
        """Move a row (live or soft-deleted) to ``folder`` with a new UID; a soft-deleted row
        is undeleted and its size counted in the mailbox's usage again (API.md 5.6)."""
        uid, modseq = await self._allocate_uid(txn, folder.id)
        now = now_ns()
        await txn.execute(
            "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, deleted_at = NULL, "
            "updated_at = ? WHERE id = ?",
            (folder.id, uid, modseq, now, mm.id),
        )
        if mm.deleted_at is None:
            # Its UID leaves the old folder (even when that is ``folder``: the UID is new).
            await record_vanished(txn, mm.folder_id, [mm.uid])
            await self._announce(
                txn,
                mm.mailbox_id,
                {"type": "expunge", "folder_id": mm.folder_id, "uid": mm.uid, "id": mm.id},
            )
        else:
            await txn.execute(
                "UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ?",
                (mm.size_bytes, mm.mailbox_id),
            )
        await self._announce(
            txn, mm.mailbox_id, {"type": "exists", "folder_id": folder.id, "uid": uid, "id": mm.id}
        )
        return await self._reread(txn, mm.id)

    def move_message(self, mailbox_message_id, folder_id):
        """Move to the folder (a new UID, undeleting a soft-deleted row); fire with the row or
        None if there is no such row. ``NoSuchFolder``; ``WrongMailbox`` for a folder of
        another mailbox."""

        async def txn_fn(txn):
            mm = await self._mm_row(txn, mailbox_message_id, include_deleted=True)
            if mm is None:
                return None
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                raise NoSuchFolder(folder_id)
            folder = _folder(row)
            if folder.mailbox_id != mm.mailbox_id:
                raise WrongMailbox(folder_id)
            return await self._place(txn, mm, folder)

        return self._run("move_message", txn_fn)

    def _to_special(self, desc, mailbox_message_id, find, include_deleted):
        async def txn_fn(txn):
            mm = await self._mm_row(txn, mailbox_message_id, include_deleted=include_deleted)
            if mm is None:
                return None
            row = await txn.execute_one(
                f"SELECT * FROM folders WHERE mailbox_id = ? AND {find}", (mm.mailbox_id,)
            )
            if row is None:
                raise NoSuchFolder(find)
            folder = _folder(row)
            if folder.id == mm.folder_id and mm.deleted_at is None:
                return mm  # already there
            return await self._place(txn, mm, folder)

        return self._run(desc, txn_fn)

    def trash_message(self, mailbox_message_id):
        """Move a live message to Trash (``DELETE /messages/:id``); None if there is none;
        ``NoSuchFolder`` if the mailbox has no Trash. Already in Trash: unchanged."""
        return self._to_special(
            "trash_message", mailbox_message_id, "special_use = '\\Trash'", include_deleted=False
        )

    def restore_message(self, mailbox_message_id):
        """Move to INBOX, undeleting it if soft-deleted; None if there is no such row."""
        return self._to_special(
            "restore_message", mailbox_message_id, "UPPER(name) = 'INBOX'", include_deleted=True
        )

    def soft_delete_message(self, mailbox_message_id):
        """Soft-delete a live message, releasing its quota (``?force=true``); fire with the
        row or None if there is no live one."""

        async def txn_fn(txn):
            mm = await self._mm_row(txn, mailbox_message_id)
            if mm is None:
                return None
            now = now_ns()
            await txn.execute(
                "UPDATE mailbox_messages SET deleted_at = ?, updated_at = ? WHERE id = ?",
                (now, now, mm.id),
            )
            await txn.execute(
                "UPDATE mailboxes SET used_bytes = used_bytes - ? WHERE id = ?",
                (mm.size_bytes, mm.mailbox_id),
            )
            await record_vanished(txn, mm.folder_id, [mm.uid])
            await self._announce(
                txn,
                mm.mailbox_id,
                {"type": "expunge", "folder_id": mm.folder_id, "uid": mm.uid, "id": mm.id},
            )
            return await self._reread(txn, mm.id)

        return self._run("soft_delete_message", txn_fn)

    # -- reading with labels --------------------------------------------------------------------

    def get_message_entry(self, mailbox_message_id):
        """``(MailboxMessage, MessageInfo, [Label])`` of a live message, or None."""

        async def txn_fn(txn):
            entry = await _live_entry(txn, mailbox_message_id)
            if entry is None:
                return None
            labels = await self._labels_of(txn, [mailbox_message_id])
            return (*entry, labels.get(mailbox_message_id, []))

        return self._run("get_message_entry", txn_fn, readonly=True)

    def get_view_entry(self, mailbox_message_id):
        """The ``MessageView`` of a live message, or None."""

        async def txn_fn(txn):
            rows = await txn.execute_values(
                f"SELECT {VIEW_MM_COLUMNS}, {_view_column(txn)} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE mm.id = ? "
                "AND mm.deleted_at IS NULL",
                (mailbox_message_id,),
            )
            if not rows:
                return None
            [view] = await _views(txn, rows)
            view.labels = (await self._labels_of(txn, [view.id])).get(view.id, [])
            return view

        return self._run("get_view_entry", txn_fn, readonly=True)

    def query_messages(self, mailbox_id, query=None, limit=50, before=None):
        """A page of the mailbox's live messages matching ``query`` (a ``MessageQuery``), newest
        first, as ``(MailboxMessage, MessageInfo, [Label])``. ``UnknownSearchName`` when a
        ``folder:`` or ``label:`` name does not exist in the mailbox."""
        query = query or MessageQuery()

        async def txn_fn(txn):
            where, params = await self._query_where(txn, mailbox_id, query, before)
            rows = await txn.execute(
                _page_select(f"{_MM_COLUMNS}, {_MSG_COLUMNS}", where), (*params, limit)
            )
            found = [(_mailbox_message(r), _message_info(r)) for r in rows]
            labels = await self._labels_of(txn, [mm.id for mm, _ in found])
            return [(mm, info, labels.get(mm.id, [])) for mm, info in found]

        return self._run("query_messages", txn_fn, readonly=True)

    def query_message_views(self, mailbox_id, query=None, limit=50, before=None):
        """``query_messages`` for the REST list: the same page as ``MessageView``s, read from
        the placements' columns and each message's stored object, not its columns."""
        query = query or MessageQuery()

        async def txn_fn(txn):
            where, params = await self._query_where(txn, mailbox_id, query, before)
            rows = await txn.execute_values(
                _page_select(f"{VIEW_MM_COLUMNS}, {_view_column(txn)}", where), (*params, limit)
            )
            views = await _views(txn, rows)
            labels = await self._labels_of(txn, [view.id for view in views])
            for view in views:
                view.labels = labels.get(view.id, [])
            return views

        return self._run("query_message_views", txn_fn, readonly=True)

    async def _query_where(self, txn, mailbox_id, query, before):
        """The WHERE terms and parameters of a message list (``query_messages``)."""
        where, params = _page_where("mm.", before)
        where += ["mm.mailbox_id = ?", "mm.deleted_at IS NULL"]
        params.append(mailbox_id)

        def add(sql, *values):
            where.append(sql)
            params.extend(values)

        if query.folder_id:
            add("mm.folder_id = ?", query.folder_id)
        for name in query.folder_names:
            folder = await self._get_folder(txn, mailbox_id, name)
            if folder is None:
                raise UnknownSearchName("folder not found")
            add("mm.folder_id = ?", folder.id)
        label_ids = [query.label_id] if query.label_id else []
        for name in query.label_names:
            row = await txn.execute_one(
                "SELECT id FROM labels WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
            )
            if row is None:
                raise UnknownSearchName("label not found")
            label_ids.append(row["id"])
        for label_id in label_ids:
            add(
                "mm.id IN (SELECT mailbox_message_id FROM message_labels WHERE label_id = ?)",
                label_id,
            )
        for value in query.read:
            add("mm.read = ?", value)
        for value in query.flagged:
            add("mm.flagged = ?", value)
        for column, values in (
            ("m.from_addresses", query.from_),
            ("m.to_addresses", query.to),
            ("m.cc_addresses", query.cc),
            ("m.subject", query.subject),
        ):
            for value in values:
                add(f"LOWER({column}) LIKE ? ESCAPE '!'", _like(value))
        if query.has_attachment:
            add("m.attachments <> ?", "[]")
        for tag in query.plus_tags:
            add("LOWER(mm.plus_tag) = ?", tag.lower())
        for bound in query.after:
            add("COALESCE(m.date, mm.created_at) >= ?", bound)
        for bound in query.before:
            add("COALESCE(m.date, mm.created_at) <= ?", bound)
        if query.text.strip():
            match, match_params = txn.search_clause("m", query.text)
            add(match, *match_params)
        return where, params


def _page_select(columns: str, where: list[str]) -> str:
    """A page of the REST message list: ``columns`` of the placements matching ``where``
    (joined with their messages), newest first, ``LIMIT ?``."""
    return (
        f"SELECT {columns} FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
        "WHERE " + " AND ".join(where) + " ORDER BY mm.created_at DESC, mm.id DESC LIMIT ?"
    )


def _view_column(txn) -> str:
    """The stored object as the view row's last column: as bytes from SQLite (no decoding to
    ``str`` and encoding back), as text from PostgreSQL."""
    return "CAST(m.view_json AS BLOB)" if txn.engine.name == "sqlite" else "m.view_json"


async def _views(txn, rows) -> list[MessageView]:
    """``MessageView``s (without labels) of rows of ``VIEW_MM_COLUMNS`` plus the stored
    object: that object where there is one, else the ``message`` object built from the
    message's columns (messages stored before schema 036), read in one more statement."""
    missing = sorted({r[2] for r in rows if r[-1] is None})
    built = {}
    for start in range(0, len(missing), 500):
        clause, params = txn.in_clause("m.id", missing[start : start + 500])
        for r in await txn.execute(f"SELECT {_MSG_COLUMNS} FROM messages m WHERE {clause}", params):
            built[r["m_id"]] = message_object(_message_info(r))
    return [
        MessageView(
            r[0],
            r[15],
            mailbox_message_object(r),
            r[-1] if r[-1] is not None else built[r[2]],
        )
        for r in rows
    ]
