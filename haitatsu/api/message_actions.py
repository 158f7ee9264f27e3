"""Changing messages and downloading attachments (API.md 1.7).

Flags (``PATCH``), move, delete (to Trash, or ``?force=true`` soft delete), restore, label links,
and attachment downloads. Every change is one store transaction that announces itself on the
change bus, so IMAP sessions (on any node) see a flag set here as if another client had STOREd
it. Message operations write no audit events, as in the original.

An attachment is located by its part index (``attachments[].part_index``, the ``leaf_index`` of
an entry of ``MessageInfo.parts``) and streamed from the stored message through a reader that
decodes base64 or quoted-printable as it goes, so memory does not grow with the attachment.
"""

from __future__ import annotations

import re

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.protocols.basic import FileSender

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    query,
    read_object,
    timestamp,
)
from haitatsu.api.messages import mailbox_message_json
from haitatsu.interfaces import NoSuchFolder
from haitatsu.mime.decoding import DecodingReader
from haitatsu.storage.store import NoSuchLabel, NoSuchMessage, WrongMailbox

routes = RouteTable()
_log = Logger()

FLAG_FIELDS = ("read", "flagged", "answered", "draft")

#: Characters an IMAP keyword (an atom, RFC 3501) cannot contain.
_NOT_ATOM = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')


def _not_found() -> APIError:
    return APIError(404, "message_not_found", "Message not found")


def _invalid(message: str) -> APIError:
    # Our code for a field of the wrong type (the original's decoder answers invalid_request).
    return APIError(400, "invalid_message", message)


def link_json(link) -> dict:
    return omit_zero(
        {
            "id": link.id,
            "mailbox_message_id": link.mailbox_message_id,
            "label_id": link.label_id,
            "uid": link.uid,
            "created_at": timestamp(link.created_at),
        }
    )


@routes.route("PATCH", "/api/v1/messages/<message_id>", failure="message_update_failed")
async def update_message(api, request, message_id):
    body = read_object(request)
    changes = {}
    for key in FLAG_FIELDS:
        value = body.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise _invalid(f"{key} must be a boolean")
            changes[key] = value
    keywords = body.get("keywords")
    if keywords is not None:
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise _invalid("keywords must be an array of strings")
        for keyword in keywords:
            if not keyword or keyword.startswith("\\") or _NOT_ATOM.search(keyword):
                raise _invalid(f'keyword "{keyword}" is not an IMAP keyword (an atom, no "\\")')
        changes["keywords"] = keywords
    row = await api.store.update_message(message_id, **changes)
    if row is None:
        raise _not_found()
    return data(request, mailbox_message_json(row))


@routes.route("POST", "/api/v1/messages/<message_id>/move", failure="message_move_failed")
async def move_message(api, request, message_id):
    body = read_object(request)
    folder_id = body.get("folder_id")
    if not isinstance(folder_id, str) or not folder_id:
        raise APIError(400, "folder_id_required", "folder_id is required")
    try:
        row = await api.store.move_message(message_id, folder_id)
    except NoSuchFolder:
        raise APIError(404, "folder_not_found", "Folder not found") from None
    except WrongMailbox:
        raise APIError(
            400, "folder_mailbox_mismatch", "Folder belongs to another mailbox"
        ) from None
    if row is None:
        raise _not_found()
    return data(request, mailbox_message_json(row))


@routes.route("DELETE", "/api/v1/messages/<message_id>", failure="message_delete_failed")
async def delete_message(api, request, message_id):
    try:
        if query(request, "force") == "true":
            row = await api.store.soft_delete_message(message_id)
        else:
            row = await api.store.trash_message(message_id)
    except NoSuchFolder:
        raise APIError(404, "folder_not_found", "Trash folder not found") from None
    if row is None:
        raise _not_found()
    return data(request, mailbox_message_json(row))


@routes.route("POST", "/api/v1/messages/<message_id>/restore", failure="message_restore_failed")
async def restore_message(api, request, message_id):
    try:
        row = await api.store.restore_message(message_id)
    except NoSuchFolder:
        raise APIError(404, "folder_not_found", "INBOX folder not found") from None
    if row is None:
        raise _not_found()
    return data(request, mailbox_message_json(row))


@routes.route("POST", "/api/v1/messages/<message_id>/labels", failure="message_label_add_failed")
async def add_label(api, request, message_id):
    body = read_object(request)
    label_id = body.get("label_id")
    if not isinstance(label_id, str) or not label_id:
        raise APIError(400, "label_id_required", "label_id is required")
    try:
        link, _created = await api.store.add_message_label(message_id, label_id)
    except NoSuchMessage:
        raise _not_found() from None
    except NoSuchLabel:
        raise APIError(404, "label_not_found", "Label not found") from None
    except WrongMailbox:
        raise APIError(400, "label_mailbox_mismatch", "Label belongs to another mailbox") from None
    # Idempotent: an existing link is returned, still with 201, as in the original.
    return data(request, link_json(link), status=201)


@routes.route(
    "DELETE",
    "/api/v1/messages/<message_id>/labels/<label_id>",
    failure="message_label_remove_failed",
)
async def remove_label(api, request, message_id, label_id):
    await api.store.remove_message_label(message_id, label_id)
    return data(request, {})


# -- attachments ----------------------------------------------------------------------------------


def _header_filename(name: str) -> str:
    return name.replace("\r", " ").replace("\n", " ").replace('"', "'")


@routes.route(
    "GET",
    "/api/v1/messages/<message_id>/attachments/<attachment_id>",
    failure="attachment_download_failed",
)
async def download_attachment(api, request, message_id, attachment_id):
    if not re.fullmatch(r"[0-9]{1,9}", attachment_id) or int(attachment_id) <= 0:
        raise APIError(400, "invalid_attachment", "attachment id must be a positive integer")
    index = int(attachment_id)
    view = await api.store.get_message_view(message_id)
    if view is None:
        raise _not_found()
    info = view[1]
    part = next(
        (p for p in (info.parts or {}).values() if p.get("leaf_index") == index),
        None,
    )
    if part is None:
        raise APIError(404, "attachment_not_found", "Attachment not found")
    meta = next((a for a in info.attachments or () if a.get("part_index") == index), {})
    blob = await api.store.open_message(info)
    reader = DecodingReader(blob, part["body_start"], part["end"], part.get("encoding", ""))
    finished = request.notifyFinish()
    gone = []
    finished.addErrback(gone.append)
    try:
        request.setResponseCode(200)
        content_type = part.get("type") or meta.get("content_type") or ""
        request.setHeader(
            b"Content-Type", (content_type or "application/octet-stream").encode("utf-8")
        )
        filename = meta.get("filename") or ""
        if filename:
            request.setHeader(
                b"Content-Disposition",
                f'attachment; filename="{_header_filename(filename)}"'.encode(),
            )
        try:
            await FileSender().beginFileTransfer(reader, request)
            return None
        except CancelledError:
            raise
        except Exception:
            if not gone:
                _log.failure(
                    "streaming attachment {index} of {message_id} failed",
                    index=index,
                    message_id=message_id,
                )
                request.loseConnection()
    finally:
        reader.close()
    await finished
    raise CancelledError()
