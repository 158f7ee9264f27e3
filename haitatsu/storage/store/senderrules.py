"""Sender rules: allow and block lists on the sender's address, domain or IP (API.md 1.12)."""

from __future__ import annotations

import attrs

from haitatsu.storage.records import now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _page_where, new_id


@attrs.frozen
class SenderRule:
    id: str
    scope: str
    scope_ref: str
    kind: str
    match_type: str
    value: str
    action: str
    created_at: int
    updated_at: int


def _rule(row) -> SenderRule:
    return SenderRule(**{f.name: row[f.name] for f in attrs.fields(SenderRule)})


async def read_sender_rules(txn, mailbox_ids, domains=()) -> list[SenderRule]:
    """``SenderRulesMixin.sender_rules_for`` in the caller's transaction."""
    sql = "SELECT * FROM sender_rules WHERE scope = 'global'"
    params: list = []
    for scope, refs in (("mailbox", list(mailbox_ids)), ("domain", list(domains))):
        if refs:
            clause, more = txn.in_clause("scope_ref", refs)
            sql += f" OR (scope = '{scope}' AND {clause})"
            params.extend(more)
    rows = await txn.execute(sql + " ORDER BY created_at, id", tuple(params))
    return [_rule(r) for r in rows]


class SenderRulesMixin(StoreBase):
    def create_sender_rule(self, scope, scope_ref, kind, match_type, value, action="junk"):
        """Store a rule (the caller validated it); ``value`` is kept lowercased."""

        async def txn_fn(txn):
            now = now_ns()
            rule = SenderRule(
                new_id(), scope, scope_ref, kind, match_type, value.lower(), action, now, now
            )
            await txn.execute(
                "INSERT INTO sender_rules (id, scope, scope_ref, kind, match_type, value, action, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(rule),
            )
            return rule

        return self._run("create_sender_rule", txn_fn)

    def list_sender_rules(self, scope=None, kind=None, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            if scope:
                where.append("scope = ?")
                params.append(scope)
            if kind:
                where.append("kind = ?")
                params.append(kind)
            sql = "SELECT * FROM sender_rules"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [_rule(r) for r in await txn.execute(sql, (*params, limit))]

        return self._run("list_sender_rules", txn_fn, readonly=True)

    def sender_rules_for(self, mailbox_ids, domains=()):
        """The rules inbound mail for these mailboxes is checked against, in the order they are
        evaluated (the first match wins): ``global`` ones, ``mailbox`` ones naming one of
        the mailboxes and ``domain`` ones naming one of ``domains`` (the recipients'), oldest
        first."""

        return self._run("sender_rules_for", read_sender_rules, mailbox_ids, domains, readonly=True)

    def delete_sender_rule(self, rule_id):
        """Delete a rule; fire with whether it existed."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM sender_rules WHERE id = ?", (rule_id,))
            return txn.rowcount == 1

        return self._run("delete_sender_rule", txn_fn)
