"""Folders: listing, creating, renaming, deleting, subscribing; copying and moving messages."""

from __future__ import annotations

from haitatsu.interfaces import (
    FolderExists,
    FolderHasChildren,
    FolderProtected,
    InvalidFolderName,
    NoSuchFolder,
    OverQuota,
)
from haitatsu.storage.records import (
    CopyResult,
    now_ns,
)
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _empty_copy_result,
    _folder,
    _mailbox_message,
    folder_name,
    new_id,
)
from haitatsu.storage.store.sync import record_vanished


class FoldersMixin(StoreBase):
    def list_folders(self, mailbox_id):
        async def txn_fn(txn):
            rows = await txn.execute("SELECT * FROM folders WHERE mailbox_id = ?", (mailbox_id,))
            folders = [_folder(r) for r in rows]
            return sorted(folders, key=lambda f: (f.name.upper() != "INBOX", f.name))

        return self._run("list_folders", txn_fn, readonly=True)

    @staticmethod
    async def _get_folder(txn, mailbox_id, name):
        if name.upper() == "INBOX":
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND UPPER(name) = 'INBOX'",
                (mailbox_id,),
            )
        else:
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
            )
        return _folder(row) if row else None

    def get_folder(self, mailbox_id, name):
        return self._run("get_folder", self._get_folder, mailbox_id, name, readonly=True)

    def get_folder_by_id(self, folder_id):
        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            return _folder(row) if row else None

        return self._run("get_folder_by_id", txn_fn, readonly=True)

    @staticmethod
    async def _mailbox_folders(txn, mailbox_id) -> dict:
        """The mailbox's folders by name. Folder trees are small; walking them in Python keeps
        the hierarchy rules (``/``, INBOX's case) in one place and out of dialect SQL."""
        rows = await txn.execute("SELECT * FROM folders WHERE mailbox_id = ?", (mailbox_id,))
        return {row["name"]: _folder(row) for row in rows}

    @staticmethod
    async def _next_uid_validity(txn, mailbox_id) -> int:
        """Now in unix seconds, but always above any UIDVALIDITY the mailbox handed out
        before: a re-created folder must not look like the old one to a caching client."""
        row = await txn.execute_one(
            "SELECT last_uid_validity FROM mailboxes WHERE id = ?", (mailbox_id,)
        )
        if row is None:
            raise NoSuchFolder(f"no mailbox {mailbox_id}")
        # Folders made with the mailbox (or before the counter existed) are not in it.
        current = await txn.execute_one(
            "SELECT MAX(uid_validity) AS v FROM folders WHERE mailbox_id = ?", (mailbox_id,)
        )
        floor = max(row["last_uid_validity"], current["v"] or 0)
        value = max(now_ns() // 1_000_000_000, floor + 1)
        await txn.execute(
            "UPDATE mailboxes SET last_uid_validity = ? WHERE id = ?", (value, mailbox_id)
        )
        return value

    async def _insert_folder(self, txn, mailbox_id, name, special_use, subscribed, notes):
        folder_id = new_id()
        now = now_ns()
        uid_validity = await self._next_uid_validity(txn, mailbox_id)
        await txn.execute(
            "INSERT INTO folders (id, mailbox_id, name, system, special_use, uid_validity, "
            "uid_next, highest_modseq, subscribed, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?)",
            (folder_id, mailbox_id, name, False, special_use, uid_validity, subscribed, now, now),
        )
        await self._audit(txn, "folder.created", "folder", folder_id, mailbox_id)
        notes.append((mailbox_id, {"type": "folder_created", "folder_id": folder_id, "name": name}))
        row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        return _folder(row)

    async def _create_parents(self, txn, mailbox_id, name, existing, notes):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in existing:
                existing[parent] = await self._insert_folder(
                    txn, mailbox_id, parent, "", True, notes
                )

    def create_folder(self, mailbox_id, name, special_use="", subscribed=True, create_parents=True):
        name = folder_name(name)

        async def txn_fn(txn, notes):
            existing = await self._mailbox_folders(txn, mailbox_id)
            if name in existing:
                raise FolderExists(name)
            if create_parents:
                await self._create_parents(txn, mailbox_id, name, existing, notes)
            return await self._insert_folder(
                txn, mailbox_id, name, special_use or "", bool(subscribed), notes
            )

        return self._run_noting("create_folder", txn_fn)

    def delete_folder(self, folder_id, refuse_children=True):
        async def txn_fn(txn, notes):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return None
            folder = _folder(row)
            if folder.system or folder.name == "INBOX":
                raise FolderProtected(folder.name)
            existing = await self._mailbox_folders(txn, folder.mailbox_id)
            if refuse_children and any(n.startswith(folder.name + "/") for n in existing):
                raise FolderHasChildren(folder.name)
            now = now_ns()
            live = await txn.execute(
                "SELECT COALESCE(SUM(size_bytes), 0) AS total FROM mailbox_messages "
                "WHERE folder_id = ? AND deleted_at IS NULL",
                (folder_id,),
            )
            await txn.execute(
                "UPDATE mailboxes SET used_bytes = used_bytes - ?, updated_at = ? WHERE id = ?",
                (live[0]["total"], now, folder.mailbox_id),
            )
            # The rows stay, soft-deleted, for restore and the purge; they need a folder to
            # belong to once this one is gone (the foreign key would cascade them away).
            home = next(
                (f for f in existing.values() if f.special_use == "\\Trash"), None
            ) or existing.get("INBOX")
            rows = await txn.execute(
                "SELECT id FROM mailbox_messages WHERE folder_id = ? ORDER BY uid", (folder_id,)
            )
            if rows and home is not None:
                first, modseq = await self._allocate_uids(txn, home.id, len(rows))
                for i, r in enumerate(rows):
                    await txn.execute(
                        "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, "
                        "deleted_at = COALESCE(deleted_at, ?), updated_at = ? WHERE id = ?",
                        (home.id, first + i, modseq, now, now, r["id"]),
                    )
            await txn.execute("DELETE FROM expunged_uids WHERE folder_id = ?", (folder_id,))
            await txn.execute("DELETE FROM folders WHERE id = ?", (folder_id,))
            await self._audit(txn, "folder.deleted", "folder", folder_id, folder.mailbox_id)
            notes.append(
                (
                    folder.mailbox_id,
                    {"type": "folder_deleted", "folder_id": folder_id, "name": folder.name},
                )
            )
            return folder

        return self._run_noting("delete_folder", txn_fn)

    def rename_folder(self, folder_id, new_name, allow_system=False):
        new_name = folder_name(new_name)

        async def txn_fn(txn, notes):
            return await self._rename_folder(txn, folder_id, new_name, allow_system, notes)

        return self._run_noting("rename_folder", txn_fn)

    async def _rename_folder(self, txn, folder_id, new_name, allow_system, notes):
        """``rename_folder`` in the caller's transaction (the REST PATCH also sets ``system``
        in the same one); ``new_name`` is already checked by ``folder_name``."""
        row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        if row is None:
            return None
        folder = _folder(row)
        existing = await self._mailbox_folders(txn, folder.mailbox_id)
        if new_name in existing:
            raise FolderExists(new_name)
        if folder.name == "INBOX":
            return await self._rename_inbox(txn, folder, new_name, existing, notes)
        if folder.system and not allow_system:
            raise FolderProtected(folder.name)
        prefix = folder.name + "/"
        if new_name.startswith(prefix):
            raise InvalidFolderName("a folder cannot be moved below itself")
        renames = [(folder, new_name)] + [
            (f, new_name + "/" + n[len(prefix) :])
            for n, f in sorted(existing.items())
            if n.startswith(prefix)
        ]
        for _, target in renames:
            if target in existing:
                raise FolderExists(target)
        await self._create_parents(txn, folder.mailbox_id, new_name, existing, notes)
        now = now_ns()
        for f, target in renames:
            await txn.execute(
                "UPDATE folders SET name = ?, updated_at = ? WHERE id = ?", (target, now, f.id)
            )
            await self._audit(txn, "folder.updated", "folder", f.id, f.mailbox_id)
            notes.append(
                (
                    f.mailbox_id,
                    {"type": "folder_renamed", "folder_id": f.id, "name": target},
                )
            )
        row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        return _folder(row)

    async def _rename_inbox(self, txn, inbox, new_name, existing, notes):
        """RFC 3501 6.3.5: INBOX keeps its name; its messages move to a new folder."""
        await self._create_parents(txn, inbox.mailbox_id, new_name, existing, notes)
        target = await self._insert_folder(txn, inbox.mailbox_id, new_name, "", True, notes)
        rows = await txn.execute(
            f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
            "AND mm.deleted_at IS NULL ORDER BY mm.uid",
            (inbox.id,),
        )
        await self._move_rows(txn, inbox, target, [_mailbox_message(r) for r in rows], notes)
        row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (target.id,))
        return _folder(row)

    def set_folder_subscribed(self, folder_id, subscribed):
        async def txn_fn(txn, notes):
            await txn.execute(
                "UPDATE folders SET subscribed = ?, updated_at = ? WHERE id = ?",
                (bool(subscribed), now_ns(), folder_id),
            )
            if txn.rowcount == 0:
                return None
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            return _folder(row)

        return self._run_noting("set_folder_subscribed", txn_fn)

    @staticmethod
    async def _copy_endpoints(txn, folder_id, uids, target_folder_id):
        """The source folder, target folder and the source's live rows among ``uids``."""
        source = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        target = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (target_folder_id,))
        if source is None or target is None:
            raise NoSuchFolder(target_folder_id if source else folder_id)
        source, target = _folder(source), _folder(target)
        if source.mailbox_id != target.mailbox_id:
            raise NoSuchFolder(target_folder_id)
        rows = []
        for start in range(0, len(uids), 500):
            clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
            found = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                (folder_id, *params),
            )
            rows.extend(_mailbox_message(r) for r in found)
        return source, target, rows

    def copy_messages(self, folder_id, uids, target_folder_id):
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn, notes):
            source, target, rows = await self._copy_endpoints(
                txn, folder_id, uids, target_folder_id
            )
            if not rows:
                return CopyResult(target.id, target.uid_validity)
            total = sum(mm.size_bytes for mm in rows)
            # The copies are charged as one amount: all of them fit, or none is made.
            [refused] = await self._charge_quota(txn, [source.mailbox_id], total)
            if refused:
                raise OverQuota(f"{source.mailbox_id} ({refused} quota)")
            new_uids = await self._copy_rows(txn, target, rows, notes)
            return CopyResult(
                target.id, target.uid_validity, tuple(mm.uid for mm in rows), tuple(new_uids)
            )

        if not uids:
            return self.get_folder_by_id(target_folder_id).addCallback(_empty_copy_result)
        return self._run_noting("copy_messages", txn_fn)

    async def _copy_rows(self, txn, target, rows, notes) -> list[int]:
        """Copy the live rows ``rows`` into ``target`` (quota already charged); return the new
        UIDs in the order of ``rows``. Each copy shares the message row (and its blobs)."""
        first, modseq = await self._allocate_uids(txn, target.id, len(rows))
        now = now_ns()
        new_uids = []
        for i, mm in enumerate(rows):
            row_id, uid = new_id(), first + i
            # One statement per row, copying every column but identity and placement.
            await txn.execute(
                "INSERT INTO mailbox_messages (id, mailbox_id, message_id, folder_id, uid, "
                "modseq, original_rcpt, base_rcpt, plus_tag, resolved_route_id, read, "
                "flagged, answered, draft, imap_deleted, keywords, internal_date, size_bytes, "
                "created_at, updated_at) SELECT ?, mailbox_id, message_id, ?, ?, ?, "
                "original_rcpt, base_rcpt, plus_tag, resolved_route_id, read, flagged, "
                "answered, draft, imap_deleted, keywords, internal_date, size_bytes, ?, ? "
                "FROM mailbox_messages WHERE id = ?",
                (row_id, target.id, uid, modseq, now, now, mm.id),
            )
            new_uids.append(uid)
            notes.append(
                (
                    mm.mailbox_id,
                    {"type": "exists", "folder_id": target.id, "uid": uid, "id": row_id},
                )
            )
        return new_uids

    def move_messages(self, folder_id, uids, target_folder_id):
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn, notes):
            source, target, rows = await self._copy_endpoints(
                txn, folder_id, uids, target_folder_id
            )
            return await self._move_rows(txn, source, target, rows, notes)

        if not uids:
            return self.get_folder_by_id(target_folder_id).addCallback(_empty_copy_result)
        return self._run_noting("move_messages", txn_fn)

    async def _move_rows(self, txn, source, target, rows, notes) -> CopyResult:
        if not rows:
            return CopyResult(target.id, target.uid_validity)
        first, modseq = await self._allocate_uids(txn, target.id, len(rows))
        now = now_ns()
        new_uids = []
        for i, mm in enumerate(rows):
            uid = first + i
            await txn.execute(
                "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, updated_at = ? "
                "WHERE id = ?",
                (target.id, uid, modseq, now, mm.id),
            )
            new_uids.append(uid)
            notes.append(
                (
                    mm.mailbox_id,
                    {"type": "expunge", "folder_id": source.id, "uid": mm.uid, "id": mm.id},
                )
            )
            notes.append(
                (
                    mm.mailbox_id,
                    {"type": "exists", "folder_id": target.id, "uid": uid, "id": mm.id},
                )
            )
        await record_vanished(txn, source.id, [mm.uid for mm in rows])
        return CopyResult(
            target.id, target.uid_validity, tuple(mm.uid for mm in rows), tuple(new_uids)
        )
