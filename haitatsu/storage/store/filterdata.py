"""What the ``spam_score`` and ``duplicate`` filters read and keep: mailboxes' own Junk
thresholds, and the Message-IDs each mailbox received (migration 025), shared by every node.

A duplicate is decided in one short transaction that locks the (mailbox, Message-ID) row. The
first delivery claims it with its trace id; a later copy is a duplicate only once that
delivery's message is really in the mailbox. A claim whose delivery never committed (refused
after the claim, or the storage failed and the client retries) is taken over by the next copy,
so a retry is never thrown away as a duplicate of itself.
"""

from __future__ import annotations

import json

import attrs
from twisted.internet import defer

from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.senderrules import read_sender_rules
from haitatsu.storage.store.sieve import read_active_scripts

#: What ``duplicate_check`` found.
DUPLICATE_NEW = "new"  # first copy in the window (or the first one never got stored)
DUPLICATE_SEEN = "duplicate"  # an earlier copy is in the mailbox

#: Clock skew allowed between the node that claimed a Message-ID and the one that stored the
#: message (ns) when looking for that message.
CLAIM_SKEW = 600 * 10**9


@attrs.frozen
class InboundFilterData:
    """``FilterDataMixin.inbound_filter_data``: one snapshot of what the ``sender_rules``,
    ``spam_score`` and ``sieve`` filters read about a message's recipient mailbox
    ``mailbox_ids``: the sender rules (global, those mailboxes' and the recipient domains',
    oldest first), their spam thresholds (only those that have any) and their active Sieve
    scripts (only those that have one)."""

    mailbox_ids: frozenset
    sender_rules: tuple = ()
    spam_thresholds: dict = attrs.field(factory=dict, hash=False)
    sieve_scripts: dict = attrs.field(factory=dict, hash=False)


async def read_spam_thresholds(txn, ids) -> dict:
    """``FilterDataMixin.mailbox_spam_thresholds`` in the caller's transaction."""
    clause, params = txn.in_clause("id", ids)
    rows = await txn.execute(
        f"SELECT id, spam_thresholds FROM mailboxes WHERE {clause} AND spam_thresholds IS NOT NULL",
        params,
    )
    out = {}
    for row in rows:
        try:
            value = json.loads(row["spam_thresholds"])
        except (TypeError, ValueError):
            continue
        if isinstance(value, dict) and value:
            out[row["id"]] = value
    return out


class FilterDataMixin(StoreBase):
    def mailbox_spam_thresholds(self, mailbox_ids):
        """Fire with ``{mailbox_id: spam_thresholds}`` for those of ``mailbox_ids`` that have
        any (API.md 1.2: ``junk_threshold``, ``spam_threshold``, ``phishing_threshold``)."""
        ids = sorted(set(mailbox_ids))
        if not ids:
            return defer.succeed({})
        return self._run("mailbox_spam_thresholds", read_spam_thresholds, ids, readonly=True)

    def inbound_filter_data(self, mailbox_ids, domains=()):
        """What the default chain reads about a message's recipients, in one read transaction
        (one thread hop instead of one per filter): fire with an ``InboundFilterData`` of
        ``sender_rules_for(mailbox_ids, domains)``, ``mailbox_spam_thresholds(mailbox_ids)``
        and each mailbox's active Sieve script."""
        ids = sorted(set(mailbox_ids))
        domains = sorted(set(domains))

        async def txn_fn(txn):
            return InboundFilterData(
                mailbox_ids=frozenset(ids),
                sender_rules=tuple(await read_sender_rules(txn, ids, domains)),
                spam_thresholds=await read_spam_thresholds(txn, ids) if ids else {},
                sieve_scripts=await read_active_scripts(txn, ids) if ids else {},
            )

        return self._run("inbound_filter_data", txn_fn, readonly=True)

    def duplicate_check(self, mailbox_id: str, key: str, trace_id: str, now: int, window: int):
        """Whether the message ``key`` (a digest of its Message-ID) reached ``mailbox_id``
        within ``window`` ns before ``now``: fire with ``DUPLICATE_SEEN``, or with
        ``DUPLICATE_NEW`` after claiming the key for the delivery ``trace_id``."""

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO message_duplicates (mailbox_id, message_key, trace_id, first_seen) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (mailbox_id, message_key) DO NOTHING",
                (mailbox_id, key, trace_id, now),
            )
            if txn.rowcount == 1:
                return DUPLICATE_NEW
            row = await txn.execute_one(
                "SELECT trace_id, first_seen, stored_at FROM message_duplicates "
                "WHERE mailbox_id = ? AND message_key = ?" + txn.for_update,
                (mailbox_id, key),
            )
            if row["trace_id"] == trace_id:
                return DUPLICATE_NEW
            if row["first_seen"] >= now - window:
                if row["stored_at"]:
                    return DUPLICATE_SEEN
                stored = await txn.execute_one(
                    "SELECT mm.created_at FROM mailbox_messages mm "
                    "JOIN messages m ON m.id = mm.message_id "
                    "WHERE mm.mailbox_id = ? AND mm.created_at >= ? AND m.trace_id = ? LIMIT 1",
                    (mailbox_id, row["first_seen"] - CLAIM_SKEW, row["trace_id"]),
                )
                if stored is not None:
                    await txn.execute(
                        "UPDATE message_duplicates SET stored_at = ? "
                        "WHERE mailbox_id = ? AND message_key = ?",
                        (max(1, stored["created_at"]), mailbox_id, key),
                    )
                    return DUPLICATE_SEEN
            # Out of the window, or the claiming delivery never stored it: this copy claims it.
            await txn.execute(
                "UPDATE message_duplicates SET trace_id = ?, first_seen = ?, stored_at = 0 "
                "WHERE mailbox_id = ? AND message_key = ?",
                (trace_id, now, mailbox_id, key),
            )
            return DUPLICATE_NEW

        return self._run("duplicate_check", txn_fn)

    def prune_duplicates(self, before: int):
        """Delete the Message-IDs first seen before ``before`` (ns); fire with the count."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM message_duplicates WHERE first_seen < ?", (before,))
            return max(0, txn.rowcount)

        return self._run("prune_duplicates", txn_fn)
