"""The mail store: SQL for metadata, a blob store for bodies, one code path for every engine.

Only this module writes rows. Each public method is one transaction; delivery leases and stores
the blobs first and commits the metadata in one transaction after, so a failure at any point
leaves nothing visible (an unreferenced blob at worst, which garbage collection removes). How a
message is split into blobs, and why garbage collection never removes a blob a delivery is about
to reference, is in docs/storage.md.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import secrets

import attrs
import ulid
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from haitatsu import mime
from haitatsu.interfaces import (
    Conflict,
    FolderExists,
    FolderHasChildren,
    FolderProtected,
    IMailStore,
    InvalidFolderName,
    NoSuchFolder,
    OverQuota,
    StorageUnavailable,
)
from haitatsu.storage import layout as layoutmod
from haitatsu.storage.records import (
    APP_PASSWORD_SCOPES,
    FLAG_COLUMNS,
    SYSTEM_FOLDERS,
    AppPassword,
    CopyResult,
    Domain,
    Folder,
    Mailbox,
    MailboxMessage,
    MessageInfo,
    Recipient,
    address_domain,
    now_ns,
)

_log = Logger()

# The original's parameters and encoding: argon2id$v=19$m=65536,t=1,p=4$<salt>$<key>.
_hasher = PasswordHasher(time_cost=1, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16)


def new_id() -> str:
    return str(ulid.ULID())


def hash_password(password: str) -> str:
    return _hasher.hash(password).lstrip("$")


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify("$" + stored.lstrip("$"), password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """24 random bytes, base64url without padding: 32 characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).rstrip(b"=").decode("ascii")


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: str) -> str:
    """A message-derived string fit for a TEXT column: PostgreSQL refuses NUL characters, which a
    decoded text part (or a header) may contain; they become U+FFFD on every engine alike."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _mailbox(row) -> Mailbox:
    return Mailbox(
        id=row["id"],
        primary_address=row["primary_address"],
        status=row["status"],
        quota_bytes=row["quota_bytes"],
        used_bytes=row["used_bytes"],
        outbound_limits=json.loads(row["outbound_limits"] or "{}"),
        spam_thresholds=json.loads(row["spam_thresholds"]) if row["spam_thresholds"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


def _app_password(row) -> AppPassword:
    return AppPassword(
        id=row["id"],
        mailbox_id=row["mailbox_id"],
        name=row["name"],
        scopes=tuple(json.loads(row["scopes"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        deleted_at=row["deleted_at"],
    )


def _folder(row) -> Folder:
    return Folder(
        id=row["id"],
        mailbox_id=row["mailbox_id"],
        name=row["name"],
        system=bool(row["system"]),
        special_use=row["special_use"],
        uid_validity=row["uid_validity"],
        uid_next=row["uid_next"],
        highest_modseq=row["highest_modseq"],
        subscribed=bool(row["subscribed"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_MM_COLUMNS = (
    "mm.id, mm.mailbox_id, mm.message_id, mm.folder_id, mm.uid, mm.modseq, mm.original_rcpt, "
    "mm.base_rcpt, mm.plus_tag, mm.resolved_route_id, mm.read, mm.flagged, mm.answered, mm.draft, "
    "mm.imap_deleted, mm.keywords, mm.internal_date, mm.size_bytes, mm.created_at, "
    "mm.updated_at, mm.deleted_at"
)

_MSG_COLUMNS = (
    "m.id AS m_id, m.trace_id AS m_trace_id, m.rfc_message_id AS m_rfc_message_id, "
    "m.blob_key AS m_blob_key, m.sha256 AS m_sha256, m.size_bytes AS m_size_bytes, "
    "m.headers AS m_headers, m.from_addresses AS m_from_addresses, "
    "m.to_addresses AS m_to_addresses, m.cc_addresses AS m_cc_addresses, "
    "m.bcc_addresses AS m_bcc_addresses, m.subject AS m_subject, m.date AS m_date, "
    "m.text_body_extract AS m_text_body_extract, m.html_body_extract AS m_html_body_extract, "
    "m.attachments AS m_attachments, m.spam_score AS m_spam_score, "
    "m.auth_results AS m_auth_results, m.envelope AS m_envelope, m.body AS m_body, "
    "m.bodystructure AS m_bodystructure, m.header_size AS m_header_size, m.parts AS m_parts, "
    "m.created_at AS m_created_at, m.updated_at AS m_updated_at, m.deleted_at AS m_deleted_at, "
    "m.layout AS m_layout"
)

_JSON_MESSAGE_FIELDS = (
    "headers",
    "from_addresses",
    "to_addresses",
    "cc_addresses",
    "bcc_addresses",
    "attachments",
    "auth_results",
    "parts",
    "layout",
)


def _mailbox_message(row) -> MailboxMessage:
    return MailboxMessage(
        id=row["id"],
        mailbox_id=row["mailbox_id"],
        message_id=row["message_id"],
        folder_id=row["folder_id"],
        uid=row["uid"],
        modseq=row["modseq"],
        original_rcpt=row["original_rcpt"],
        base_rcpt=row["base_rcpt"],
        plus_tag=row["plus_tag"],
        resolved_route_id=row["resolved_route_id"],
        read=bool(row["read"]),
        flagged=bool(row["flagged"]),
        answered=bool(row["answered"]),
        draft=bool(row["draft"]),
        imap_deleted=bool(row["imap_deleted"]),
        keywords=tuple(json.loads(row["keywords"] or "[]")),
        internal_date=row["internal_date"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


def _message_info(row) -> MessageInfo:
    values = {}
    for field in attrs.fields(MessageInfo):
        value = row["m_" + field.name]
        if field.name in _JSON_MESSAGE_FIELDS:
            value = json.loads(value or "null")
        values[field.name] = value
    return MessageInfo(**values)


def _flag_columns(flags) -> tuple[dict, list]:
    """Split IMAP flags into the system flag columns and the keyword list."""
    columns = dict.fromkeys(FLAG_COLUMNS.values(), False)
    keywords = []
    by_lower = {k.lower(): v for k, v in FLAG_COLUMNS.items()}
    for flag in flags:
        column = by_lower.get(flag.lower())
        if column:
            columns[column] = True
        elif flag.lower() != "\\recent" and flag not in keywords:
            keywords.append(flag)
    return columns, keywords


#: ``storage.attachment_dedup_threshold_bytes`` by default: leaf parts this large get own blobs.
DEFAULT_DEDUP_THRESHOLD = 64 * 1024

#: Pauses (seconds) before a delivery leases, stores and commits again after garbage collection
#: got in its way (``_LeaseLost``, ``_BlobBusy``); when they are used up it gives up with
#: ``StorageUnavailable``, a temporary failure.
DELIVERY_RETRY_DELAYS = (0.05, 0.2, 1.0)

#: A garbage collection claim older than this is taken to belong to a pass that died between
#: claiming a blob and removing it, and a later pass finishes the job. It must exceed the
#: longest a blob store's delete call can take (docs/storage.md).
CLAIM_TIMEOUT_SECONDS = 900

#: ``blobs.refcount`` of a row claimed by garbage collection: its object is being deleted.
_CLAIMED = -1


class _LeaseLost(Exception):
    """A blob row leased by a delivery was claimed by garbage collection before the delivery
    committed: the blob may be gone, so the delivery stores it again."""


class _BlobBusy(Exception):
    """Garbage collection is deleting this blob right now: the delivery waits and retries."""


@implementer(IMailStore)
class MailStore:
    """The store.

    ``attachment_dedup_threshold`` (bytes, 0 = off) is the size from which a leaf part's body is
    stored as a blob of its own. ``before_commit`` is an optional callable run with the blob keys
    after a delivery stored its blobs and before its metadata transaction, and
    ``before_blob_delete`` with a key after garbage collection claimed it and before it deletes
    the object; a Deferred either returns is waited for. They exist for race and fault tests
    (pausing one side there), and are None in production.
    """

    def __init__(
        self,
        database,
        blobs,
        changes,
        reactor,
        hash_pool=None,
        attachment_dedup_threshold=DEFAULT_DEDUP_THRESHOLD,
    ):
        self.db = database
        self.blobs = blobs
        self.changes = changes
        self._reactor = reactor
        self._hash_pool = hash_pool if hash_pool is not None else reactor.getThreadPool()
        self.attachment_dedup_threshold = attachment_dedup_threshold
        self.before_commit = None
        self.before_blob_delete = None

    async def open(self):
        """Connect and apply schema migrations; until this is done every call is unavailable."""
        await self.db.open()
        try:
            await self.db.migrate()
            await self.changes.open()
        except BaseException:
            await self.db.close()
            raise

    async def close(self):
        await self.changes.close()
        await self.db.close()
        close_blobs = getattr(self.blobs, "close", None)  # the S3 store's connection pool
        if close_blobs is not None:
            await close_blobs()

    async def _announce(self, txn, mailbox_id, change):
        """Publish ``change`` as part of ``txn``: heard on every node once it commits."""
        result = self.changes.publish_in(txn, mailbox_id, change)
        if inspect.isawaitable(result):
            await result

    def _thread(self, fn, *args):
        return deferToThreadPool(self._reactor, self._hash_pool, fn, *args)

    # -- audit ------------------------------------------------------------------------------

    @staticmethod
    async def _audit(txn, event_type, entity_type, entity_id, mailbox_id=""):
        await txn.execute(
            "INSERT INTO audit_events (id, event_type, entity_type, entity_id, mailbox_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (new_id(), event_type, entity_type, entity_id, mailbox_id, now_ns()),
        )

    # -- mailboxes --------------------------------------------------------------------------

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

    def resolve_recipient(self, address):
        """API.md 5.2 steps 2 and 4 for mailboxes: the exact address, then ``user+tag`` as
        ``user``. Routes, patterns and catch-alls join when routes exist."""
        original = address.strip()
        lowered = original.lower()
        local, at, domain = lowered.rpartition("@")
        plus_tag = ""
        base = lowered
        if at and "+" in local:
            base_local, _, plus_tag = local.partition("+")
            base = f"{base_local}@{domain}"

        async def txn_fn(txn):
            candidates = [lowered] if not plus_tag else [base]
            for candidate in candidates:
                row = await txn.execute_one(
                    "SELECT id, domain, quota_bytes, used_bytes FROM mailboxes "
                    "WHERE address_lower = ? AND status = 'active' AND deleted_at IS NULL",
                    (candidate,),
                )
                if row:
                    over_quota = ""
                    if row["quota_bytes"] > 0 and row["used_bytes"] >= row["quota_bytes"]:
                        over_quota = "mailbox"
                    else:
                        room = await self._domain_room(txn, row["domain"])
                        if room is not None and room <= 0:
                            over_quota = "domain"
                    return Recipient(
                        mailbox_id=row["id"],
                        original_rcpt=original,
                        base_rcpt=base,
                        plus_tag=plus_tag,
                        over_quota=over_quota,
                    )
            return None

        if not at or not local or not domain:
            return defer.succeed(None)
        return self._run("resolve_recipient", txn_fn, readonly=True)

    # -- app passwords ----------------------------------------------------------------------

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

    # -- login throttling -------------------------------------------------------------------

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

    # -- folders ----------------------------------------------------------------------------

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

    # -- folder management -------------------------------------------------------------------

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

    def _run_noting(self, desc, fn, *args):
        """Run a write transaction ``fn(txn, *args, notes)`` that collects the changes it
        makes as ``(mailbox_id, change)`` in ``notes``; they are announced inside the same
        transaction, so every node hears them once it commits and never if it fails."""

        async def txn_fn(txn, *args):
            notes: list = []
            result = await fn(txn, *args, notes)
            for mailbox_id, change in notes:
                await self._announce(txn, mailbox_id, change)
            return result

        return self._run(desc, txn_fn, *args)

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

        return self._run_noting("rename_folder", txn_fn)

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

    # -- copy and move ------------------------------------------------------------------------

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
            first, modseq = await self._allocate_uids(txn, target.id, len(rows))
            now = now_ns()
            new_uids = []
            for i, mm in enumerate(rows):
                row_id, uid = new_id(), first + i
                # One statement per row, copying every column but identity and placement, so
                # the copy shares the message row (and its blob) with the original.
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
            return CopyResult(
                target.id, target.uid_validity, tuple(mm.uid for mm in rows), tuple(new_uids)
            )

        if not uids:
            return self.get_folder_by_id(target_folder_id).addCallback(_empty_copy_result)
        return self._run_noting("copy_messages", txn_fn)

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
        if source.id != target.id:
            await self._bump_modseq(txn, source.id)
        return CopyResult(
            target.id, target.uid_validity, tuple(mm.uid for mm in rows), tuple(new_uids)
        )

    @staticmethod
    async def _allocate_uids(txn, folder_id, count) -> tuple[int, int]:
        """Take ``count`` consecutive UIDs and one MODSEQ of the folder, in the caller's
        transaction; return the first UID and the MODSEQ."""
        await txn.execute(
            "UPDATE folders SET uid_next = uid_next + ?, highest_modseq = highest_modseq + 1, "
            "updated_at = ? WHERE id = ?",
            (count, now_ns(), folder_id),
        )
        row = await txn.execute_one(
            "SELECT uid_next, highest_modseq FROM folders WHERE id = ?", (folder_id,)
        )
        return row["uid_next"] - count, row["highest_modseq"]

    @staticmethod
    async def _allocate_uid(txn, folder_id) -> tuple[int, int]:
        """Take the folder's next UID and MODSEQ, in the caller's transaction."""
        await txn.execute(
            "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1, "
            "updated_at = ? WHERE id = ?",
            (now_ns(), folder_id),
        )
        row = await txn.execute_one(
            "SELECT uid_next, highest_modseq FROM folders WHERE id = ?", (folder_id,)
        )
        return row["uid_next"] - 1, row["highest_modseq"]

    @staticmethod
    async def _bump_modseq(txn, folder_id) -> int:
        await txn.execute(
            "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = ?", (folder_id,)
        )
        row = await txn.execute_one("SELECT highest_modseq FROM folders WHERE id = ?", (folder_id,))
        return row["highest_modseq"]

    # -- quotas -----------------------------------------------------------------------------

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

    # -- delivery ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def deliver(self, spool_path, deliveries, trace_id, auth_results=None, internal_date=None):
        deliveries = list(deliveries)
        if not deliveries:
            raise ValueError("deliver needs at least one Delivery")
        # Parsing never fails (see _parse_safely); its part offsets decide the split.
        parsed = yield self._thread(_parse_safely, spool_path)
        try:
            prepared = yield self._thread(
                layoutmod.prepare,
                spool_path,
                parsed.parts,
                self.attachment_dedup_threshold,
                os.path.dirname(os.path.abspath(spool_path)),
            )
        except OSError as e:
            raise StorageUnavailable(f"spool: {e}") from e
        try:
            for attempt, delay in enumerate((*DELIVERY_RETRY_DELAYS, None), 1):
                try:
                    generations = yield defer.Deferred.fromCoroutine(self._store_blobs(prepared))
                    placed, message_id = yield self._commit_delivery(
                        prepared,
                        generations,
                        parsed,
                        deliveries,
                        trace_id,
                        auth_results,
                        internal_date,
                    )
                    break
                except (_LeaseLost, _BlobBusy) as e:
                    _log.warn(
                        "blob {key} is being collected during delivery (attempt {attempt}); "
                        "storing it again",
                        key=str(e),
                        attempt=attempt,
                        trace_id=trace_id,
                    )
                    if delay is None:
                        raise StorageUnavailable(
                            "blobs kept being collected during delivery"
                        ) from None
                    yield task.deferLater(self._reactor, delay, lambda: None)
        finally:
            yield self._thread(prepared.remove_temporary)
        _log.info(
            "stored message {message_id} ({size} bytes, {blobs} blobs) for {count} placements",
            message_id=message_id,
            size=prepared.size,
            blobs=len(prepared.pieces),
            count=len(placed),
            trace_id=trace_id,
        )
        return placed

    async def _store_blobs(self, prepared) -> dict[str, str]:
        """Lease every blob of the message, then put it; return the leased row generations.

        The lease (a ``blobs`` row touched before the put) is what keeps garbage collection
        away from a blob between its put and the commit that references it: see
        docs/storage.md for the argument.
        """
        pieces = sorted(prepared.pieces, key=lambda p: p.key)

        async def lease(txn):
            now = now_ns()
            generations = {}
            for piece in pieces:
                await txn.execute(
                    "INSERT INTO blobs (blob_key, size_bytes, refcount, created_at, updated_at, "
                    "generation) VALUES (?, ?, 0, ?, ?, ?) "
                    "ON CONFLICT (blob_key) DO UPDATE SET updated_at = ? "
                    "WHERE blobs.refcount >= 0",
                    (piece.key, piece.size, now, now, new_id(), now),
                )
                row = await txn.execute_one(
                    "SELECT generation, refcount FROM blobs WHERE blob_key = ?", (piece.key,)
                )
                if row["refcount"] < 0:
                    raise _BlobBusy(piece.key)
                generations[piece.key] = row["generation"]
            return generations

        generations = await self.db.run("lease_blobs", lease)
        for piece in prepared.pieces:
            ref = await self.blobs.put_file(piece.path)
            if ref.key != piece.key:
                raise StorageUnavailable(f"blob store named {piece.key} {ref.key}")
        if self.before_commit is not None:
            await defer.maybeDeferred(self.before_commit, [p.key for p in pieces])
        return generations

    def _commit_delivery(
        self, prepared, generations, parsed, deliveries, trace_id, auth_results, internal_date
    ):
        """One transaction: blob references, the message row, its placements, quotas."""
        internal = internal_date or now_ns()
        message_id = new_id()
        size = prepared.size

        async def txn_fn(txn):
            now = now_ns()
            for key in sorted(generations):
                await txn.execute(
                    "UPDATE blobs SET refcount = refcount + 1, updated_at = ? "
                    "WHERE blob_key = ? AND generation = ? AND refcount >= 0",
                    (now, key, generations[key]),
                )
                if txn.rowcount != 1:
                    raise _LeaseLost(key)
            await txn.execute(
                "INSERT INTO messages (id, trace_id, rfc_message_id, blob_key, sha256, size_bytes, "
                "headers, from_addresses, to_addresses, cc_addresses, bcc_addresses, subject, "
                "date, text_body_extract, html_body_extract, attachments, spam_score, "
                "auth_results, envelope, body, bodystructure, header_size, parts, layout, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    trace_id,
                    _text(parsed.rfc_message_id),
                    prepared.blob_key,
                    prepared.sha256,
                    size,
                    _json(parsed.headers),
                    _json(parsed.from_addresses),
                    _json(parsed.to_addresses),
                    _json(parsed.cc_addresses),
                    _json(parsed.bcc_addresses),
                    _text(parsed.subject),
                    parsed.date,
                    _text(parsed.text_body_extract),
                    _text(parsed.html_body_extract),
                    _json(parsed.attachments),
                    0.0,
                    _json(auth_results or {}),
                    _text(parsed.envelope),
                    _text(parsed.body),
                    _text(parsed.bodystructure),
                    parsed.header_size,
                    _json(parsed.parts),
                    _json(prepared.layout) if prepared.layout else None,
                    now,
                    now,
                ),
            )
            placements, seen = [], set()
            for delivery in deliveries:
                key = (delivery.mailbox_id, delivery.folder)
                if key not in seen:
                    seen.add(key)
                    placements.append(delivery)
            refusals = await self._charge_quota(txn, [p.mailbox_id for p in placements], size)
            placed, over_quota = [], []
            for delivery, refused in zip(placements, refusals, strict=True):
                if refused:
                    over_quota.append(f"{delivery.mailbox_id} ({refused} quota)")
                    continue
                folder = await self._get_folder(txn, delivery.mailbox_id, delivery.folder)
                if folder is None:
                    raise KeyError(f"no folder {delivery.folder!r} in {delivery.mailbox_id}")
                uid, modseq = await self._allocate_uid(txn, folder.id)
                columns, keywords = _flag_columns(delivery.flags)
                row_id = new_id()
                await txn.execute(
                    "INSERT INTO mailbox_messages (id, mailbox_id, message_id, folder_id, uid, "
                    "modseq, original_rcpt, base_rcpt, plus_tag, resolved_route_id, read, "
                    "flagged, answered, draft, imap_deleted, keywords, internal_date, size_bytes, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?, ?, ?)",
                    (
                        row_id,
                        delivery.mailbox_id,
                        message_id,
                        folder.id,
                        uid,
                        modseq,
                        delivery.original_rcpt,
                        delivery.base_rcpt,
                        delivery.plus_tag,
                        delivery.route_id,
                        columns["read"],
                        columns["flagged"],
                        columns["answered"],
                        columns["draft"],
                        columns["imap_deleted"],
                        _json(keywords),
                        internal,
                        size,
                        now,
                        now,
                    ),
                )
                row = await txn.execute_one(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?", (row_id,)
                )
                mm = _mailbox_message(row)
                placed.append(mm)
                await self._announce(
                    txn,
                    mm.mailbox_id,
                    {"type": "exists", "folder_id": mm.folder_id, "uid": mm.uid, "id": mm.id},
                )
            if not placed:
                raise OverQuota(", ".join(over_quota))
            return placed, message_id

        d = self._run("deliver", txn_fn)

        def unknown(failure):
            failure.trap(KeyError)
            raise ValueError(str(failure.value))

        return d.addErrback(unknown)

    # -- reading messages ---------------------------------------------------------------------

    def list_folder_messages(self, folder_id):
        async def txn_fn(txn):
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL ORDER BY mm.uid",
                (folder_id,),
            )
            return [_mailbox_message(r) for r in rows]

        return self._run("list_folder_messages", txn_fn, readonly=True)

    def get_messages(self, folder_id, uids):
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            out = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                    "JOIN messages m ON m.id = mm.message_id WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid",
                    (folder_id, *params),
                )
                out.extend((_mailbox_message(r), _message_info(r)) for r in rows)
            return out

        if not uids:
            return defer.succeed([])
        return self._run("get_messages", txn_fn, readonly=True)

    def get_message_view(self, mailbox_message_id):
        async def txn_fn(txn):
            row = await txn.execute_one(
                f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE mm.id = ? "
                "AND mm.deleted_at IS NULL",
                (mailbox_message_id,),
            )
            return (_mailbox_message(row), _message_info(row)) if row else None

        return self._run("get_message_view", txn_fn, readonly=True)

    def list_messages(
        self, mailbox_id, folder_id=None, read=None, flagged=None, limit=50, before=None
    ):
        async def txn_fn(txn):
            where, params = _page_where("mm.", before)
            where += ["mm.mailbox_id = ?", "mm.deleted_at IS NULL"]
            params.append(mailbox_id)
            if folder_id:
                where.append("mm.folder_id = ?")
                params.append(folder_id)
            if read is not None:
                where.append("mm.read = ?")
                params.append(bool(read))
            if flagged is not None:
                where.append("mm.flagged = ?")
                params.append(bool(flagged))
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE "
                + " AND ".join(where)
                + " ORDER BY mm.created_at DESC, mm.id DESC LIMIT ?",
                (*params, limit),
            )
            return [(_mailbox_message(r), _message_info(r)) for r in rows]

        return self._run("list_messages", txn_fn, readonly=True)

    # -- message bytes ------------------------------------------------------------------------

    def open_message(self, info):
        """Fire with a binary file of the whole message as received, positioned at 0, which
        the caller closes. Seekable; memory does not depend on the message's size."""
        return defer.Deferred.fromCoroutine(self._open_message(info))

    async def _open_message(self, info):
        if not info.layout:
            return await self.blobs.open(info.blob_key)
        files = {}
        try:
            for key, _, _ in info.segments:
                if key not in files:
                    files[key] = await self.blobs.open(key)
        except BaseException:
            for f in files.values():
                f.close()
            raise
        return layoutmod.SegmentReader(files, info.segments)

    def read_message(self, info, start=0, length=None):
        """Fire with ``length`` bytes (to the end if None) of the message from ``start``: for
        headers and other small ranges; stream large ones from ``open_message``."""
        return defer.Deferred.fromCoroutine(self._read_message(info, start, length))

    async def _read_message(self, info, start, length):
        if not info.layout:
            return await self.blobs.read(info.blob_key, start, length)
        end = info.size_bytes if length is None else min(info.size_bytes, start + length)
        out = []
        position = 0
        for key, offset, size in info.segments:
            low, high = max(start, position), min(end, position + size)
            if low < high:
                out.append(await self.blobs.read(key, offset + low - position, high - low))
            position += size
            if position >= end:
                break
        return b"".join(out)

    # -- purge and garbage collection -------------------------------------------------------

    def purge_message(self, message_id):
        """Delete a message row for good once no live placement references it: its
        soft-deleted placements go with it and each of its blobs loses one reference (the blobs
        themselves go later, through ``collect_garbage``). Fire with True if it was purged."""

        async def txn_fn(txn):
            live = await txn.execute_one(
                "SELECT COUNT(*) AS n FROM mailbox_messages WHERE message_id = ? "
                "AND deleted_at IS NULL",
                (message_id,),
            )
            if live["n"]:
                return False
            row = await txn.execute_one(
                "SELECT blob_key, size_bytes, layout FROM messages WHERE id = ?", (message_id,)
            )
            if row is None:
                return False
            await txn.execute("DELETE FROM mailbox_messages WHERE message_id = ?", (message_id,))
            await txn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            now = now_ns()
            for key in _message_blob_keys(row["blob_key"], row["layout"]):
                await txn.execute(
                    "UPDATE blobs SET refcount = refcount - 1, updated_at = ? "
                    "WHERE blob_key = ? AND refcount > 0",
                    (now, key),
                )
            await self._audit(txn, "message.purged", "message", message_id)
            return True

        return self._run("purge_message", txn_fn)

    def collect_garbage(self, grace_seconds=86400, batch=200, should_continue=None):
        """Remove blobs no message references: rows with ``refcount`` 0 untouched for
        ``grace_seconds``, and objects older than that with no row at all. Fire with a dict of
        counts (``unreferenced``, ``orphans``, ``bytes``).

        ``should_continue`` (a callable) is asked between blobs; False ends the pass early
        (shutdown). Never removes a blob a delivery in flight is about to reference: see
        docs/storage.md ("Garbage collection") for why.
        """
        return defer.Deferred.fromCoroutine(
            self._collect_garbage(grace_seconds, batch, should_continue or (lambda: True))
        )

    async def _collect_garbage(self, grace_seconds, batch, should_continue):
        now = now_ns()
        cutoff = now - int(grace_seconds * 1_000_000_000)
        stale_claims = now - CLAIM_TIMEOUT_SECONDS * 1_000_000_000
        report = {"unreferenced": 0, "orphans": 0, "bytes": 0}

        async def candidates(txn, after):
            return await txn.execute(
                "SELECT blob_key, size_bytes FROM blobs WHERE ((refcount = 0 AND updated_at < ?) "
                "OR (refcount = ? AND updated_at < ?)) AND blob_key > ? ORDER BY blob_key LIMIT ?",
                (cutoff, _CLAIMED, stale_claims, after, batch),
            )

        async def claim_row(txn, key, token):
            await txn.execute(
                "UPDATE blobs SET refcount = ?, generation = ?, updated_at = ? WHERE blob_key = ? "
                "AND ((refcount = 0 AND updated_at < ?) OR (refcount = ? AND updated_at < ?))",
                (_CLAIMED, token, now_ns(), key, cutoff, _CLAIMED, stale_claims),
            )
            return txn.rowcount == 1

        async def claim_orphan(txn, key, token):
            now = now_ns()
            await txn.execute(
                "INSERT INTO blobs (blob_key, size_bytes, refcount, created_at, updated_at, "
                "generation) VALUES (?, 0, ?, ?, ?, ?) ON CONFLICT (blob_key) DO NOTHING",
                (key, _CLAIMED, now, now, token),
            )
            return txn.rowcount == 1

        async def release(txn, key, token):
            await txn.execute(
                "DELETE FROM blobs WHERE blob_key = ? AND refcount = ? AND generation = ?",
                (key, _CLAIMED, token),
            )

        async def collect(desc, claim, key) -> bool:
            """Claim the row, delete the object, delete the row: three steps, each atomic.
            While the row is claimed no delivery can lease the blob (it waits), and a lease
            taken before the claim can no longer be committed."""
            token = new_id()
            if not await self.db.run(desc, claim, key, token):
                return False
            if self.before_blob_delete is not None:
                await defer.maybeDeferred(self.before_blob_delete, key)
            # A failure here keeps the claim: the object may be half gone, so deliveries wait
            # until a later pass takes over the stale claim and finishes.
            await self.blobs.delete(key)
            try:
                await self.db.run("gc_release", release, key, token)
            except Conflict:
                _log.critical(
                    "blob {key} had no references but a message names it; it is gone", key=key
                )
            return True

        after = ""
        while should_continue():
            rows = await self.db.run("gc_candidates", candidates, after, readonly=True)
            for row in rows:
                if not should_continue():
                    break
                if await collect("gc_claim", claim_row, row["blob_key"]):
                    report["unreferenced"] += 1
                    report["bytes"] += row["size_bytes"]
            if len(rows) < batch:
                break
            after = rows[-1]["blob_key"]

        async def known(txn, keys):
            clause, params = txn.in_clause("blob_key", keys)
            rows = await txn.execute(f"SELECT blob_key FROM blobs WHERE {clause}", params)
            return {r["blob_key"] for r in rows}

        after = ""
        while should_continue():
            listed = await self.blobs.list_keys(after, batch)
            old = [key for key, modified in listed if modified < cutoff]
            if old:
                referenced = await self.db.run("gc_known", known, old, readonly=True)
                for key in old:
                    if key in referenced or not should_continue():
                        continue
                    if await collect("gc_claim_orphan", claim_orphan, key):
                        report["orphans"] += 1
            if len(listed) < batch:
                break
            after = listed[-1][0]
        _log.info(
            "garbage collection removed {unreferenced} unreferenced blobs ({bytes} bytes) "
            "and {orphans} orphans",
            **report,
        )
        return report

    def search_messages(self, mailbox_id, terms, folder_id=None, limit=50, before=None):
        async def txn_fn(txn):
            where, params = _page_where("mm.", before)
            match, match_params = txn.search_clause("m", terms)
            where += ["mm.mailbox_id = ?", "mm.deleted_at IS NULL", match]
            params += [mailbox_id, *match_params]
            if folder_id:
                where.append("mm.folder_id = ?")
                params.append(folder_id)
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id WHERE "
                + " AND ".join(where)
                + " ORDER BY mm.created_at DESC, mm.id DESC LIMIT ?",
                (*params, limit),
            )
            return [(_mailbox_message(r), _message_info(r)) for r in rows]

        return self._run("search_messages", txn_fn, readonly=True)

    # -- changing messages ------------------------------------------------------------------

    def store_flags(self, folder_id, uids, flags, mode):
        if mode not in ("=", "+", "-"):
            raise ValueError(f"bad flag mode {mode!r}")
        uids = sorted(set(int(u) for u in uids))
        wanted_columns, wanted_keywords = _flag_columns(flags)
        wanted_system = {c for c, on in wanted_columns.items() if on}

        async def txn_fn(txn):
            changed = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                    (folder_id, *params),
                )
                for row in rows:
                    current = _mailbox_message(row)
                    system = {c for c in FLAG_COLUMNS.values() if getattr(current, c)}
                    keywords = list(current.keywords)
                    if mode == "=":
                        system, keywords = set(wanted_system), list(wanted_keywords)
                    elif mode == "+":
                        system |= wanted_system
                        keywords += [k for k in wanted_keywords if k not in keywords]
                    else:
                        system -= wanted_system
                        keywords = [k for k in keywords if k not in wanted_keywords]
                    if system == {c for c in FLAG_COLUMNS.values() if getattr(current, c)} and (
                        keywords == list(current.keywords)
                    ):
                        continue
                    modseq = await self._bump_modseq(txn, folder_id)
                    sets = ", ".join(f"{c} = ?" for c in FLAG_COLUMNS.values())
                    await txn.execute(
                        f"UPDATE mailbox_messages SET {sets}, keywords = ?, modseq = ?, "
                        "updated_at = ? WHERE id = ?",
                        (
                            *(c in system for c in FLAG_COLUMNS.values()),
                            _json(keywords),
                            modseq,
                            now_ns(),
                            current.id,
                        ),
                    )
                    row = await txn.execute_one(
                        f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.id = ?",
                        (current.id,),
                    )
                    mm = _mailbox_message(row)
                    changed.append(mm)
                    await self._announce(
                        txn,
                        mm.mailbox_id,
                        {
                            "type": "flags",
                            "folder_id": folder_id,
                            "uid": mm.uid,
                            "id": mm.id,
                            "flags": list(mm.flags),
                        },
                    )
            return changed

        return self._run("store_flags", txn_fn) if uids else defer.succeed([])

    def expunge(self, folder_id, uids=None):
        async def txn_fn(txn):
            folder = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if folder is None:
                return []
            folder = _folder(folder)
            rows = await txn.execute(
                f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                "AND mm.deleted_at IS NULL AND mm.imap_deleted = ? ORDER BY mm.uid"
                + txn.for_update,
                (folder_id, True),
            )
            targets = [_mailbox_message(r) for r in rows]
            if uids is not None:
                allowed = set(int(u) for u in uids)
                targets = [t for t in targets if t.uid in allowed]
            now = now_ns()
            trash = None
            if folder.special_use != "\\Trash":
                trash = await txn.execute_one(
                    "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = '\\Trash'",
                    (folder.mailbox_id,),
                )
                trash = _folder(trash) if trash else None
            moved = []
            for mm in targets:
                if trash is None:
                    await txn.execute(
                        "UPDATE mailbox_messages SET deleted_at = ?, updated_at = ? WHERE id = ?",
                        (now, now, mm.id),
                    )
                    await txn.execute(
                        "UPDATE mailboxes SET used_bytes = used_bytes - ? WHERE id = ?",
                        (mm.size_bytes, mm.mailbox_id),
                    )
                else:
                    uid, modseq = await self._allocate_uid(txn, trash.id)
                    await txn.execute(
                        "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, "
                        "imap_deleted = ?, updated_at = ? WHERE id = ?",
                        (trash.id, uid, modseq, False, now, mm.id),
                    )
                    moved.append((mm, uid))
            if targets:
                await self._bump_modseq(txn, folder_id)
            for mm in targets:
                await self._announce(
                    txn,
                    mm.mailbox_id,
                    {"type": "expunge", "folder_id": folder_id, "uid": mm.uid, "id": mm.id},
                )
            for mm, uid in moved:
                await self._announce(
                    txn,
                    mm.mailbox_id,
                    {"type": "exists", "folder_id": trash.id, "uid": uid, "id": mm.id},
                )
            return [mm.uid for mm in targets]

        return self._run("expunge", txn_fn)

    def delete_messages(self, folder_id, uids, to_trash=True):
        """Remove the live messages with these UIDs from the folder, whatever their flags: moved
        to Trash when ``to_trash`` (and the folder is not Trash), else soft-deleted with the quota
        released. Fire with the removed UIDs; UIDs already gone are skipped.

        POP3 applies DELE at QUIT with this. Unlike ``expunge`` it does not depend on
        ``\\Deleted``, so an IMAP client's flags never widen or narrow what a POP3 client deleted.
        """
        uids = sorted(set(int(u) for u in uids))

        async def txn_fn(txn):
            row = await txn.execute_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
            if row is None:
                return []
            folder = _folder(row)
            targets = []
            for start in range(0, len(uids), 500):
                clause, params = txn.in_clause("mm.uid", uids[start : start + 500])
                rows = await txn.execute(
                    f"SELECT {_MM_COLUMNS} FROM mailbox_messages mm WHERE mm.folder_id = ? "
                    f"AND mm.deleted_at IS NULL AND {clause} ORDER BY mm.uid" + txn.for_update,
                    (folder_id, *params),
                )
                targets.extend(_mailbox_message(r) for r in rows)
            trash = None
            if to_trash and folder.special_use != "\\Trash":
                trash = await txn.execute_one(
                    "SELECT * FROM folders WHERE mailbox_id = ? AND special_use = '\\Trash'",
                    (folder.mailbox_id,),
                )
                trash = _folder(trash) if trash else None
            now = now_ns()
            changes = []
            for mm in targets:
                changes.append(
                    {"type": "expunge", "folder_id": folder_id, "uid": mm.uid, "id": mm.id}
                )
                if trash is None:
                    await txn.execute(
                        "UPDATE mailbox_messages SET deleted_at = ?, updated_at = ? WHERE id = ?",
                        (now, now, mm.id),
                    )
                    await txn.execute(
                        "UPDATE mailboxes SET used_bytes = used_bytes - ? WHERE id = ?",
                        (mm.size_bytes, mm.mailbox_id),
                    )
                else:
                    uid, modseq = await self._allocate_uid(txn, trash.id)
                    await txn.execute(
                        "UPDATE mailbox_messages SET folder_id = ?, uid = ?, modseq = ?, "
                        "imap_deleted = ?, updated_at = ? WHERE id = ?",
                        (trash.id, uid, modseq, False, now, mm.id),
                    )
                    changes.append(
                        {"type": "exists", "folder_id": trash.id, "uid": uid, "id": mm.id}
                    )
            if targets:
                await self._bump_modseq(txn, folder_id)
            for change in changes:
                await self._announce(txn, folder.mailbox_id, change)
            return [mm.uid for mm in targets]

        if not uids:
            return defer.succeed([])
        return self._run("delete_messages", txn_fn)

    # -- health -----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def check(self):
        current = yield defer.Deferred.fromCoroutine(self.db.schema_current())
        if not current:
            raise StorageUnavailable("migrations not complete")
        if not getattr(self.changes, "listening", True):
            # IMAP IDLE on this node would miss changes made elsewhere.
            raise StorageUnavailable("change bus is not listening")

    # -- plumbing ---------------------------------------------------------------------------

    def _run(self, desc, fn, *args, readonly=False):
        return defer.Deferred.fromCoroutine(self.db.run(desc, fn, *args, readonly=readonly))


