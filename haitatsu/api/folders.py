"""Folders: ``/api/v1/mailboxes/:mailbox_id/folders`` (API.md 1.6; listing only for now)."""

from __future__ import annotations

from haitatsu.api.conventions import (
    RouteTable,
    omit_zero,
    page_of,
    page_response,
    paginate_in_memory,
    timestamp,
)

routes = RouteTable()


def folder_json(folder) -> dict:
    return omit_zero(
        {
            "id": folder.id,
            "mailbox_id": folder.mailbox_id,
            "name": folder.name,
            "system": folder.system,
            "uid_validity": folder.uid_validity,
            "uid_next": folder.uid_next,
            "created_at": timestamp(folder.created_at),
            "updated_at": timestamp(folder.updated_at),
        }
    )


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>/folders", failure="folder_list_failed")
async def list_folders(api, request, mailbox_id):
    page = page_of(request)
    # A mailbox has a handful of folders: the store lists them all and the page is cut here, in
    # the same order and with the same cursor as every other list.
    folders = await api.store.list_folders(mailbox_id)
    return page_response(request, paginate_in_memory(folders, page), page, folder_json)
