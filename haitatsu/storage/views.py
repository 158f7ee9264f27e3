"""The ``message`` object of the REST message view (API.md 1.7), built once and stored.

A message row never changes after delivery (no code updates ``messages``; schema 036 makes the
database forget the stored object if a row is ever updated), so the ``message`` half of every
view of it is the same JSON each time: about 7 KB, with the headers and the text and HTML
extracts. ``message_object`` builds it from a ``MessageInfo`` exactly as the REST API always
has (Go's ``omitempty``, RFC 3339 times, Go's float64 numbers); delivery stores its encoding in
``messages.view_json`` and the message list and get splice the stored text into their answers
instead of building and encoding it for every request (docs/benchmarks.md, REST).

``stored_view_json`` builds the text a delivery stores from the very column values it inserts,
read back the way a ``SELECT`` reads them, so the stored object is the one the read path would
have built from the row.
"""

from __future__ import annotations

import orjson

from haitatsu.storage.records import rfc3339

#: The mailbox_message columns of a view, in the order ``mailbox_message_object`` reads them;
#: the message's stored object follows them in a view row.
VIEW_MM_COLUMNS = (
    "mm.id, mm.mailbox_id, mm.message_id, mm.folder_id, mm.uid, mm.original_rcpt, "
    "mm.base_rcpt, mm.plus_tag, mm.resolved_route_id, mm.read, mm.flagged, mm.answered, "
    "mm.draft, mm.imap_deleted, mm.keywords, mm.created_at, mm.updated_at, mm.deleted_at"
)


class MessageView:
    """A message view as the REST list and get answer it (API.md 1.7): ``mailbox_message``
    and ``message`` are the view's objects (``message`` as the stored JSON text, or a dict
    where none is stored), ``labels`` the placement's ``Label`` records. ``id`` and
    ``created_at`` are the placement's, which the list's cursor is made of."""

    __slots__ = ("id", "created_at", "mailbox_message", "message", "labels")

    def __init__(self, id, created_at, mailbox_message, message, labels=()):
        self.id = id
        self.created_at = created_at
        self.mailbox_message = mailbox_message
        self.message = message
        self.labels = labels


def mailbox_message_object(row) -> dict:
    """The ``mailbox_message`` object of a view from a row of ``VIEW_MM_COLUMNS`` (a tuple):
    what the API's ``mailbox_message_json`` makes of the ``MailboxMessage`` of the same row,
    Go's ``omitempty`` written out field by field (a page has 50 of them)."""
    out = {}
    if row[0]:
        out["id"] = row[0]
    if row[1]:
        out["mailbox_id"] = row[1]
    if row[2]:
        out["message_id"] = row[2]
    if row[3]:
        out["folder_id"] = row[3]
    if row[4]:
        out["uid"] = row[4]
    if row[5]:
        out["original_rcpt"] = row[5]
    if row[6]:
        out["base_rcpt"] = row[6]
    if row[7]:
        out["plus_tag"] = row[7]
    if row[8]:
        out["resolved_route_id"] = row[8]
    if row[9]:
        out["read"] = True
    if row[10]:
        out["flagged"] = True
    if row[11]:
        out["answered"] = True
    if row[12]:
        out["draft"] = True
    if row[13]:
        out["imap_deleted"] = True
    keywords = row[14]
    if keywords and keywords != "[]":
        from haitatsu.storage.store.common import _load_json

        keywords = _load_json(keywords)
        if keywords:
            out["keywords"] = list(keywords)
    if row[15] is not None:
        out["created_at"] = rfc3339(row[15])
    if row[16] is not None:
        out["updated_at"] = rfc3339(row[16])
    if row[17] is not None:
        out["deleted_at"] = rfc3339(row[17])
    return out


def is_zero(value) -> bool:
    """Go's omitempty: false, 0, "", nil and empty arrays or maps (the API's ``omit_zero``)."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) == 0
    return False


def _go_number(value):
    """A float64 as Go writes it: integral values without a fraction (``1``, not ``1.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def message_object(info) -> dict:
    """The ``message`` object of a message view (API.md 1.7) for a ``MessageInfo``."""
    fields = {
        "id": info.id,
        "trace_id": info.trace_id,
        "rfc_message_id": info.rfc_message_id,
        "blob_key": info.blob_key,
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
        "headers": info.headers,
        "from_addresses": list(info.from_addresses or ()),
        "to_addresses": list(info.to_addresses or ()),
        "cc_addresses": list(info.cc_addresses or ()),
        "bcc_addresses": list(info.bcc_addresses or ()),
        "subject": info.subject,
        "date": rfc3339(info.date),
        "text_body_extract": info.text_body_extract,
        "html_body_extract": info.html_body_extract,
        "attachments": list(info.attachments or ()),
        "spam_score": _go_number(info.spam_score),
        "auth_results": info.auth_results,
        "created_at": rfc3339(info.created_at),
        "updated_at": rfc3339(info.updated_at),
        "deleted_at": rfc3339(info.deleted_at),
    }
    return {k: v for k, v in fields.items() if v or not is_zero(v)}


def encode_message_object(info) -> str | None:
    """``message_object`` as compact JSON text (orjson: what the API's ``dumps`` writes), or
    None when it cannot be encoded (then the view is built at read time, as before)."""
    try:
        return orjson.dumps(message_object(info), option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    except (TypeError, ValueError):
        return None


def stored_view_json(
    message_id, prepared, parsed, trace_id, auth_results, now, spam_score=0.0
) -> str | None:
    """The ``view_json`` of the ``messages`` row ``_insert_message`` writes, from the same
    arguments: each column's value as the INSERT gives it, read back as ``_message_info``
    reads a selected row (JSON columns through ``json.dumps`` and back), so the stored object
    is the one the read path would build from the row."""
    from haitatsu.storage.store.common import _json, _message_info, _text

    row = {
        "m_id": message_id,
        "m_trace_id": trace_id,
        "m_rfc_message_id": _text(parsed.rfc_message_id),
        "m_blob_key": prepared.blob_key,
        "m_sha256": prepared.sha256,
        "m_size_bytes": prepared.size,
        "m_headers": _json(parsed.headers),
        "m_from_addresses": _json(parsed.from_addresses),
        "m_to_addresses": _json(parsed.to_addresses),
        "m_cc_addresses": _json(parsed.cc_addresses),
        "m_bcc_addresses": _json(parsed.bcc_addresses),
        "m_subject": _text(parsed.subject),
        "m_date": parsed.date,
        "m_text_body_extract": _text(parsed.text_body_extract),
        "m_html_body_extract": _text(parsed.html_body_extract),
        "m_attachments": _json(parsed.attachments),
        "m_spam_score": float(spam_score),
        "m_auth_results": _json(auth_results or {}),
        # What the view does not show: left out of the work.
        "m_envelope": "",
        "m_body": "",
        "m_bodystructure": "",
        "m_header_size": 0,
        "m_parts": None,
        "m_layout": None,
        "m_created_at": now,
        "m_updated_at": now,
        "m_deleted_at": None,
    }
    try:
        info = _message_info(row)
    except (TypeError, ValueError):
        return None
    return encode_message_object(info)
