"""Routing rules: their rows, and running them on a delivery (API.md 1.5).

The rules that apply to one placement are gathered in the contract's order (the resolving
route, the recipient address, the mailbox, the domain of the first From address, global),
each group by ``priority`` then ``created_at``; every enabled rule whose conditions all match
runs its actions in order. They run inside the delivery's transaction
(``MessagesMixin._commit_delivery`` calls ``_apply_routing_rules``), so a delivery and what its
rules did commit together or not at all, and IMAP hears of the message once, where it ended up.
"""

from __future__ import annotations

import json

from haitatsu.storage.records import RoutingRule, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _MM_COLUMNS,
    _folder,
    _json,
    _log,
    _mailbox_message,
    _page_where,
    new_id,
)

#: The scopes in the order their rules run.
SCOPES = ("route", "address", "mailbox", "domain", "global")

#: Condition keys the contract defines; others are ignored.
CONDITION_KEYS = ("plus_tag", "original_rcpt", "base_rcpt", "from", "subject_contains")

RULE_FIELDS = ("scope", "scope_ref", "priority", "name", "enabled", "conditions", "actions")

#: Action aliases to the action they are.
ACTION_TYPES = {
    "move": "move",
    "move_to_folder": "move",
    "add_label": "add_label",
    "label": "add_label",
    "mark_read": "mark_read",
    "mark_unread": "mark_unread",
    "mark_flagged": "mark_flagged",
    "junk": "junk",
    "quarantine": "junk",
    "delete": "delete",
    "drop": "delete",
    "copy_to_mailbox": "copy_to_mailbox",
    "webhook": "webhook",
    "emit_webhook": "webhook",
}


def action_type(action: dict) -> str:
    """The action's canonical type ("" if unknown): ``type``, or ``action`` without it."""
    name = action.get("type")
    if name is None:
        name = action.get("action")
    return ACTION_TYPES.get(name, "") if isinstance(name, str) else ""


