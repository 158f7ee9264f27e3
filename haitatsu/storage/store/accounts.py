"""Mailboxes, app passwords, login throttling, quotas and domains."""

from __future__ import annotations

import json

from twisted.internet import defer

from haitatsu.interfaces import (
    StorageUnavailable,
)
from haitatsu.storage.records import (
    APP_PASSWORD_SCOPES,
    SYSTEM_FOLDERS,
    address_domain,
    now_ns,
)
from haitatsu.storage.store.base import StoreBase
from haitatsu.storage.store.common import (
    _app_password,
    _domain,
    _domain_name,
    _dummy_verify,
    _json,
    _log,
    _mailbox,
    _page_where,
    generate_password,
    hash_password,
    new_id,
    verify_password,
)


class AccountsMixin(StoreBase):
    @defer.inlineCallbacks
    def create_mailbox(
        self,
        primary_address,
        status="active",
        quota_bytes=0,
        outbound_limits=None,
        spam_thresholds=None,
    ):
        mailbox_id = new_id()
        now = now_ns()

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO mailboxes (id, primary_address, address_lower, domain, status, "
                "quota_bytes, used_bytes, outbound_limits, spam_thresholds, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (
                    mailbox_id,
                    primary_address,
                    primary_address.strip().lower(),
                    address_domain(primary_address),
                    status or "active",
                    quota_bytes or 0,
                    _json(outbound_limits or {}),
                    _json(spam_thresholds) if spam_thresholds else None,
                    now,
                    now,
                ),
            )
            uid_validity = now // 1_000_000_000
            for name, special_use in SYSTEM_FOLDERS:
                await txn.execute(
                    "INSERT INTO folders (id, mailbox_id, name, system, special_use, "
                    "uid_validity, uid_next, highest_modseq, subscribed, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?)",
                    (new_id(), mailbox_id, name, True, special_use, uid_validity, True, now, now),
                )
            await self._audit(txn, "mailbox.created", "mailbox", mailbox_id, mailbox_id)
            return await self._get_mailbox(txn, mailbox_id)

        result = yield defer.Deferred.fromCoroutine(self.db.run("create_mailbox", txn_fn))
        return result

    @staticmethod
    async def _get_mailbox(txn, mailbox_id):
        row = await txn.execute_one("SELECT * FROM mailboxes WHERE id = ?", (mailbox_id,))
        return _mailbox(row) if row else None

    def get_mailbox(self, mailbox_id):
        return self._run("get_mailbox", self._get_mailbox, mailbox_id, readonly=True)

    def find_mailbox(self, address):
        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT * FROM mailboxes WHERE address_lower = ?", (address.strip().lower(),)
            )
            return _mailbox(row) if row else None

        return self._run("find_mailbox", txn_fn, readonly=True)

    def list_mailboxes(self, status=None, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            if status:
                where.append("status = ?")
                params.append(status)
            sql = "SELECT * FROM mailboxes"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            rows = await txn.execute(sql, (*params, limit))
            return [_mailbox(r) for r in rows]

        return self._run("list_mailboxes", txn_fn, readonly=True)

    def update_mailbox(self, mailbox_id, **fields):
        allowed = {"status", "quota_bytes", "outbound_limits", "spam_thresholds", "used_bytes"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}")

        async def txn_fn(txn):
            sets, params = [], []
            for name, value in fields.items():
                if name == "outbound_limits":
                    value = _json(value or {})
                elif name == "spam_thresholds":
                    value = _json(value) if value else None
                sets.append(f"{name} = ?")
                params.append(value)
            sets.append("updated_at = ?")
            params.append(now_ns())
            await txn.execute(
                f"UPDATE mailboxes SET {', '.join(sets)} WHERE id = ?", (*params, mailbox_id)
            )
            if txn.rowcount == 0:
                return None
            await self._audit(txn, "mailbox.updated", "mailbox", mailbox_id, mailbox_id)
            return await self._get_mailbox(txn, mailbox_id)

        return self._run("update_mailbox", txn_fn)

    def delete_mailbox(self, mailbox_id):
        async def txn_fn(txn):
            now = now_ns()
            await txn.execute(
                "UPDATE mailboxes SET status = 'deleted', deleted_at = ?, updated_at = ? "
                "WHERE id = ?",
                (now, now, mailbox_id),
            )
            if txn.rowcount == 0:
                return None
            await txn.execute(
                "UPDATE app_passwords SET revoked_at = ?, deleted_at = ?, updated_at = ? "
                "WHERE mailbox_id = ? AND revoked_at IS NULL",
                (now, now, now, mailbox_id),
            )
            await self._audit(txn, "mailbox.deleted", "mailbox", mailbox_id, mailbox_id)
            return await self._get_mailbox(txn, mailbox_id)

        return self._run("delete_mailbox", txn_fn)

    def restore_mailbox(self, mailbox_id):
        async def txn_fn(txn):
            await txn.execute(
                "UPDATE mailboxes SET status = 'active', deleted_at = NULL, updated_at = ? "
                "WHERE id = ?",
                (now_ns(), mailbox_id),
            )
            if txn.rowcount == 0:
                return None
            await self._audit(txn, "mailbox.restored", "mailbox", mailbox_id, mailbox_id)
            return await self._get_mailbox(txn, mailbox_id)

        return self._run("restore_mailbox", txn_fn)

    def hard_delete_mailbox(self, mailbox_id, deleted_before=None):
        """API.md 1.2 "Hard delete" and 5.7: delete the mailbox row with its placements,
        message-label links, labels, folders, app passwords and Sieve state, and purge
        (``_purge``) each of its messages that no other mailbox's row refers to; blobs lose a
        reference and go later with ``collect_garbage``. One transaction. With
        ``deleted_before`` (ns) only a mailbox in status ``deleted`` since before it, checked
        under the mailbox row's lock (PostgreSQL ``FOR UPDATE``; SQLite's single writer), so
        a restore that committed first keeps it. Fire with True if it was deleted."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT status, deleted_at FROM mailboxes WHERE id = ?" + txn.for_update,
                (mailbox_id,),
            )
            if row is None:
                return False
            if deleted_before is not None and (
                row["status"] != "deleted"
                or row["deleted_at"] is None
                or row["deleted_at"] >= deleted_before
            ):
                return False
            messages = await txn.execute(
                "SELECT DISTINCT message_id FROM mailbox_messages WHERE mailbox_id = ?",
                (mailbox_id,),
            )
            await txn.execute(
                "DELETE FROM message_labels WHERE mailbox_message_id IN "
                "(SELECT id FROM mailbox_messages WHERE mailbox_id = ?)",
                (mailbox_id,),
            )
            await txn.execute("DELETE FROM mailbox_messages WHERE mailbox_id = ?", (mailbox_id,))
            # Folders (with their expunged_uids), labels, app passwords and Sieve rows follow
            # by ON DELETE CASCADE.
            await txn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
            for message in messages:
                await self._purge(txn, message["message_id"], unplaced=True)
            await self._audit(txn, "mailbox.hard_deleted", "mailbox", mailbox_id, mailbox_id)
            return True

        return self._run("hard_delete_mailbox", txn_fn)

    @defer.inlineCallbacks
    def create_app_password(self, mailbox_id, name, scopes):
        scopes = list(dict.fromkeys(scopes))
        bad = [s for s in scopes if s not in APP_PASSWORD_SCOPES]
        if bad:
            raise ValueError(f"unknown scopes {bad}")
        password = generate_password()
        hashed = yield self._thread(hash_password, password)
        password_id = new_id()
        now = now_ns()

        async def txn_fn(txn):
            await txn.execute(
                "INSERT INTO app_passwords (id, mailbox_id, name, password_hash, scopes, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (password_id, mailbox_id, name, hashed, _json(scopes), now, now),
            )
            await self._audit(txn, "app_password.created", "app_password", password_id, mailbox_id)
            row = await txn.execute_one("SELECT * FROM app_passwords WHERE id = ?", (password_id,))
            return _app_password(row)

        record = yield self._run("create_app_password", txn_fn)
        return record, password

    def list_app_passwords(self, mailbox_id, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("", before)
            where.append("mailbox_id = ?")
            params.append(mailbox_id)
            rows = await txn.execute(
                "SELECT * FROM app_passwords WHERE "
                + " AND ".join(where)
                + " ORDER BY created_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
            return [_app_password(r) for r in rows]

        return self._run("list_app_passwords", txn_fn, readonly=True)

    def revoke_app_password(self, password_id):
        async def txn_fn(txn):
            now = now_ns()
            row = await txn.execute_one("SELECT * FROM app_passwords WHERE id = ?", (password_id,))
            if row is None:
                return None
            await txn.execute(
                "UPDATE app_passwords SET revoked_at = COALESCE(revoked_at, ?), "
                "deleted_at = COALESCE(deleted_at, ?), updated_at = ? WHERE id = ?",
                (now, now, now, password_id),
            )
            await self._audit(
                txn, "app_password.revoked", "app_password", password_id, row["mailbox_id"]
            )
            row = await txn.execute_one("SELECT * FROM app_passwords WHERE id = ?", (password_id,))
            return _app_password(row)

        return self._run("revoke_app_password", txn_fn)

    @defer.inlineCallbacks
    def authenticate(self, address, password, scope):
        async def candidates(txn):
            mailbox = await txn.execute_one(
                "SELECT * FROM mailboxes WHERE address_lower = ? AND status = 'active' "
                "AND deleted_at IS NULL",
                (address.strip().lower(),),
            )
            if mailbox is None:
                return None, []
            rows = await txn.execute(
                "SELECT id, password_hash, scopes FROM app_passwords WHERE mailbox_id = ? "
                "AND revoked_at IS NULL AND deleted_at IS NULL ORDER BY created_at DESC",
                (mailbox["id"],),
            )
            return _mailbox(mailbox), [r for r in rows if scope in json.loads(r["scopes"])]

        mailbox, rows = yield self._run("authenticate", candidates, readonly=True)
        if mailbox is None:
            yield self._thread(_dummy_verify, password)
            return None
        for row in rows:
            ok = yield self._thread(verify_password, row["password_hash"], password)
            if ok:

                async def touch(txn, password_id):
                    await txn.execute(
                        "UPDATE app_passwords SET last_used_at = ? WHERE id = ?",
                        (now_ns(), password_id),
                    )

                try:
                    yield self._run("touch_app_password", touch, row["id"])
                except StorageUnavailable:
                    _log.warn("could not record last use of app password {id}", id=row["id"])
                return mailbox
        return None

    def record_login_failure(self, remote_ip, now, window, max_failures, lockout):
        """Count one failed login from ``remote_ip`` at ``now``; fire with the end of its lockout
        (ns) if the IP is locked now, else None.

        The count restarts when the previous window (``window`` ns from the first failure) or a
        previous lockout is over; reaching ``max_failures`` locks the IP for ``lockout`` ns. One
        upsert, so failures counted by several nodes at once all land.
        """

        async def txn_fn(txn):
            restart = "auth_lockouts.window_start <= ? OR auth_lockouts.locked_until <= ?"
            await txn.execute(
                "INSERT INTO auth_lockouts (remote_ip, failures, window_start, locked_until, "
                "updated_at) VALUES (?, 1, ?, NULL, ?) ON CONFLICT (remote_ip) DO UPDATE SET "
                f"failures = CASE WHEN {restart} THEN 1 ELSE auth_lockouts.failures + 1 END, "
                f"window_start = CASE WHEN {restart} THEN excluded.window_start "
                "ELSE auth_lockouts.window_start END, "
                f"locked_until = CASE WHEN {restart} THEN NULL "
                "ELSE auth_lockouts.locked_until END, "
                "updated_at = excluded.updated_at",
                (remote_ip, now, now, now - window, now, now - window, now, now - window, now),
            )
            await txn.execute(
                "UPDATE auth_lockouts SET locked_until = ? WHERE remote_ip = ? "
                "AND failures >= ? AND locked_until IS NULL",
                (now + lockout, remote_ip, max_failures),
            )
            row = await txn.execute_one(
                "SELECT locked_until FROM auth_lockouts WHERE remote_ip = ?", (remote_ip,)
            )
            until = row["locked_until"] if row else None
            return until if until is not None and until > now else None

        return self._run("record_login_failure", txn_fn)

    def login_locked(self, remote_ip, now):
        """Fire with the end of ``remote_ip``'s lockout (ns) if locked at ``now``, else None."""

        async def txn_fn(txn):
            row = await txn.execute_one(
                "SELECT locked_until FROM auth_lockouts WHERE remote_ip = ? AND locked_until > ?",
                (remote_ip, now),
            )
            return row["locked_until"] if row else None

        return self._run("login_locked", txn_fn, readonly=True)

    def clear_login_failures(self, remote_ip):
        """Forget ``remote_ip``'s failures (after a successful login); fire with None."""

        async def txn_fn(txn):
            await txn.execute("DELETE FROM auth_lockouts WHERE remote_ip = ?", (remote_ip,))

        return self._run("clear_login_failures", txn_fn)

    def prune_login_failures(self, before):
        """Delete throttling rows last updated before ``before`` (ns) whose lockout, if any, is
        over; fire with how many went. Housekeeping calls it with "now - 24 h"."""

        async def txn_fn(txn):
            await txn.execute(
                "DELETE FROM auth_lockouts WHERE updated_at < ? "
                "AND (locked_until IS NULL OR locked_until < ?)",
                (before, before),
            )
            return txn.rowcount

        return self._run("prune_login_failures", txn_fn)

    @staticmethod
    async def _domain_room(txn, domain, lock=False) -> int | None:
        """Bytes ``domain`` can still take under its quota, or None if it has none.

        With ``lock`` the domain row is locked first (a no-op UPDATE: a row lock on PostgreSQL,
        the database write lock SQLite already holds), so the sum read next stays true until
        the caller commits: every transaction that adds bytes to the domain takes this lock
        first, and a concurrent one waits for our commit (or, under snapshot isolation, fails
        with a serialization error and is retried by the engine).
        """
        if lock:
            await txn.execute(
                "UPDATE domains SET quota_bytes = quota_bytes WHERE name = ? AND quota_bytes > 0",
                (domain,),
            )
            if txn.rowcount == 0:
                return None
        row = await txn.execute_one(
            "SELECT d.quota_bytes, (SELECT CAST(COALESCE(SUM(m.used_bytes), 0) AS BIGINT) "
            "FROM mailboxes m WHERE m.domain = d.name) AS used_bytes "
            "FROM domains d WHERE d.name = ?",
            (domain,),
        )
        if row is None or row["quota_bytes"] <= 0:
            return None
        return row["quota_bytes"] - row["used_bytes"]

    async def _charge_quota(self, txn, mailbox_ids, size) -> list[str]:
        """Add ``size`` bytes to each mailbox of ``mailbox_ids`` (one entry per placement; a
        mailbox may appear twice) where its quota and its domain's quota both allow it
        (API.md 5.6: refused when ``used + size > quota``). Returns, per entry, "" when
        charged, else which quota refused it: "mailbox" or "domain".

        The mailbox check is the UPDATE's own condition, so it holds against concurrent
        deliveries without a read-then-write race. Domains are locked first, in name order,
        then mailboxes are charged in id order: concurrent deliveries take their locks in one
        order and cannot deadlock each other.
        """
        clause, params = txn.in_clause("id", sorted(set(mailbox_ids)))
        rows = await txn.execute(f"SELECT id, domain FROM mailboxes WHERE {clause}", params)
        domains = {row["id"]: row["domain"] for row in rows}
        for mailbox_id in mailbox_ids:
            if mailbox_id not in domains:
                raise KeyError(f"no mailbox {mailbox_id}")
        room = {}
        for domain in sorted(set(domains.values())):
            room[domain] = await self._domain_room(txn, domain, lock=True)
        refusals = [""] * len(mailbox_ids)
        for i in sorted(range(len(mailbox_ids)), key=lambda i: mailbox_ids[i]):
            mailbox_id = mailbox_ids[i]
            left = room[domains[mailbox_id]]
            if left is not None and size > left:
                refusals[i] = "domain"
                continue
            await txn.execute(
                "UPDATE mailboxes SET used_bytes = used_bytes + ? WHERE id = ? "
                "AND (quota_bytes <= 0 OR used_bytes + ? <= quota_bytes)",
                (size, mailbox_id, size),
            )
            if txn.rowcount == 0:
                refusals[i] = "mailbox"
            elif left is not None:
                room[domains[mailbox_id]] = left - size
        return refusals

    def recompute_usage(self, mailbox_id):
        async def txn_fn(txn):
            # Lock the mailbox row before summing: a delivery or expunge changing it commits
            # before our sum is read, or waits until we commit and then applies its delta.
            await txn.execute(
                "UPDATE mailboxes SET updated_at = ? WHERE id = ?", (now_ns(), mailbox_id)
            )
            if txn.rowcount == 0:
                return None
            row = await txn.execute_one(
                "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS used "
                "FROM mailbox_messages WHERE mailbox_id = ? AND deleted_at IS NULL",
                (mailbox_id,),
            )
            await txn.execute(
                "UPDATE mailboxes SET used_bytes = ? WHERE id = ?", (row["used"], mailbox_id)
            )
            return row["used"]

        return self._run("recompute_usage", txn_fn)

    _DOMAIN_SELECT = (
        "SELECT d.name, d.quota_bytes, d.created_at, d.updated_at, "
        "(SELECT CAST(COALESCE(SUM(m.used_bytes), 0) AS BIGINT) FROM mailboxes m "
        "WHERE m.domain = d.name) AS used_bytes, "
        "(SELECT COUNT(*) FROM mailboxes m WHERE m.domain = d.name) AS mailbox_count "
        "FROM domains d"
    )

    @classmethod
    async def _get_domain(cls, txn, name):
        row = await txn.execute_one(cls._DOMAIN_SELECT + " WHERE d.name = ?", (name,))
        return _domain(row) if row else None

    def get_domain(self, name):
        return self._run("get_domain", self._get_domain, _domain_name(name), readonly=True)

    def list_domains(self, limit=50, before=None):
        async def txn_fn(txn):
            sql, params = self._DOMAIN_SELECT, []
            if before is not None:
                created_at, name = before
                sql += " WHERE (d.created_at < ? OR (d.created_at = ? AND d.name < ?))"
                params = [created_at, created_at, name]
            sql += " ORDER BY d.created_at DESC, d.name DESC LIMIT ?"
            return [_domain(row) for row in await txn.execute(sql, (*params, limit))]

        return self._run("list_domains", txn_fn, readonly=True)

    def set_domain_quota(self, name, quota_bytes):
        name = _domain_name(name)
        if not name:
            raise ValueError("a domain needs a name")

        async def txn_fn(txn):
            now = now_ns()
            # Insert-or-nothing first, so two concurrent first PUTs cannot both insert.
            await txn.execute(
                "INSERT INTO domains (name, quota_bytes, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, quota_bytes, now, now),
            )
            created = txn.rowcount == 1
            if not created:
                await txn.execute(
                    "UPDATE domains SET quota_bytes = ?, updated_at = ? WHERE name = ?",
                    (quota_bytes, now, name),
                )
            event = "domain.created" if created else "domain.updated"
            await self._audit(txn, event, "domain", name)
            return await self._get_domain(txn, name), created

        return self._run("set_domain_quota", txn_fn)
