"""Messages: list (with search), get and raw (API.md 1.7).

Every ``/messages/:id`` route takes the *mailbox_message* id. ``raw`` streams the stored message
(``IMailStore.open_message``, whatever blobs it is stored as) with a producer, so serving a large
message costs a buffer, not the message's size in memory.
"""

from __future__ import annotations

import os

import orjson
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.protocols.basic import FileSender

from haitatsu.api import search
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    page_of,
    page_response,
    timestamp,
)
from haitatsu.api.conventions import query as query_param
from haitatsu.api.labels import label_json
from haitatsu.storage.store import MessageQuery, UnknownSearchName
from haitatsu.storage.views import MessageView, message_object

routes = RouteTable()
_log = Logger()


def mailbox_message_json(row) -> dict:
    return omit_zero(
        {
            "id": row.id,
            "mailbox_id": row.mailbox_id,
            "message_id": row.message_id,
            "folder_id": row.folder_id,
            "uid": row.uid,
            "original_rcpt": row.original_rcpt,
            "base_rcpt": row.base_rcpt,
            "plus_tag": row.plus_tag,
            "resolved_route_id": row.resolved_route_id,
            "read": row.read,
            "flagged": row.flagged,
            "answered": row.answered,
            "draft": row.draft,
            "imap_deleted": row.imap_deleted,
            "keywords": list(row.keywords),
            "created_at": timestamp(row.created_at),
            "updated_at": timestamp(row.updated_at),
            "deleted_at": timestamp(row.deleted_at),
        }
    )


def message_json(info) -> dict:
    """The ``message`` object of a view (``haitatsu.storage.views``, which delivery stores)."""
    return message_object(info)


def message_view_json(view) -> dict:
    """``{"mailbox_message", "message", "labels"}``; ``labels`` is null when there are none.

    ``view`` is a ``(MailboxMessage, MessageInfo[, labels])`` tuple or a ``MessageView``, whose
    stored ``message`` JSON is spliced into the answer as it is."""
    if isinstance(view, MessageView):
        message = view.message
        return {
            "mailbox_message": view.mailbox_message,
            "message": orjson.Fragment(message) if isinstance(message, (bytes, str)) else message,
            "labels": [label_json(label) for label in view.labels] or None,
        }
    row, info = view[0], view[1]
    labels = view[2] if len(view) > 2 else []
    return {
        "mailbox_message": mailbox_message_json(row),
        "message": message_json(info),
        "labels": [label_json(label) for label in labels] or None,
    }


def _flag_filter(text: str) -> tuple[bool, ...]:
    # The original: "true" filters on true, any other non-empty value on false.
    if not text:
        return ()
    return (text == "true",)


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>/messages", failure="message_list_failed")
async def list_messages(api, request, mailbox_id):
    page = page_of(request)
    query = MessageQuery(
        folder_id=query_param(request, "folder_id") or None,
        label_id=query_param(request, "label_id") or None,
        read=_flag_filter(query_param(request, "read")),
        flagged=_flag_filter(query_param(request, "flagged")),
    )
    q = query_param(request, "q")
    if q.strip():
        query = search.parse(q, query)
    try:
        rows = await api.store.query_message_views(
            mailbox_id, query, limit=page.limit + 1, before=page.before
        )
    except UnknownSearchName as e:
        raise search.invalid_search(str(e)) from None
    return page_response(request, rows, page, message_view_json)


@routes.route("GET", "/api/v1/messages/<message_id>", failure="message_load_failed")
async def get_message(api, request, message_id):
    view = await api.store.get_view_entry(message_id)
    if view is None:
        raise APIError(404, "message_not_found", "Message not found")
    return data(request, message_view_json(view))


def _size(blob) -> int | None:
    try:
        return os.fstat(blob.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pass
    try:
        position = blob.tell()
        blob.seek(0, os.SEEK_END)
        size = blob.tell()
        blob.seek(position)
        return size
    except (AttributeError, OSError, ValueError):
        return None


@routes.route("GET", "/api/v1/messages/<message_id>/raw", failure="raw_message_download_failed")
async def raw_message(api, request, message_id):
    view = await api.store.get_message_view(message_id)
    if view is None:
        raise APIError(404, "message_not_found", "Message not found")
    info = view[1]
    blob = await api.store.open_message(info)
    finished = request.notifyFinish()
    gone = []
    finished.addErrback(gone.append)
    try:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"message/rfc822")
        request.setHeader(
            b"Content-Disposition", f'attachment; filename="{info.id}.eml"'.encode("ascii")
        )
        size = _size(blob)
        if size is not None:
            request.setHeader(b"Content-Length", str(size).encode("ascii"))
        try:
            await FileSender().beginFileTransfer(blob, request)
            return None
        except CancelledError:
            raise
        except Exception:
            if not gone:
                # The status line is sent already: all we can do is cut the response short,
                # which the client sees as a body shorter than Content-Length.
                _log.failure("streaming message {message_id} failed", message_id=message_id)
                request.loseConnection()
    finally:
        blob.close()
    # Wait for the connection to go, then end quietly: there is no response left to write.
    await finished
    raise CancelledError()
