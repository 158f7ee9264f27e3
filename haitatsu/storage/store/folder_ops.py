"""Folders as the REST API creates and changes them (API.md 1.6).

The IMAP operations (``FoldersMixin``) do the work; these add what the REST request carries
besides a name, the ``system`` flag, in the same transaction.
"""

from __future__ import annotations

from haitatsu.interfaces import FolderExists, FolderProtected
from haitatsu.storage.records import now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _folder, folder_name
from haitatsu.storage.store.labels import NoSuchMailbox


class FolderOpsMixin(StoreBase):
    def create_folder_with(self, mailbox_id, name, system=False):
        """``create_folder`` (parents included) that can mark the new folder ``system``.

        ``NoSuchMailbox``, ``FolderExists``, ``InvalidFolderName``."""
        name = folder_name(name)

        async def txn_fn(txn, notes):
            mailbox = await txn.execute_one("SELECT id FROM mailboxes WHERE id = ?", (mailbox_id,))
            if mailbox is None:
                raise NoSuchMailbox(mailbox_id)
            existing = await self._mailbox_folders(txn, mailbox_id)
            if name in existing:
                raise FolderExists(name)
            await self._create_parents(txn, mailbox_id, name, existing, notes)
            folder = await self._insert_folder(txn, mailbox_id, name, "", True, notes)
            if system:
                folder = await self._set_system(txn, folder.id, True)
            return folder

        return self._run_noting("create_folder_with", txn_fn)

    @staticmethod
    async def _set_system(txn, folder_id, system):
        await txn.execute(
            "UPDATE folders SET system = ?, updated_at = ? WHERE id = ?",
            (bool(system), now_ns(), folder_id),
        )
        row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        return _folder(row)

    def update_folder(self, folder_id, name=None, system=None):
        """Rename (system folders too, as the original's API allows, with the children) and/or
        set ``system``, in one transaction; None if there is no such folder. Writes
        ``folder.updated``."""
        new_name = folder_name(name) if name is not None else None

        async def txn_fn(txn, notes):
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE id = ?" + txn.for_update, (folder_id,)
            )
            if row is None:
                return None
            folder = _folder(row)
            if new_name is not None and new_name != folder.name:
                if folder.name == "INBOX":
                    # IMAP's RENAME INBOX moves its messages into a new folder; over REST a
                    # mailbox without INBOX could receive no mail, so it is refused.
                    raise FolderProtected(folder.name)
                folder = await self._rename_folder(txn, folder_id, new_name, True, notes)
            if system is not None and bool(system) != folder.system:
                folder = await self._set_system(txn, folder_id, system)
                await self._audit(txn, "folder.updated", "folder", folder_id, folder.mailbox_id)
            return folder

        return self._run_noting("update_folder", txn_fn)
