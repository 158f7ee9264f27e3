"""Labels: ``/api/v1/mailboxes/:mailbox_id/labels`` and ``/api/v1/labels/:id`` (API.md 1.6).

The store writes the ``label.*`` audit events in the same transaction as the change.
"""

from __future__ import annotations

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    page_of,
    page_response,
    paginate_in_memory,
    read_object,
    timestamp,
)
from haitatsu.api.names import checked_name
from haitatsu.storage.store import NoSuchMailbox

routes = RouteTable()


def label_json(label) -> dict:
    return omit_zero(
        {
            "id": label.id,
            "mailbox_id": label.mailbox_id,
            "name": label.name,
            "uid_validity": label.uid_validity,
            "uid_next": label.uid_next,
            "created_at": timestamp(label.created_at),
            "updated_at": timestamp(label.updated_at),
        }
    )


def _name(request) -> str:
    return checked_name(read_object(request), "label_name_required", "invalid_label_name", "label")


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>/labels", failure="label_list_failed")
async def list_labels(api, request, mailbox_id):
    page = page_of(request)
    labels = await api.store.list_labels(mailbox_id)
    return page_response(request, paginate_in_memory(labels, page), page, label_json)


@routes.route("POST", "/api/v1/mailboxes/<mailbox_id>/labels", failure="label_create_failed")
async def create_label(api, request, mailbox_id):
    name = _name(request)
    try:
        label = await api.store.create_label(mailbox_id, name)
    except NoSuchMailbox:
        raise APIError(404, "mailbox_not_found", "Mailbox not found") from None
    return data(request, label_json(label), status=201)


@routes.route("PATCH", "/api/v1/labels/<label_id>", failure="label_update_failed")
async def update_label(api, request, label_id):
    name = _name(request)
    label = await api.store.rename_label(label_id, name)
    if label is None:
        raise APIError(404, "label_not_found", "Label not found")
    return data(request, label_json(label))


@routes.route("DELETE", "/api/v1/labels/<label_id>", failure="label_delete_failed")
async def delete_label(api, request, label_id):
    if await api.store.delete_label(label_id) is None:
        raise APIError(404, "label_not_found", "Label not found")
    return data(request, {})