def _rule(row) -> RoutingRule:
    return RoutingRule(
        id=row["id"],
        scope=row["scope"],
        scope_ref=row["scope_ref"],
        priority=row["priority"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        conditions=json.loads(row["conditions"] or "{}"),
        actions=json.loads(row["actions"] or "[]"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _lower(value) -> str:
    return value.lower() if isinstance(value, str) else str(value).lower()


def conditions_match(conditions: dict, delivery, from_addresses, subject) -> bool:
    """Whether every condition the contract knows holds (case-insensitively)."""
    for key in CONDITION_KEYS:
        if key not in conditions:
            continue
        wanted = _lower(conditions[key])
        if key == "plus_tag":
            ok = _lower(delivery.plus_tag) == wanted
        elif key == "original_rcpt":
            ok = _lower(delivery.original_rcpt) == wanted
        elif key == "base_rcpt":
            ok = _lower(delivery.base_rcpt) == wanted
        elif key == "from":
            ok = any(_lower(a) == wanted for a in from_addresses)
        else:
            ok = wanted in _lower(subject or "")
        if not ok:
            return False
    return True


class RulesMixin(StoreBase):
    # -- CRUD -------------------------------------------------------------------------------

    def create_rule(
        self, scope, name, actions, scope_ref="", priority=0, enabled=True, conditions=None
    ):
        rule_id = new_id()
        now = now_ns()

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO routing_rules (id, scope, scope_ref, priority, name, enabled, "
                "conditions, actions, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule_id,
                    scope,
                    scope_ref or "",
                    priority,
                    name,
                    bool(enabled),
                    _json(conditions or {}),
                    _json(list(actions)),
                    now,
                    now,
                ),
            )
            await self._audit(txn, "routing_rule.created", "routing_rule", rule_id)
            return await self._get_rule(txn, rule_id)

        return self._run("create_rule", txn_fn)

    @staticmethod
    async def _get_rule(txn, rule_id):
        row = await txn.execute_one("SELECT * FROM routing_rules WHERE id = ?", (rule_id,))
        return _rule(row) if row else None

    def get_rule(self, rule_id):
        return self._run("get_rule", self._get_rule, rule_id, readonly=True)

    def list_rules(self, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            sql = "SELECT * FROM routing_rules"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = await txn.execute(
                sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            )
            return [_rule(r) for r in rows]

        return self._run("list_rules", txn_fn, readonly=True)

    def update_rule(self, rule_id, **fields):
        """Replace the given fields; None if there is no such rule."""
        unknown = set(fields) - set(RULE_FIELDS)
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}")

        async def txn_fn(txn):
            sets, params = [], []
            for name, value in fields.items():
                if name in ("conditions", "actions"):
                    value = _json(value)
                elif name == "enabled":
                    value = bool(value)
                sets.append(f"{name} = ?")
                params.append(value)
            sets.append("updated_at = ?")
            params.append(now_ns())
            await txn.execute(
                f"UPDATE routing_rules SET {', '.join(sets)} WHERE id = ?", (*params, rule_id)
            )
            if txn.rowcount == 0:
                return None
            await self._audit(txn, "routing_rule.updated", "routing_rule", rule_id)
            return await self._get_rule(txn, rule_id)

        return self._run("update_rule", txn_fn)

    def delete_rule(self, rule_id):
        """Hard delete; fire with whether the rule existed."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM routing_rules WHERE id = ?", (rule_id,))
            if txn.rowcount == 0:
                return False
            await self._audit(txn, "routing_rule.deleted", "routing_rule", rule_id)
            return True

        return self._run("delete_rule", txn_fn)

    # -- at delivery --------------------------------------------------------------------------

    @staticmethod
    async def _rules_for(txn, mm, delivery, from_addresses) -> list[RoutingRule]:
        """The enabled rules for this placement, in the order they run."""
        domain = from_addresses[0].rpartition("@")[2].lower() if from_addresses else ""
        addresses = sorted({a.lower() for a in (delivery.original_rcpt, delivery.base_rcpt) if a})
        refs = {
            "route": [delivery.route_id] if delivery.route_id else [],
            "address": addresses,
            "mailbox": [mm.mailbox_id],
            "domain": [domain] if domain else [],
        }
        where, params = ["scope = 'global'"], []
        for scope, values in refs.items():
            if values:
                clause, clause_params = txn.in_clause(
                    "LOWER(scope_ref)", [v.lower() for v in values]
                )
                where.append(f"(scope = ? AND {clause})")
                params += [scope, *clause_params]
        rows = await txn.execute(
            "SELECT * FROM routing_rules WHERE enabled = ? AND (" + " OR ".join(where) + ")",
            (True, *params),
        )
        rules = [_rule(r) for r in rows]
        return sorted(rules, key=lambda r: (SCOPES.index(r.scope), r.priority, r.created_at, r.id))

    async def _apply_routing_rules(self, txn, mm, delivery, parsed, size):
        """Run the rules on a placement just inserted, in the delivery's transaction.

        Returns the row as the rules left it and the changes to announce for other mailboxes
        (``copy_to_mailbox``) as ``(mailbox_id, change)``. The caller announces the row itself.
        """
        from_addresses = list(parsed.from_addresses or ())
        notes: list = []
        acted = False
        for rule in await self._rules_for(txn, mm, delivery, from_addresses):
            if not isinstance(rule.conditions, dict) or not conditions_match(
                rule.conditions, delivery, from_addresses, parsed.subject
            ):
                continue
            for action in rule.actions:
                if isinstance(action, dict):
                    acted = True
                    await self._rule_action(txn, mm.id, action, rule, size, notes)
        if not acted:
            return mm, notes
        row = await txn.execute_one(
            f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?", (mm.id,)
        )
        return _mailbox_message(row), notes

    async def _rule_action(self, txn, mm_id, action, rule, size, notes):
        kind = action_type(action)
        row = await txn.execute_one(
            f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?", (mm_id,)
        )
        mm = _mailbox_message(row)
        now = now_ns()
        if kind == "move":
            folder = await self._rule_folder(
                txn, mm.mailbox_id, action.get("folder_id"), _first(action, "folder", "folder_name")
            )
            if folder is None:
                return _skipped(rule, action, "no such folder")
            await self._rule_move(txn, mm, folder)
        elif kind == "junk":
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = '\\Junk'",
                (mm.mailbox_id,),
            )
            if row is None:
                return _skipped(rule, action, "no Junk folder")
            await self._rule_move(txn, mm, _folder(row))
        elif kind == "add_label":
            label = await self._rule_label(
                txn, mm.mailbox_id, action.get("label_id"), _first(action, "label", "label_name")
            )
            if label is None:
                return _skipped(rule, action, "no such label")
            await self._link_label(txn, mm.id, label)
        elif kind in ("mark_read", "mark_unread", "mark_flagged"):
            column, value = {
                "mark_read": ("read", True),
                "mark_unread": ("read", False),
                "mark_flagged": ("flagged", True),
            }[kind]
            await txn.execute(
                f"UPDATE mailbox_messages SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, now, mm.id),
            )
        elif kind == "delete":
            if mm.deleted_at is None:
                await txn.execute(
                    "UPDATE mailbox_messages SET deleted_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, mm.id),
                )
                await txn.execute(
                    "UPDATE mailboxes SET used_bytes = used_bytes - ? WHERE id = ?",
                    (mm.size_bytes, mm.mailbox_id),
                )
        elif kind == "copy_to_mailbox":
            await self._rule_copy(txn, mm, action.get("mailbox_id"), rule, action, notes)
        elif kind == "webhook":
            await self._rule_webhook(txn, mm, action, rule)
        return None

    async def _rule_webhook(self, txn, mm, action, rule):
        """Write the action's event (API.md 3, ``message.routed`` or the action's type) to the
        event log in the delivery's transaction; the action's ``payload`` keys override."""
        event_type = _first(action, "event_type", "event")
        if not isinstance(event_type, str) or not event_type:
            event_type = "message.routed"
        row = await txn.execute_one("SELECT trace_id FROM messages WHERE id = ?", (mm.message_id,))
        trace_id = row["trace_id"] if row else ""
        payload = {
            "event": event_type,
            "trace_id": trace_id,
            "message_id": mm.message_id,
            "mailbox_id": mm.mailbox_id,
            "mailbox_message_id": mm.id,
            "routing_rule_id": rule.id,
            "routing_rule_name": rule.name,
            "original_rcpt": mm.original_rcpt,
            "base_rcpt": mm.base_rcpt,
            "plus_tag": mm.plus_tag,
            "route_id": mm.resolved_route_id,
        }
        extra = action.get("payload")
        if isinstance(extra, dict):
            payload.update(extra)
        await self._record_event(
            txn,
            event_type,
            payload,
            trace_id=trace_id,
            message_id=mm.message_id,
            mailbox_id=mm.mailbox_id,
        )

    async def _rule_folder(self, txn, mailbox_id, folder_id, name):
        if isinstance(folder_id, str) and folder_id:
            row = await txn.execute_one(
                "SELECT * FROM folders WHERE id = ? AND mailbox_id = ?", (folder_id, mailbox_id)
            )
            return _folder(row) if row else None
        if name:
            return await self._get_folder(txn, mailbox_id, name)
        return None

    @staticmethod
    async def _rule_label(txn, mailbox_id, label_id, name):
        if isinstance(label_id, str) and label_id:
            row = await txn.execute_one(
                "SELECT id FROM labels WHERE id = ? AND mailbox_id = ?", (label_id, mailbox_id)
            )
        elif name:
            row = await txn.execute_one(
                "SELECT id FROM labels WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
            )
        else:
            row = None
        return row["id"] if row else None

    async def _rule_move(self, txn, mm, folder):
        if folder.id == mm.folder_id:
            return
        uid, modseq = await self._allocate_uid(txn, folder.id)
        await txn.execute(
            "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, updated_at = ? "
            "WHERE id = ?",
            (folder.id, uid, modseq, now_ns(), mm.id),
        )

    async def _rule_copy(self, txn, mm, target_id, rule, action, notes):
        """Place the message in another mailbox's INBOX: skipped silently when that mailbox is
        missing or inactive, already has the message, or has no room for it."""
        if not isinstance(target_id, str) or not target_id:
            return _skipped(rule, action, "no mailbox_id")
        target = await txn.execute_one(
            "SELECT id FROM mailboxes WHERE id = ? AND status = 'active' AND deleted_at IS NULL",
            (target_id,),
        )
        if target is None:
            return _skipped(rule, action, "no such active mailbox")
        duplicate = await txn.execute_one(
            "SELECT id FROM mailbox_messages WHERE mailbox_id = ? AND message_id = ? "
            "AND deleted_at IS NULL",
            (target_id, mm.message_id),
        )
        if duplicate is not None:
            return None
        inbox = await self._get_folder(txn, target_id, "INBOX")
        if inbox is None:
            return _skipped(rule, action, "target has no INBOX")
        [refused] = await self._charge_quota(txn, [target_id], mm.size_bytes)
        if refused:
            return _skipped(rule, action, f"{refused} quota full")
        uid, modseq = await self._allocate_uid(txn, inbox.id)
        row_id, now = new_id(), now_ns()
        await txn.execute(
            "INSERT INTO mailbox_messages (id, mailbox_id, message_id, folder_id, uid, modseq, "
            "original_rcpt, base_rcpt, plus_tag, resolved_route_id, read, flagged, answered, "
            "draft, imap_deleted, keywords, internal_date, size_bytes, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row_id,
                target_id,
                mm.message_id,
                inbox.id,
                uid,
                modseq,
                mm.original_rcpt,
                mm.base_rcpt,
                mm.plus_tag,
                mm.resolved_route_id,
                False,
                False,
                False,
                False,
                False,
                "[]",
                mm.internal_date,
                mm.size_bytes,
                now,
                now,
            ),
        )
        notes.append(
            (target_id, {"type": "exists", "folder_id": inbox.id, "uid": uid, "id": row_id})
        )
        return None


def _first(action: dict, *keys) -> str:
    for key in keys:
        value = action.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _skipped(rule, action, why):
    _log.info(
        "routing rule {rule_id} ({name}): action {action} skipped: {why}",
        rule_id=rule.id,
        name=rule.name,
        action=action_type(action),
        why=why,
    )
