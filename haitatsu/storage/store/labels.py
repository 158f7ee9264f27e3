"""Labels and message-label links (API.md 1.6, 1.7).

A label belongs to one mailbox and is a second view of its messages: it has a UIDVALIDITY
(from the mailbox's folder counter, so it never equals a folder's or an earlier label's) and a
UID counter of its own, and each link takes the next UID, as IMAP's ``Labels/<name>`` needs.

Every change is announced on the change bus with the label's id (``label_created``,
``label_renamed``, ``label_deleted``, ``labeled``, ``unlabeled``), so an IMAP session showing
the label as a folder hears it (``label_views.py`` has the rest of that view).
"""

from __future__ import annotations

from haitatsu.storage.records import Label, MessageLabel, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import new_id


class NoSuchMailbox(LookupError):
    """The mailbox a new folder or label should belong to does not exist."""


class NoSuchMessage(LookupError):
    """No live mailbox_message has this id."""


class NoSuchLabel(LookupError):
    """No label has this id (or, at delivery, this name in the mailbox)."""


class WrongMailbox(ValueError):
    """A folder or label of another mailbox than the message's."""


def _label(row) -> Label:
    return Label(
        id=row["id"],
        mailbox_id=row["mailbox_id"],
        name=row["name"],
        uid_validity=row["uid_validity"],
        uid_next=row["uid_next"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        subscribed=bool(row["subscribed"]),
    )


def _message_label(row) -> MessageLabel:
    return MessageLabel(
        id=row["id"],
        mailbox_message_id=row["mailbox_message_id"],
        label_id=row["label_id"],
        uid=row["uid"],
        created_at=row["created_at"],
    )


class LabelsMixin(StoreBase):
    def create_label(self, mailbox_id, name):
        """A new label (``Conflict`` if the mailbox has one of that name, ``NoSuchMailbox``);
        writes ``label.created``."""
        label_id = new_id()

        async def txn_fn(txn):
            exists = await txn.execute_one("SELECT id FROM mailboxes WHERE id = ?", (mailbox_id,))
            if exists is None:
                raise NoSuchMailbox(mailbox_id)
            uid_validity = await self._next_uid_validity(txn, mailbox_id)
            now = now_ns()
            await txn.execute(
                "INSERT INTO labels (id, mailbox_id, name, uid_validity, uid_next, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (label_id, mailbox_id, name, uid_validity, now, now),
            )
            await self._audit(txn, "label.created", "label", label_id, mailbox_id)
            await self._announce(
                txn, mailbox_id, {"type": "label_created", "label_id": label_id, "name": name}
            )
            return await self._get_label(txn, label_id)

        return self._run("create_label", txn_fn)

    @staticmethod
    async def _get_label(txn, label_id, lock=False):
        row = await txn.execute_one(
            "SELECT * FROM labels WHERE id = ?" + (txn.for_update if lock else ""), (label_id,)
        )
        return _label(row) if row else None

    def get_label(self, label_id):
        return self._run("get_label", self._get_label, label_id, readonly=True)

    def list_labels(self, mailbox_id):
        """Every label of the mailbox (a handful: the API pages them in memory)."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT * FROM labels WHERE mailbox_id = ? ORDER BY name", (mailbox_id,)
            )
            return [_label(r) for r in rows]

        return self._run("list_labels", txn_fn, readonly=True)

    def rename_label(self, label_id, name):
        """None if there is no such label; ``Conflict`` if the name is taken."""

        async def txn_fn(txn):
            await txn.execute(
                "UPDATE labels SET name = ?, updated_at = ? WHERE id = ?",
                (name, now_ns(), label_id),
            )
            if txn.rowcount == 0:
                return None
            label = await self._get_label(txn, label_id)
            await self._audit(txn, "label.updated", "label", label_id, label.mailbox_id)
            await self._announce(
                txn, label.mailbox_id, {"type": "label_renamed", "label_id": label_id, "name": name}
            )
            return label

        return self._run("rename_label", txn_fn)

    def delete_label(self, label_id):
        """Remove every link to the label, then the label; None if there is no such label."""

        async def txn_fn(txn):
            label = await self._get_label(txn, label_id, lock=True)
            if label is None:
                return None
            await txn.execute("DELETE FROM message_labels WHERE label_id = ?", (label_id,))
            await txn.execute("DELETE FROM labels WHERE id = ?", (label_id,))
            await self._audit(txn, "label.deleted", "label", label_id, label.mailbox_id)
            await self._announce(
                txn,
                label.mailbox_id,
                {"type": "label_deleted", "label_id": label_id, "name": label.name},
            )
            return label

        return self._run("delete_label", txn_fn)

    # -- links ------------------------------------------------------------------------------

    async def _link_label(self, txn, mailbox_message_id, label_id) -> tuple[MessageLabel, bool]:
        """Attach the label in the caller's transaction; return the link and whether it is
        new. The label's row is locked first: its UID counter is read, then written."""
        await self._get_label(txn, label_id, lock=True)
        row = await txn.execute_one(
            "SELECT * FROM message_labels WHERE mailbox_message_id = ? AND label_id = ?",
            (mailbox_message_id, label_id),
        )
        if row is not None:
            return _message_label(row), False
        await txn.execute(
            "UPDATE labels SET uid_next = uid_next + 1, updated_at = ? WHERE id = ?",
            (now_ns(), label_id),
        )
        label = await self._get_label(txn, label_id)
        link_id = new_id()
        await txn.execute(
            "INSERT INTO message_labels (id, mailbox_message_id, label_id, uid, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (link_id, mailbox_message_id, label_id, label.uid_next - 1, now_ns()),
        )
        row = await txn.execute_one("SELECT * FROM message_labels WHERE id = ?", (link_id,))
        link = _message_label(row)
        await self._announce(
            txn,
            label.mailbox_id,
            {"type": "labeled", "label_id": label_id, "id": mailbox_message_id, "uid": link.uid},
        )
        return link, True

    async def _attach_label(self, txn, mm, label_id) -> MessageLabel:
        """Attach a label to the placement ``mm`` a delivery just made, in its transaction;
        ``KeyError`` (a missing folder's refusal) when the label is gone or belongs to another
        mailbox."""
        label = await self._get_label(txn, label_id, lock=True)
        if label is None or label.mailbox_id != mm.mailbox_id:
            raise KeyError(f"no label {label_id} in {mm.mailbox_id}")
        link, _ = await self._link_label(txn, mm.id, label_id)
        return link

    def add_message_label(self, mailbox_message_id, label_id):
        """Attach a label to a live message, idempotently: fire with ``(link, created)``.

        ``NoSuchMessage``, ``NoSuchLabel``, or ``WrongMailbox`` for a label of another mailbox.
        """

        async def txn_fn(txn):
            mm = await txn.execute_one(
                "SELECT id, mailbox_id FROM mailbox_messages WHERE id = ? AND deleted_at IS NULL",
                (mailbox_message_id,),
            )
            if mm is None:
                raise NoSuchMessage(mailbox_message_id)
            label = await self._get_label(txn, label_id)
            if label is None:
                raise NoSuchLabel(label_id)
            if label.mailbox_id != mm["mailbox_id"]:
                raise WrongMailbox(label_id)
            return await self._link_label(txn, mailbox_message_id, label_id)

        return self._run("add_message_label", txn_fn)

    def remove_message_label(self, mailbox_message_id, label_id):
        """Detach the label if attached; fire with whether a link went."""

        async def txn_fn(txn):
            label = await self._get_label(txn, label_id, lock=True)
            if label is None:
                return False
            return await self._unlink_label(txn, label, [mailbox_message_id]) != []

        return self._run("remove_message_label", txn_fn)

    async def _unlink_label(self, txn, label, mailbox_message_ids) -> list[int]:
        """Detach ``label`` from these messages in ``txn`` (the label's row locked by the
        caller) and announce it; return the UIDs the links had in the label's view."""
        uids = []
        for mm_id in mailbox_message_ids:
            row = await txn.execute_one(
                "SELECT uid FROM message_labels WHERE mailbox_message_id = ? AND label_id = ?",
                (mm_id, label.id),
            )
            if row is None:
                continue
            await txn.execute(
                "DELETE FROM message_labels WHERE mailbox_message_id = ? AND label_id = ?",
                (mm_id, label.id),
            )
            uids.append(row["uid"])
            await self._announce(
                txn,
                label.mailbox_id,
                {"type": "unlabeled", "label_id": label.id, "id": mm_id, "uid": row["uid"]},
            )
        return uids

    @staticmethod
    async def _labels_of(txn, mailbox_message_ids) -> dict[str, list[Label]]:
        """The labels of each message, by mailbox_message id (name order)."""
        out: dict[str, list[Label]] = {}
        ids = list(mailbox_message_ids)
        for start in range(0, len(ids), 500):
            clause, params = txn.in_clause("ml.mailbox_message_id", ids[start : start + 500])
            rows = await txn.execute(
                "SELECT ml.mailbox_message_id AS mm_id, l.* FROM message_labels ml "
                f"JOIN labels l ON l.id = ml.label_id WHERE {clause} ORDER BY l.name",
                params,
            )
            for row in rows:
                out.setdefault(row["mm_id"], []).append(_label(row))
        return out

    def labels_of(self, mailbox_message_ids):
        """Fire with ``{mailbox_message_id: [Label, ...]}`` for the messages that have any."""
        return self._run("labels_of", self._labels_of, list(mailbox_message_ids), readonly=True)
