"""Folders: ``/api/v1/mailboxes/:mailbox_id/folders`` and ``/api/v1/folders/:id`` (API.md 1.6).

The store's folder operations (the ones IMAP uses) do the work, so a folder made or renamed
over REST is the same as one made over IMAP: parents are created, children follow a rename,
UIDVALIDITY is never reused, sessions hear the change. They write the ``folder.*`` audit events.
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
from haitatsu.api.names import checked_name, name_problem
from haitatsu.interfaces import FolderHasChildren, FolderProtected, InvalidFolderName
from haitatsu.storage.store import NoSuchMailbox

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


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_folder_name", message)


def _system(body: dict) -> bool | None:
    value = body.get("system")
    if value is not None and not isinstance(value, bool):
        raise APIError(400, "invalid_folder", "system must be a boolean")
    return value


def _system_folder(name: str) -> APIError:
    return APIError(409, "system_folder", f"{name} is a system folder")


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>/folders", failure="folder_list_failed")
async def list_folders(api, request, mailbox_id):
    page = page_of(request)
    # A mailbox has a handful of folders: the store lists them all and the page is cut here, in
    # the same order and with the same cursor as every other list.
    folders = await api.store.list_folders(mailbox_id)
    return page_response(request, paginate_in_memory(folders, page), page, folder_json)


@routes.route("POST", "/api/v1/mailboxes/<mailbox_id>/folders", failure="folder_create_failed")
async def create_folder(api, request, mailbox_id):
    body = read_object(request)
    name = checked_name(body, "folder_name_required", "invalid_folder_name", "folder")
    system = _system(body)
    try:
        folder = await api.store.create_folder_with(mailbox_id, name, system=bool(system))
    except NoSuchMailbox:
        raise APIError(404, "mailbox_not_found", "Mailbox not found") from None
    except InvalidFolderName as e:
        raise _invalid(f"invalid folder name: {e}") from None
    return data(request, folder_json(folder), status=201)


@routes.route("PATCH", "/api/v1/folders/<folder_id>", failure="folder_update_failed")
async def update_folder(api, request, folder_id):
    body = read_object(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid("name must be a string")
    if name:
        problem = name_problem(name)
        if problem:
            raise _invalid(f"invalid folder name: {problem}")
    system = _system(body)
    try:
        folder = await api.store.update_folder(folder_id, name=name or None, system=system)
    except FolderProtected as e:
        raise _system_folder(str(e)) from None
    except InvalidFolderName as e:
        raise _invalid(f"invalid folder name: {e}") from None
    if folder is None:
        raise APIError(404, "folder_not_found", "Folder not found")
    return data(request, folder_json(folder))


@routes.route("DELETE", "/api/v1/folders/<folder_id>", failure="folder_delete_failed")
async def delete_folder(api, request, folder_id):
    try:
        folder = await api.store.delete_folder(folder_id)
    except FolderProtected as e:
        raise _system_folder(str(e)) from None
    except FolderHasChildren as e:
        raise APIError(409, "folder_has_children", f"{e} has subfolders") from None
    if folder is None:
        raise APIError(404, "folder_not_found", "Folder not found")
    return data(request, {})
