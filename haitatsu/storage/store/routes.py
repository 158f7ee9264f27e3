"""Routes (aliases, patterns, catch-alls), RCPT resolution and send-as (API.md 1.4, 5.2).

A route maps a source address to destination mailboxes. Inbound RCPT resolution tries, in the
contract's order (API.md 5.2 steps 2-7): the mailbox of the exact address (when it has no
``+tag``), an exact route, the ``+tag``-less base address as mailbox then as route, ``pattern``
routes (Go ``path.Match`` globs on the full lowercased address, oldest route first), and the
``catch_all`` route ``*@domain``. The same routes grant send-as (API.md 1.4).
"""

from __future__ import annotations

import json

from twisted.internet import defer

from haitatsu.storage import glob
from haitatsu.storage.records import Recipient, Route, now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import _json, _page_where, new_id

#: The local part no mailbox or route may use: VERP bounces arrive at ``bounces+<id>@``.
RESERVED_LOCAL_PART = "bounces"

ROUTE_FIELDS = ("source_address", "type", "destinations", "status")


class InvalidRoute(ValueError):
    """A route the contract refuses: ``code`` is the API's error code for it."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_route(source_address: str, route_type: str) -> None:
    """Raise ``InvalidRoute`` unless the pair is a route the contract accepts."""
    source = source_address.strip().lower()
    if not source or not route_type:
        raise InvalidRoute("invalid_route", "Source address and type are required")
    local = source.rpartition("@")[0] if "@" in source else source
    if local == RESERVED_LOCAL_PART:
        raise InvalidRoute(
            "reserved_local_part", f'The local part "{RESERVED_LOCAL_PART}" is reserved'
        )
    if route_type == "catch_all":
        local, at, domain = source.partition("@")
        if local != "*" or not at or not domain or "@" in domain:
            raise InvalidRoute(
                "invalid_route", "catch_all routes need a source of the form *@domain"
            )
    elif route_type == "pattern":
        try:
            glob.compile(source)
        except glob.BadPattern as e:
            raise InvalidRoute("invalid_route", f"invalid pattern: {e}") from None


def _route(row) -> Route:
    return Route(
        id=row["id"],
        source_address=row["source_address"],
        type=row["type"],
        destinations=tuple(json.loads(row["destinations"] or "[]")),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


_ACTIVE_ROUTE = "status = 'active' AND deleted_at IS NULL"


class RoutesMixin(StoreBase):
    # -- CRUD -------------------------------------------------------------------------------

    def create_route(self, source_address, route_type, destinations=(), status="active"):
        """Create a route; ``InvalidRoute`` for a refused one, ``Conflict`` for a taken
        address (compared without case). Writes ``route.created`` in the same transaction."""
        check_route(source_address, route_type)
        route_id = new_id()
        now = now_ns()

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO routes (id, source_address, source_lower, type, destinations, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    route_id,
                    source_address,
                    source_address.strip().lower(),
                    route_type,
                    _json(list(destinations)),
                    status or "active",
                    now,
                    now,
                ),
            )
            await self._audit(txn, "route.created", "route", route_id)
            return await self._get_route(txn, route_id)

        return self._run("create_route", txn_fn)

    @staticmethod
    async def _get_route(txn, route_id, lock=False):
        row = await txn.execute_one(
            "SELECT * FROM routes WHERE id = ?" + (txn.for_update if lock else ""), (route_id,)
        )
        return _route(row) if row else None

    def get_route(self, route_id):
        return self._run("get_route", self._get_route, route_id, readonly=True)

    def list_routes(self, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            sql = "SELECT * FROM routes"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = await txn.execute(
                sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            )
            return [_route(r) for r in rows]

        return self._run("list_routes", txn_fn, readonly=True)

    def update_route(self, route_id, **fields):
        """Change the given fields of a route; None if it does not exist. The result must
        still be a valid route (``InvalidRoute``); writes ``route.updated``."""
        unknown = set(fields) - set(ROUTE_FIELDS)
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}")

        async def txn_fn(txn):
            current = await self._get_route(txn, route_id, lock=True)
            if current is None:
                return None
            source = fields.get("source_address", current.source_address)
            route_type = fields.get("type", current.type)
            check_route(source, route_type)
            destinations = fields.get("destinations", current.destinations)
            await txn.execute(
                "UPDATE routes SET source_address = ?, source_lower = ?, type = ?, "
                "destinations = ?, status = ?, updated_at = ? WHERE id = ?",
                (
                    source,
                    source.strip().lower(),
                    route_type,
                    _json(list(destinations)),
                    fields.get("status") or current.status,
                    now_ns(),
                    route_id,
                ),
            )
            await self._audit(txn, "route.updated", "route", route_id)
            return await self._get_route(txn, route_id)

        return self._run("update_route", txn_fn)

    def delete_route(self, route_id):
        """Soft delete: status ``deleted`` and ``deleted_at``; None if there is no such route."""

        async def txn_fn(txn):
            now = now_ns()
            await txn.execute(
                "UPDATE routes SET status = 'deleted', deleted_at = COALESCE(deleted_at, ?), "
                "updated_at = ? WHERE id = ?",
                (now, now, route_id),
            )
            if txn.rowcount == 0:
                return None
            await self._audit(txn, "route.deleted", "route", route_id)
            return await self._get_route(txn, route_id)

        return self._run("delete_route", txn_fn)

    # -- RCPT resolution (API.md 5.2) -------------------------------------------------------

    def resolve_recipient(self, address):
        """Resolve an RCPT address to its mailboxes (API.md 5.2 steps 2-8), or None.

        Mailboxes that are full (``used >= quota``, or their domain's quota used up) are left
        out of ``mailbox_ids``; when none is left the result says which quota (``over_quota``).
        A route none of whose destinations is an active mailbox does not match, and resolution
        goes on to the next step.
        """
        original = address.strip()
        lowered = original.lower()
        local, at, domain = lowered.rpartition("@")
        plus_tag = ""
        base = lowered
        if at and "+" in local:
            base_local, _, plus_tag = local.partition("+")
            base = f"{base_local}@{domain}"

        async def txn_fn(txn):
            found = None
            if not plus_tag:
                found = await self._mailbox_target(txn, lowered)
            if found is None:
                found = await self._route_target(txn, "source_lower = ?", (lowered,))
            if found is None and plus_tag:
                found = await self._mailbox_target(txn, base)
                if found is None:
                    found = await self._route_target(txn, "source_lower = ?", (base,))
            if found is None:
                found = await self._pattern_target(txn, lowered)
            if found is None:
                found = await self._route_target(
                    txn, "type = 'catch_all' AND source_lower = ?", (f"*@{domain}",)
                )
            if found is None:
                return None
            route_id, mailboxes = found
            room, full = [], []
            for row in mailboxes:
                reason = await self._full(txn, row)
                (full if reason else room).append((row["id"], reason))
            chosen = room or full
            return Recipient(
                mailbox_id=chosen[0][0],
                original_rcpt=original,
                base_rcpt=base,
                plus_tag=plus_tag,
                route_id=route_id,
                over_quota="" if room else full[0][1],
                mailbox_ids=tuple(mailbox_id for mailbox_id, _ in room),
            )

        if not at or not local or not domain:
            return defer.succeed(None)
        return self._run("resolve_recipient", txn_fn, readonly=True)

    _MAILBOX_TARGET = (
        "SELECT id, domain, quota_bytes, used_bytes FROM mailboxes "
        "WHERE status = 'active' AND deleted_at IS NULL AND "
    )

    async def _mailbox_target(self, txn, address):
        row = await txn.execute_one(self._MAILBOX_TARGET + "address_lower = ?", (address,))
        return ("", [row]) if row else None

    async def _route_target(self, txn, condition, params):
        row = await txn.execute_one(
            f"SELECT * FROM routes WHERE {_ACTIVE_ROUTE} AND {condition}", params
        )
        return await self._destinations(txn, _route(row)) if row else None

    async def _pattern_target(self, txn, address):
        rows = await txn.execute(
            f"SELECT * FROM routes WHERE {_ACTIVE_ROUTE} AND type = 'pattern' "
            "ORDER BY created_at, id"
        )
        for row in rows:
            if glob.match(row["source_lower"], address):
                found = await self._destinations(txn, _route(row))
                if found is not None:
                    return found
        return None

    async def _destinations(self, txn, route):
        """The route's active destination mailboxes in its order, or None if there are none."""
        wanted = list(dict.fromkeys(route.destinations))
        if not wanted:
            return None
        clause, params = txn.in_clause("id", wanted)
        rows = await txn.execute(self._MAILBOX_TARGET + clause, params)
        by_id = {row["id"]: row for row in rows}
        mailboxes = [by_id[m] for m in wanted if m in by_id]
        return (route.id, mailboxes) if mailboxes else None

    async def _full(self, txn, row) -> str:
        """Which quota of the mailbox is used up: "", "mailbox" or "domain"."""
        if row["quota_bytes"] > 0 and row["used_bytes"] >= row["quota_bytes"]:
            return "mailbox"
        room = await self._domain_room(txn, row["domain"])
        if room is not None and room <= 0:
            return "domain"
        return ""

    # -- send-as (API.md 1.4, 1.8 step 2, 5.3) ----------------------------------------------

    def may_send_as(self, mailbox_id, address):
        """Fire with whether the mailbox may use ``address`` as its sender: its own primary
        address, or the source of an active route whose destinations include the mailbox.
        Compared without case. Whether the mailbox itself is active is the caller's check."""
        wanted = address.strip().lower()

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT address_lower FROM mailboxes WHERE id = ?", (mailbox_id,)
            )
            if row is None:
                return False
            if row["address_lower"] == wanted:
                return True
            route = await txn.execute_one(
                f"SELECT destinations FROM routes WHERE {_ACTIVE_ROUTE} AND source_lower = ?",
                (wanted,),
            )
            return route is not None and mailbox_id in json.loads(route["destinations"] or "[]")

        if not wanted:
            return defer.succeed(False)
        return self._run("may_send_as", txn_fn, readonly=True)
