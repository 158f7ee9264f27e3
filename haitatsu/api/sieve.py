"""Sieve scripts: ``/api/v1/mailboxes/:mailbox_id/sieve``, and the simple vacation setting of
the ``vacation`` filter: ``/api/v1/mailboxes/:mailbox_id/vacation`` (docs/sieve.md, docs/api.md).

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
    parse_rfc3339,
    read_object,
    timestamp,
)
from haitatsu.api.schemas import PAGINATION_PARAMETERS, data_response, json_content, ref
from haitatsu.sieve import SieveSyntaxError, compile_script
from haitatsu.sieve.grammar import valid_script_name
from haitatsu.sieve.interpreter import valid_address
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


def _script_not_found() -> APIError:
    return APIError(404, "sieve_script_not_found", "Sieve script not found")


def _name(name: str) -> str:
    if not valid_script_name(name):
        raise APIError(400, "invalid_sieve_script_name", "Invalid Sieve script name")
    return name


def _mailbox_route(
    method, path, failure, summary, responses, body=None, parameters=None, check_body_first=False
):
    """Register ``handler(api, request, mailbox_id, ...)`` for ``/api/v1/mailboxes/<mailbox_id>``
    + ``path``: the mailbox must exist (404 ``mailbox_not_found``; checked by the handler
    itself, after the body, with ``check_body_first``) and a missing script is 404
    ``sieve_script_not_found``."""
    spec = {"summary": summary, "responses": responses}
    if body is not None:
        spec["requestBody"] = body
    if parameters is not None:
        spec["parameters"] = parameters

    def register(handler):
        async def checked(api, request, mailbox_id, **params):
            if not check_body_first:
                await _mailbox(api, mailbox_id)
            try:
                return await handler(api, request, mailbox_id, **params)
            except NoSuchScript:
                raise _script_not_found() from None

        checked.__name__ = checked.__qualname__ = handler.__name__
        checked.__doc__ = handler.__doc__
        path_ = "/api/v1/mailboxes/<mailbox_id>" + path
        return routes.route(method, path_, failure=failure, spec=spec)(checked)

    return register


@_mailbox_route(
    "GET",
    "/sieve",
    "sieve_script_list_failed",
    "The mailbox's Sieve scripts",
    {"200": _LIST},
    parameters=PAGINATION_PARAMETERS,
)
async def list_scripts(api, request, mailbox_id):
    page = page_of(request)
    scripts = await api.store.list_sieve_scripts(mailbox_id)
    return page_response(request, paginate_in_memory(scripts, page), page, script_json)


@_mailbox_route(
    "GET",
    "/sieve/<name>",
    "sieve_script_get_failed",
    "One Sieve script, with its content",
    {"200": data_response("The script", _SCRIPT)},
)
async def get_script(api, request, mailbox_id, name):
    script = await api.store.get_sieve_script(mailbox_id, name)
    if script is None:
        raise _script_not_found()
    return data(request, script_json(script, content=True))


@_mailbox_route(
    "PUT",
    "/sieve/<name>",
    "sieve_script_put_failed",
    "Create or replace a Sieve script (checked first; active: make it active)",
    {
        "200": data_response("The replaced script", _SCRIPT),
        "201": data_response("The new script", _SCRIPT),
    },
    body=_PUT_BODY,
    check_body_first=True,
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


@_mailbox_route(
    "POST",
    "/sieve/<name>/activate",
    "sieve_script_activate_failed",
    "Make this the mailbox's active script (any other is deactivated)",
    {"200": data_response("The active script", _SCRIPT)},
)
async def activate_script(api, request, mailbox_id, name):
    script = await api.store.activate_sieve_script(mailbox_id, name)
    return data(request, script_json(script))


@_mailbox_route(
    "POST",
    "/sieve/deactivate",
    "sieve_script_deactivate_failed",
    "Deactivate the mailbox's active script (mail is then only kept)",
    {"200": data_response("Done", ref("Empty"))},
)
async def deactivate(api, request, mailbox_id):
    await api.store.activate_sieve_script(mailbox_id, "")
    return data(request, {})


@_mailbox_route(
    "DELETE",
    "/sieve/<name>",
    "sieve_script_delete_failed",
    "Delete a Sieve script (not the active one)",
    {"200": data_response("Deleted", ref("Empty"))},
)
async def delete_script(api, request, mailbox_id, name):
    try:
        await api.store.delete_sieve_script(mailbox_id, name)
    except ScriptIsActive:
        raise APIError(
            409, "sieve_script_active", "The active script cannot be deleted; deactivate it first"
        ) from None
    return data(request, {})


# -- the vacation setting (the ``vacation`` filter) -----------------------------------------

_VACATION = {
    "type": "object",
    "required": ["mailbox_id", "enabled", "subject", "body", "days", "from", "addresses"],
    "properties": {
        "mailbox_id": {"type": "string"},
        "enabled": {"type": "boolean"},
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "days": {"type": "integer"},
        "from": {"type": "string"},
        "addresses": {"type": "array", "items": {"type": "string"}},
        "starts_at": {"type": ["string", "null"], "format": "date-time"},
        "ends_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_VACATION_BODY = {
    "required": True,
    "content": json_content(
        {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "subject": {"type": "string"},
                "body": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "from": {"type": "string"},
                "addresses": {"type": "array", "items": {"type": "string"}},
                "starts_at": {"type": ["string", "null"]},
                "ends_at": {"type": ["string", "null"]},
            },
        }
    ),
}

#: Longest vacation text accepted.
MAX_VACATION_BYTES = 64 * 1024


def vacation_json(setting) -> dict:
    return {
        "mailbox_id": setting.mailbox_id,
        "enabled": setting.enabled,
        "subject": setting.subject,
        "body": setting.body,
        "days": setting.days,
        "from": setting.from_address,
        "addresses": list(setting.addresses),
        "starts_at": timestamp(setting.starts_at),
        "ends_at": timestamp(setting.ends_at),
        "updated_at": timestamp(setting.updated_at) if setting.updated_at else None,
    }


def _invalid_vacation(message: str) -> APIError:
    return APIError(400, "invalid_vacation", message)


def _vacation_from(body: dict, mailbox_id: str):
    from haitatsu.storage.store.sieve import VacationSetting

    known = {"enabled", "subject", "body", "days", "from", "addresses", "starts_at", "ends_at"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise _invalid_vacation(f"unknown field {unknown[0]}")
    enabled = body.get("enabled", False)
    if not isinstance(enabled, bool):
        raise _invalid_vacation("enabled: must be a boolean")
    fields = {}
    for key in ("subject", "body", "from"):
        value = body.get(key, "")
        if not isinstance(value, str) or "\x00" in value:
            raise _invalid_vacation(f"{key}: must be a string")
        fields[key] = value
    if len(fields["body"].encode("utf-8")) > MAX_VACATION_BYTES:
        raise _invalid_vacation(f"body: over {MAX_VACATION_BYTES} bytes")
    if "\r" in fields["subject"] or "\n" in fields["subject"] or len(fields["subject"]) > 998:
        raise _invalid_vacation("subject: one line of at most 998 characters")
    if enabled and not fields["body"].strip():
        raise _invalid_vacation("body: required when enabled")
    if fields["from"] and not valid_address(_bare_address(fields["from"])):
        raise _invalid_vacation("from: not an address")
    days = body.get("days", 7)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 365:
        raise _invalid_vacation("days: a whole number from 1 to 365")
    addresses = body.get("addresses", [])
    if not isinstance(addresses, list) or not all(
        isinstance(a, str) and valid_address(a) for a in addresses
    ):
        raise _invalid_vacation("addresses: must be an array of addresses")
    bounds = {}
    for key in ("starts_at", "ends_at"):
        value = body.get(key)
        if value is None:
            bounds[key] = None
            continue
        if not isinstance(value, str):
            raise _invalid_vacation(f"{key}: an RFC 3339 time or null")
        try:
            bounds[key] = parse_rfc3339(value)
        except (ValueError, APIError):
            raise _invalid_vacation(f"{key}: an RFC 3339 time or null") from None
        if not 0 <= bounds[key] < 2**63:
            raise _invalid_vacation(f"{key}: out of range")
    if bounds["starts_at"] and bounds["ends_at"] and bounds["ends_at"] <= bounds["starts_at"]:
        raise _invalid_vacation("ends_at: must be after starts_at")
    return VacationSetting(
        mailbox_id=mailbox_id,
        enabled=enabled,
        subject=fields["subject"],
        body=fields["body"],
        days=days,
        from_address=fields["from"],
        addresses=tuple(addresses),
        starts_at=bounds["starts_at"],
        ends_at=bounds["ends_at"],
    )


def _bare_address(text: str) -> str:
    import email.utils

    return email.utils.parseaddr(text)[1]


@_mailbox_route(
    "GET",
    "/vacation",
    "vacation_get_failed",
    "The mailbox's vacation setting (off when never set)",
    {"200": data_response("The setting", _VACATION)},
)
async def get_vacation(api, request, mailbox_id):
    from haitatsu.storage.store.sieve import VacationSetting

    setting = await api.store.get_vacation_setting(mailbox_id)
    return data(request, vacation_json(setting or VacationSetting(mailbox_id)))


@_mailbox_route(
    "PUT",
    "/vacation",
    "vacation_put_failed",
    "Set the mailbox's vacation answer (the vacation filter, RFC 5230 rules)",
    {"200": data_response("The setting", _VACATION)},
    body=_VACATION_BODY,
    check_body_first=True,
)
async def put_vacation(api, request, mailbox_id):
    setting = _vacation_from(read_object(request), mailbox_id)
    await _mailbox(api, mailbox_id)
    stored = await api.store.put_vacation_setting(setting)
    return data(request, vacation_json(stored))


@_mailbox_route(
    "DELETE",
    "/vacation",
    "vacation_delete_failed",
    "Remove the mailbox's vacation setting",
    {"200": data_response("Removed", ref("Empty"))},
)
async def delete_vacation(api, request, mailbox_id):
    await api.store.delete_vacation_setting(mailbox_id)
    return data(request, {})