def folder_name(name: str) -> str:
    """A folder name as stored: INBOX (any case, also as a parent) spelled ``INBOX``, checked
    for what the hierarchy cannot hold. Raises ``InvalidFolderName``."""
    if not isinstance(name, str) or not name:
        raise InvalidFolderName("empty folder name")
    if name[:6].upper() == "INBOX/" or name.upper() == "INBOX":
        name = "INBOX" + name[5:]
    if len(name) > 1000:
        raise InvalidFolderName("folder name too long")
    if any(not part for part in name.split("/")):
        raise InvalidFolderName("empty level in folder name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidFolderName("control character in folder name")
    return name


def _empty_copy_result(folder):
    if folder is None:
        raise NoSuchFolder("target folder")
    return CopyResult(folder.id, folder.uid_validity)


def _domain(row) -> Domain:
    return Domain(
        name=row["name"],
        quota_bytes=row["quota_bytes"],
        used_bytes=row["used_bytes"],
        mailbox_count=row["mailbox_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _domain_name(name: str) -> str:
    return name.strip().lower()


def _page_where(prefix: str, before) -> tuple[list[str], list]:
    if before is None:
        return [], []
    created_at, row_id = before
    return (
        [f"({prefix}created_at < ? OR ({prefix}created_at = ? AND {prefix}id < ?))"],
        [created_at, created_at, row_id],
    )


def _message_blob_keys(blob_key: str, layout) -> list[str]:
    """Every blob a message row references (each once), in the order rows are locked."""
    keys = {blob_key}
    if layout:
        keys.update(
            key for key, _, _ in (json.loads(layout) if isinstance(layout, str) else layout)
        )
    return sorted(keys)


def _parse_safely(path):
    """Parse the message structure; a parser failure must never lose the message."""
    try:
        return mime.parse_file(path)
    except Exception:
        _log.failure("could not parse message structure; storing it unparsed")
        return _Unparsed.from_file(path)


@attrs.frozen
class _Unparsed:
    """What is stored for a message the structure parser could not handle: it is still
    served byte for byte, as one text/plain body."""

    size: int
    header_size: int = 0
    headers: dict = attrs.Factory(dict)
    rfc_message_id: str = ""
    subject: str = ""
    date: int | None = None
    from_addresses: list = attrs.Factory(list)
    to_addresses: list = attrs.Factory(list)
    cc_addresses: list = attrs.Factory(list)
    bcc_addresses: list = attrs.Factory(list)
    text_body_extract: str = ""
    html_body_extract: str = ""
    attachments: list = attrs.Factory(list)
    envelope: str = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    body: str = ""
    bodystructure: str = ""
    parts: dict = attrs.Factory(dict)

    @classmethod
    def from_file(cls, path):
        import os

        size = os.path.getsize(path)
        lines = 0
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                lines += chunk.count(b"\n")
        body = f'("text" "plain" ("charset" "us-ascii") NIL NIL "8bit" {size} {lines})'
        return cls(
            size=size,
            body=body,
            bodystructure=body[:-1] + " NIL NIL NIL NIL)",
            parts={"1": {"header_start": 0, "body_start": 0, "end": size}},
        )


_dummy_hash = None


def _dummy_verify(password):
    """Spend the time of one real verification, so timing does not reveal unknown addresses."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(generate_password())
    verify_password(_dummy_hash, password)
