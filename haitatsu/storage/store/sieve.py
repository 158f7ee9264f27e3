"""Sieve: each mailbox's scripts (one active at most), the vacation responses sent, and the
simple vacation setting of the ``vacation`` filter.

The store keeps script text as given; compiling and checking it is the caller's
(``haitatsu.sieve``). One active script per mailbox is also a unique index, so two nodes
activating at once cannot both win.
"""

from __future__ import annotations

import json

import attrs

from haitatsu.storage.records import now_ns
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import new_id


@attrs.frozen
class SieveScript:
    id: str
    mailbox_id: str
    name: str
    content: str
    active: bool
    created_at: int
    updated_at: int


class NoSuchScript(LookupError):
    """The mailbox has no script of that name."""


class ScriptIsActive(Exception):
    """The active script cannot be deleted (RFC 5804 section 2.10)."""


def _script(row) -> SieveScript:
    return SieveScript(
        id=row["id"],
        mailbox_id=row["mailbox_id"],
        name=row["name"],
        content=row["content"],
        active=bool(row["active"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def read_active_scripts(txn, mailbox_ids) -> dict[str, SieveScript]:
    """The active script of each of ``mailbox_ids`` that has one, in the caller's
    transaction."""
    clause, params = txn.in_clause("mailbox_id", sorted(set(mailbox_ids)))
    rows = await txn.execute(
        f"SELECT * FROM sieve_scripts WHERE {clause} AND active = ?", (*params, True)
    )
    return {row["mailbox_id"]: _script(row) for row in rows}


class SieveMixin(StoreBase):
    def list_sieve_scripts(self, mailbox_id):
        """The mailbox's scripts, by name."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT * FROM sieve_scripts WHERE mailbox_id = ? ORDER BY name", (mailbox_id,)
            )
            return [_script(r) for r in rows]

        return self._run("list_sieve_scripts", txn_fn, readonly=True)

    def get_sieve_script(self, mailbox_id, name):
        """The script called ``name``, or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM sieve_scripts WHERE mailbox_id = ? AND name = ?",
                (mailbox_id, name),
            )
            return _script(row) if row else None

        return self._run("get_sieve_script", txn_fn, readonly=True)

    def active_sieve_script(self, mailbox_id):
        """The mailbox's active script, or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM sieve_scripts WHERE mailbox_id = ? AND active = ?",
                (mailbox_id, True),
            )
            return _script(row) if row else None

        return self._run("active_sieve_script", txn_fn, readonly=True)

    def put_sieve_script(self, mailbox_id, name, content, activate=False):
        """Create or replace the script ``name``; fire with ``(script, created)``. An active
        script stays active; ``activate`` makes this one the active one."""

        async def txn_fn(txn):
            now = now_ns()
            row = await txn.execute_one(
                "SELECT * FROM sieve_scripts WHERE mailbox_id = ? AND name = ?" + txn.for_update,
                (mailbox_id, name),
            )
            if row is None:
                script_id, created = new_id(), True
                await txn.execute(
                    "INSERT INTO sieve_scripts (id, mailbox_id, name, content, active, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (script_id, mailbox_id, name, content, False, now, now),
                )
            else:
                script_id, created = row["id"], False
                await txn.execute(
                    "UPDATE sieve_scripts SET content = ?, updated_at = ? WHERE id = ?",
                    (content, now, script_id),
                )
            if activate:
                await self._activate(txn, mailbox_id, script_id, now)
            row = await txn.execute_one("SELECT * FROM sieve_scripts WHERE id = ?", (script_id,))
            return _script(row), created

        return self._run("put_sieve_script", txn_fn)

    @staticmethod
    async def _activate(txn, mailbox_id, script_id, now):
        await txn.execute(
            "UPDATE sieve_scripts SET active = ?, updated_at = ? "
            "WHERE mailbox_id = ? AND active = ? AND id <> ?",
            (False, now, mailbox_id, True, script_id or ""),
        )
        if script_id:
            await txn.execute(
                "UPDATE sieve_scripts SET active = ?, updated_at = ? WHERE id = ?",
                (True, now, script_id),
            )

    def activate_sieve_script(self, mailbox_id, name):
        """Make ``name`` the mailbox's active script (``NoSuchScript`` if it has none of that
        name); ``name`` None or "" deactivates every script. Fire with the script or None."""

        async def txn_fn(txn):
            now = now_ns()
            script_id = ""
            if name:
                row = await txn.execute_one(
                    "SELECT id FROM sieve_scripts WHERE mailbox_id = ? AND name = ?",
                    (mailbox_id, name),
                )
                if row is None:
                    raise NoSuchScript(name)
                script_id = row["id"]
            await self._activate(txn, mailbox_id, script_id, now)
            if not script_id:
                return None
            row = await txn.execute_one("SELECT * FROM sieve_scripts WHERE id = ?", (script_id,))
            return _script(row)

        return self._run("activate_sieve_script", txn_fn)

    def delete_sieve_script(self, mailbox_id, name):
        """Delete the script ``name``: ``NoSuchScript``, or ``ScriptIsActive`` for the active
        one (deactivate it first)."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT id, active FROM sieve_scripts WHERE mailbox_id = ? AND name = ?",
                (mailbox_id, name),
            )
            if row is None:
                raise NoSuchScript(name)
            if row["active"]:
                raise ScriptIsActive(name)
            await txn.execute("DELETE FROM sieve_scripts WHERE id = ?", (row["id"],))

        return self._run("delete_sieve_script", txn_fn)

    def rename_sieve_script(self, mailbox_id, old, new):
        """Rename ``old`` to ``new``: ``NoSuchScript``, or ``Conflict`` when ``new`` exists."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT id FROM sieve_scripts WHERE mailbox_id = ? AND name = ?",
                (mailbox_id, old),
            )
            if row is None:
                raise NoSuchScript(old)
            await txn.execute(
                "UPDATE sieve_scripts SET name = ?, updated_at = ? WHERE id = ?",
                (new, now_ns(), row["id"]),
            )

        return self._run("rename_sieve_script", txn_fn)

    def sieve_space_used(self, mailbox_id):
        """``(count, bytes)`` of the mailbox's scripts (ManageSieve's HAVESPACE)."""

        async def txn_fn(txn):
            rows = await txn.execute(
                "SELECT content FROM sieve_scripts WHERE mailbox_id = ?", (mailbox_id,)
            )
            return len(rows), sum(len(r["content"].encode("utf-8")) for r in rows)

        return self._run("sieve_space_used", txn_fn, readonly=True)

    def vacation_should_respond(self, mailbox_id, handle, sender, now, period):
        """Record a vacation response to ``sender`` for ``handle`` at ``now`` (ns) unless one
        was sent less than ``period`` (ns) ago; fire with whether to send it. One short
        transaction with the row locked, so two nodes never both answer."""

        async def txn_fn(txn):
            key = (mailbox_id, handle, sender.lower())
            await txn.execute(
                "INSERT INTO sieve_vacation_responses (mailbox_id, handle, sender, sent_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (mailbox_id, handle, sender) DO NOTHING",
                (*key, now, now + period),
            )
            if txn.rowcount == 1:
                return True
            row = await txn.execute_one(
                "SELECT expires_at FROM sieve_vacation_responses "
                "WHERE mailbox_id = ? AND handle = ? AND sender = ?" + txn.for_update,
                key,
            )
            if row["expires_at"] > now:
                return False
            await txn.execute(
                "UPDATE sieve_vacation_responses SET sent_at = ?, expires_at = ? "
                "WHERE mailbox_id = ? AND handle = ? AND sender = ?",
                (now, now + period, *key),
            )
            return True

        return self._run("vacation_should_respond", txn_fn)

    def prune_vacation_responses(self, before):
        """Forget responses whose period ended before ``before`` (ns); fire with how many."""

        async def txn_fn(txn):
            await txn.execute(
                "DELETE FROM sieve_vacation_responses WHERE expires_at < ?", (before,)
            )
            return max(0, txn.rowcount)

        return self._run("prune_vacation_responses", txn_fn)

    def queue_generated(self, spool_path, mailbox_id, mail_from, recipients, trace_id):
        """Store the message at ``spool_path`` (one a Sieve script sends: a redirected copy, a
        vacation response, a rejection notice) and queue it for ``recipients`` on behalf of
        ``mailbox_id``, in one transaction; fire with the job id. ``mail_from`` None is the
        mailbox's VERP bounce address (as for submitted mail), "" the null sender. No folder
        gets a copy and no quota is charged."""
        from haitatsu.storage.records import address_domain
        from haitatsu.storage.store.submission import bounce_address

        recipients = list(recipients)

        def commit(prepared, parsed, generations):
            async def txn_fn(txn):
                now = now_ns()
                message_id = new_id()
                sender = mail_from
                if sender is None:
                    row = await txn.execute_one(
                        "SELECT primary_address FROM mailboxes WHERE id = ?", (mailbox_id,)
                    )
                    sender = bounce_address(message_id, row["primary_address"])
                    assert address_domain(sender)
                await self._reference_blobs(txn, generations, now)
                await self._insert_message(txn, message_id, prepared, parsed, trace_id, {}, now)
                return await self._enqueue(
                    txn, message_id, mailbox_id, sender, recipients, trace_id
                )

            return self._run("queue_generated", txn_fn)

        async def run():
            job_id, _ = await self._store_message(spool_path, trace_id, commit)
            return job_id

        from twisted.internet import defer

        return defer.Deferred.fromCoroutine(run())

    # -- the vacation filter's per-mailbox setting ----------------------------------------

    def get_vacation_setting(self, mailbox_id):
        """The mailbox's ``VacationSetting``, or None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM vacation_settings WHERE mailbox_id = ?", (mailbox_id,)
            )
            return _vacation(row) if row else None

        return self._run("get_vacation_setting", txn_fn, readonly=True)

    def put_vacation_setting(self, setting):
        """Create or replace the mailbox's setting (a ``VacationSetting``); fire with it as
        stored."""

        async def txn_fn(txn):
            now = now_ns()
            values = (
                bool(setting.enabled),
                setting.subject,
                setting.body,
                int(setting.days),
                setting.from_address,
                json.dumps(list(setting.addresses)),
                setting.starts_at,
                setting.ends_at,
                now,
            )
            await txn.execute(
                "INSERT INTO vacation_settings (enabled, subject, body, days, from_address, "
                "addresses, starts_at, ends_at, updated_at, mailbox_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mailbox_id) DO UPDATE SET "
                "enabled = ?, subject = ?, body = ?, days = ?, from_address = ?, addresses = ?, "
                "starts_at = ?, ends_at = ?, updated_at = ?",
                (*values, setting.mailbox_id, *values),
            )
            row = await txn.execute_one(
                "SELECT * FROM vacation_settings WHERE mailbox_id = ?", (setting.mailbox_id,)
            )
            return _vacation(row)

        return self._run("put_vacation_setting", txn_fn)

    def delete_vacation_setting(self, mailbox_id):
        """Remove the setting; fire with whether there was one."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM vacation_settings WHERE mailbox_id = ?", (mailbox_id,))
            return txn.rowcount == 1

        return self._run("delete_vacation_setting", txn_fn)


@attrs.frozen
class VacationSetting:
    """A mailbox's vacation setting (the ``vacation`` filter): answer with ``body`` (and
    ``subject``, ``from_address``) while ``enabled``, between ``starts_at`` and ``ends_at``
    (ns, None: open), at most once per sender every ``days``."""

    mailbox_id: str
    enabled: bool = False
    subject: str = ""
    body: str = ""
    days: int = 7
    from_address: str = ""
    addresses: tuple = ()
    starts_at: int | None = None
    ends_at: int | None = None
    updated_at: int = 0


def _vacation(row) -> VacationSetting:
    return VacationSetting(
        mailbox_id=row["mailbox_id"],
        enabled=bool(row["enabled"]),
        subject=row["subject"],
        body=row["body"],
        days=row["days"],
        from_address=row["from_address"],
        addresses=tuple(json.loads(row["addresses"] or "[]")),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        updated_at=row["updated_at"],
    )
