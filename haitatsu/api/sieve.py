"""Sieve scripts: ``/api/v1/mailboxes/:mailbox_id/sieve`` (docs/sieve.md, docs/api.md).

A mailbox keeps named scripts, at most one of them active (the one its mail is filtered
through). ``PUT`` compiles the script first and refuses it with 400 ``invalid_sieve_script``
and the line of the problem in the message; the limits are ``sieve.max_script_bytes`` and
``sieve.max_scripts``. The active script cannot be deleted: deactivate it first.
"""

from __future__ import annotations

from twisted.internet import threads

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
from haitatsu.api.schemas import PAGINATION_PARAMETERS, data_response, json_content, ref
from haitatsu.sieve import SieveSyntaxError, compile_script
from haitatsu.sieve.grammar import valid_script_name
from haitatsu.storage.store import NoSuchScript, ScriptIsActive

routes = RouteTable()

_SCRIPT = {
    "type": "object",
    "required": ["id", "mailbox_id", "name", "active", "size"],
    "properties": {
        "id": {"type": "string"},
        "mailbox_id": {"type": "string"},
        "name": {"type": "string"},
        "active": {"type": "boolean"},
        "size": {"type": "integer"},
        "content": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_LIST = {
    "description": "The mailbox's scripts",
    "content": json_content(
        {
            "type": "object",
            "required": ["data", "pagination"],
            "properties": {
                "data": {"type": "array", "items": _SCRIPT},
                "pagination": ref("Pagination"),
            },
        }
    ),
}
_PUT_BODY = {
    "required": True,
    "content": json_content(
        {
            "type": "object",
            "required": ["content"],
            "properties": {"content": {"type": "string"}, "active": {"type": "boolean"}},
        }
    ),
}


def script_json(script, content: bool = False) -> dict:
    fields = {
        "id": script.id,
        "mailbox_id": script.mailbox_id,
        "name": script.name,
        "active": script.active,
        "size": len(script.content.encode("utf-8")),
        "created_at": timestamp(script.created_at),
        "updated_at": timestamp(script.updated_at),
    }
    if content:
        fields["content"] = script.content
    return omit_zero(fields, keep=("active", "size"))


def check_script(content: str, max_bytes: int):
    """Compile in a thread; fire with the ``Script`` or fail with ``SieveSyntaxError``."""
    return threads.deferToThread(compile_script, content, max_bytes)


async def _mailbox(api, mailbox_id):
    mailbox = await api.store.get_mailbox(mailbox_id)
    if mailbox is None:
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    return mailbox


def _name(name: str) -> str:
    if not valid_script_name(name):
        raise APIError(400, "invalid_sieve_script_name", "Invalid Sieve script name")
    return name


@routes.route(
    "GET",
    "/api/v1/mailboxes/<mailbox_id>/sieve",
    failure="sieve_script_list_failed",
    spec={
        "summary": "The mailbox's Sieve scripts",
        "parameters": PAGINATION_PARAMETERS,
        "responses": {"200": _LIST},
    },
)
async def list_scripts(api, request, mailbox_id):
    page = page_of(request)
    await _mailbox(api, mailbox_id)
    scripts = await api.store.list_sieve_scripts(mailbox_id)
    return page_response(request, paginate_in_memory(scripts, page), page, script_json)


@routes.route(
    "GET",
    "/api/v1/mailboxes/<mailbox_id>/sieve/<name>",
    failure="sieve_script_get_failed",
    spec={
        "summary": "One Sieve script, with its content",
        "responses": {"200": data_response("The script", _SCRIPT)},
    },
)
async def get_script(api, request, mailbox_id, name):
    await _mailbox(api, mailbox_id)
    script = await api.store.get_sieve_script(mailbox_id, name)
    if script is None:
        raise APIError(404, "sieve_script_not_found", "Sieve script not found")
    return data(request, script_json(script, content=True))


@routes.route(
    "PUT",
    "/api/v1/mailboxes/<mailbox_id>/sieve/<name>",
    failure="sieve_script_put_failed",
    spec={
        "summary": "Create or replace a Sieve script (checked first; active: make it active)",
        "requestBody": _PUT_BODY,
        "responses": {
            "200": data_response("The replaced script", _SCRIPT),
            "201": data_response("The new script", _SCRIPT),
        },
    },
)
async def put_script(api, request, mailbox_id, name):
    body = read_object(request)
    content = body.get("content")
    active = body.get("active", False)
    if not isinstance(content, str):
        raise APIError(400, "sieve_script_content_required", "content: a string is required")
    if not isinstance(active, bool):
        raise APIError(400, "invalid_request", "active: must be a boolean")
    _name(name)
    await _mailbox(api, mailbox_id)
    limits = api.get_config().sieve
    try:
        await check_script(content, limits.max_script_bytes)
    except SieveSyntaxError as e:
        raise APIError(400, "invalid_sieve_script", f"Invalid Sieve script: {e}") from None
    existing = await api.store.get_sieve_script(mailbox_id, name)
    if existing is None:
        count, _ = await api.store.sieve_space_used(mailbox_id)
        if count >= limits.max_scripts:
            raise APIError(
                409,
                "sieve_script_limit",
                f"The mailbox already has {count} scripts (sieve.max_scripts)",
            )
    script, created = await api.store.put_sieve_script(mailbox_id, name, content, active)
    return data(request, script_json(script, content=True), 201 if created else 200)


@routes.route(
    "POST",
    "/api/v1/mailboxes/<mailbox_id>/sieve/<name>/activate",
    failure="sieve_script_activate_failed",
    spec={
        "summary": "Make this the mailbox's active script (any other is deactivated)",
        "responses": {"200": data_response("The active script", _SCRIPT)},
    },
)
async def activate_script(api, request, mailbox_id, name):
    await _mailbox(api, mailbox_id)
    try:
        script = await api.store.activate_sieve_script(mailbox_id, name)
    except NoSuchScript:
        raise APIError(404, "sieve_script_not_found", "Sieve script not found") from None
    return data(request, script_json(script))


@routes.route(
    "POST",
    "/api/v1/mailboxes/<mailbox_id>/sieve/deactivate",
    failure="sieve_script_deactivate_failed",
    spec={
        "summary": "Deactivate the mailbox's active script (mail is then only kept)",
        "responses": {"200": data_response("Done", ref("Empty"))},
    },
)
async def deactivate(api, request, mailbox_id):
    await _mailbox(api, mailbox_id)
    await api.store.activate_sieve_script(mailbox_id, "")
    return data(request, {})


@routes.route(
    "DELETE",
    "/api/v1/mailboxes/<mailbox_id>/sieve/<name>",
    failure="sieve_script_delete_failed",
    spec={
        "summary": "Delete a Sieve script (not the active one)",
        "responses": {"200": data_response("Deleted", ref("Empty"))},
    },
)
async def delete_script(api, request, mailbox_id, name):
    await _mailbox(api, mailbox_id)
    try:
        await api.store.delete_sieve_script(mailbox_id, name)
    except NoSuchScript:
        raise APIError(404, "sieve_script_not_found", "Sieve script not found") from None
    except ScriptIsActive:
        raise APIError(
            409, "sieve_script_active", "The active script cannot be deleted; deactivate it first"
        ) from None
    return data(request, {})
