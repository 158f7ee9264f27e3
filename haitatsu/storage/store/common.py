"""Helpers shared by the store's parts: row conversion, ids and passwords, constants."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets

import attrs
import orjson
import ulid
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.logger import Logger

from haitatsu import mime
from haitatsu.interfaces import (
    InvalidFolderName,
    NoSuchFolder,
)
from haitatsu.storage import layout as layoutmod
from haitatsu.storage.records import (
    FLAG_COLUMNS,
    AppPassword,
    CopyResult,
    Domain,
    Folder,
    Mailbox,
    MailboxMessage,
    MessageInfo,
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
        keywords=tuple(_load_json(row["keywords"]) or ()),
        internal_date=row["internal_date"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


def _load_json(text):
    """A stored JSON column: orjson (six times faster, which a page of message views feels),
    the standard library for what orjson refuses and ``json.dumps`` may have written (NaN,
    integers past 64 bits)."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


_MESSAGE_INFO_FIELDS = tuple(
    (field.name, "m_" + field.name, field.name in _JSON_MESSAGE_FIELDS)
    for field in attrs.fields(MessageInfo)
)


def _message_info(row) -> MessageInfo:
    return MessageInfo(
        **{
            name: _load_json(row[column]) if is_json else row[column]
            for name, column, is_json in _MESSAGE_INFO_FIELDS
        }
    )


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
    """The keyset condition of a page after ``before`` in ``created_at DESC, id DESC`` order.

    Written as a row-value comparison: SQLite and PostgreSQL both use it as a range on an index
    ending in ``(created_at, id)``, so a page deep in a large mailbox costs what the first
    does. The equivalent ``created_at < ? OR (created_at = ? AND id < ?)`` is only a filter
    on SQLite, which then walks the index from the newest row to the cursor (docs/api.md).
    """
    if before is None:
        return [], []
    created_at, row_id = before
    return [f"({prefix}created_at, {prefix}id) < (?, ?)"], [created_at, row_id]


def _message_blob_keys(blob_key: str, layout) -> list[str]:
    """Every blob a message row references (each once), in the order rows are locked."""
    keys = {blob_key}
    if layout:
        keys.update(
            key for key, _, _ in (json.loads(layout) if isinstance(layout, str) else layout)
        )
    return sorted(keys)


def _prepare_spool(path, threshold, workdir, finish=None):
    """Everything a delivery needs from its spool file, in one thread hop and one read: the
    structure (the parser and the SHA-256 are fed the same chunks) and the blobs to store
    (``layout.prepare``, which reads the file again only for a message with large parts to
    split off). Return ``(parsed, prepared)``; ``OSError`` if the file cannot be read.

    A parser failure never loses the message: it is stored unparsed (``_Unparsed``).
    ``finish`` (if given) runs first: the writer's last bytes and close.
    """
    if finish is not None:
        finish()
    digest = hashlib.sha256()
    parser = mime.MessageParser()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(layoutmod.CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if parser is not None:
                try:
                    parser.feed(chunk)
                except Exception:
                    _log.failure("could not parse message structure; storing it unparsed")
                    parser = None
    parsed = None
    if parser is not None:
        try:
            parsed = parser.close()
        except Exception:
            _log.failure("could not parse message structure; storing it unparsed")
    if parsed is None:
        parsed = _Unparsed.from_file(path)
    prepared = layoutmod.prepare(
        path, parsed.parts, threshold, workdir, whole=(digest.hexdigest(), size)
    )
    return parsed, prepared


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
    header_fields: bytes | None = None

    @classmethod
    def from_file(cls, path):

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


async def _live_entry(txn, mailbox_message_id):
    """``(MailboxMessage, MessageInfo)`` of a live placement and its message, or None."""
    row = await txn.execute_one(
        f"SELECT {_MM_COLUMNS}, {_MSG_COLUMNS} FROM mailbox_messages mm "
        "JOIN messages m ON m.id = mm.message_id WHERE mm.id = ? AND mm.deleted_at IS NULL",
        (mailbox_message_id,),
    )
    return (_mailbox_message(row), _message_info(row)) if row is not None else None
