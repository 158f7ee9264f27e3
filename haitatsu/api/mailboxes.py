"""Mailboxes: ``/api/v1/mailboxes`` (API.md 1.2).

The store writes the system folders and the ``mailbox.*`` audit events in the same transaction as
the change; these handlers validate the request in the documented order and map the outcome.
"""

from __future__ import annotations

import math

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    is_int,
    is_number,
    omit_zero,
    page_of,
    page_response,
    query,
    read_object,
    timestamp,
)

routes = RouteTable()

OUTBOUND_LIMIT_KEYS = ("per_hour", "per_day", "recipients_per_message")
SPAM_THRESHOLD_KEYS = ("junk_threshold", "spam_threshold", "phishing_threshold")
RESERVED_LOCAL_PART = "bounces"


def go_number(value):
    """A float64 as Go writes it: integral values without a fraction (``1``, not ``1.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def mailbox_json(mailbox) -> dict:
    thresholds = mailbox.spam_thresholds
    if thresholds:
        thresholds = {key: go_number(value) for key, value in thresholds.items()}
    return omit_zero(
        {
            "id": mailbox.id,
            "primary_address": mailbox.primary_address,
            "status": mailbox.status,
            "quota_bytes": mailbox.quota_bytes,
            "used_bytes": mailbox.used_bytes,
            "outbound_limits": dict(mailbox.outbound_limits or {}),
            "spam_thresholds": thresholds,
            "created_at": timestamp(mailbox.created_at),
            "updated_at": timestamp(mailbox.updated_at),
            "deleted_at": timestamp(mailbox.deleted_at),
        }
    )


# -- validation -----------------------------------------------------------------------------


def _invalid_mailbox(message: str) -> APIError:
    # Our code for a field of the wrong JSON type where API.md has no field-specific one.
    return APIError(400, "invalid_mailbox", message)


def _invalid_limits(message: str) -> APIError:
    return APIError(400, "invalid_outbound_limits", message)


def _invalid_thresholds(message: str) -> APIError:
    return APIError(400, "invalid_spam_thresholds", message)


def outbound_limits(value) -> dict | None:
    """The validated ``outbound_limits``, or None when absent or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_limits("outbound_limits must be an object")
    for key, limit in value.items():
        if key not in OUTBOUND_LIMIT_KEYS:
            raise _invalid_limits(
                f'unknown outbound limit "{key}": allowed keys are per_hour, per_day, '
                "recipients_per_message"
            )
        if not is_int(limit):
            raise _invalid_limits(f'outbound limit "{key}" must be an integer')
        if limit < 0:
            raise _invalid_limits(f'outbound limit "{key}" must be >= 0')
    return dict(value)


def spam_thresholds(value) -> dict | None:
    """The validated ``spam_thresholds``; None for null or ``{}`` (no overrides)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_thresholds("spam_thresholds must be an object or null")
    result = {}
    for key, threshold in value.items():
        if key not in SPAM_THRESHOLD_KEYS:
            raise _invalid_thresholds(
                f'unknown spam threshold "{key}": allowed keys are junk_threshold, '
                "spam_threshold, phishing_threshold"
            )
        if threshold is None:
            raise _invalid_thresholds(f'spam threshold "{key}" must not be null')
        if not is_number(threshold) or not math.isfinite(threshold):
            raise _invalid_thresholds(f'spam threshold "{key}" must be a finite number')
        if key == "junk_threshold":
            if threshold < 0:
                raise _invalid_thresholds('spam threshold "junk_threshold" must be >= 0')
        elif not 0 < threshold <= 1:
            raise _invalid_thresholds(
                f'spam threshold "{key}" must be greater than 0 and at most 1'
            )
        result[key] = float(threshold)
    return result or None


def _reserved(address: str) -> bool:
    local = address.rsplit("@", 1)[0] if "@" in address else address
    return local.lower() == RESERVED_LOCAL_PART


def _check_types(body: dict) -> None:
    """What Go's decoder refuses before any validation runs: a field of the wrong type."""
    for key in ("primary_address", "status"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _invalid_mailbox(f"{key} must be a string")
    quota = body.get("quota_bytes")
    if quota is not None and (not is_int(quota) or quota < 0):
        raise _invalid_mailbox("quota_bytes must be an integer >= 0")


def _reserved_local_part() -> APIError:
    return APIError(
        400, "reserved_local_part", f'The local part "{RESERVED_LOCAL_PART}" is reserved'
    )


# -- handlers -------------------------------------------------------------------------------


@routes.route("GET", "/api/v1/mailboxes", failure="mailbox_list_failed")
async def list_mailboxes(api, request):
    page = page_of(request)
    status = query(request, "status") or None
    rows = await api.store.list_mailboxes(status=status, limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, mailbox_json)


@routes.route("POST", "/api/v1/mailboxes", failure="mailbox_create_failed")
async def create_mailbox(api, request):
    body = read_object(request)
    _check_types(body)
    thresholds = spam_thresholds(body.get("spam_thresholds"))
    address = body.get("primary_address") or ""
    if not address.strip():
        raise APIError(400, "primary_address_required", "primary_address is required")
    if _reserved(address):
        raise _reserved_local_part()
    limits = outbound_limits(body.get("outbound_limits"))
    mailbox = await api.store.create_mailbox(
        address,
        status=body.get("status") or "active",
        quota_bytes=body.get("quota_bytes") or 0,
        outbound_limits=limits or {},
        spam_thresholds=thresholds,
    )
    return data(request, mailbox_json(mailbox), status=201)


@routes.route("GET", "/api/v1/mailboxes/<mailbox_id>", failure="mailbox_not_found")
async def get_mailbox(api, request, mailbox_id):
    mailbox = await api.store.get_mailbox(mailbox_id)
    if mailbox is None:
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    return data(request, mailbox_json(mailbox))


@routes.route("PATCH", "/api/v1/mailboxes/<mailbox_id>", failure="mailbox_update_failed")
async def update_mailbox(api, request, mailbox_id):
    body = read_object(request)
    _check_types(body)
    fields = {}
    if "spam_thresholds" in body:
        # null or {} clears every override; a supplied object replaces the whole map.
        fields["spam_thresholds"] = spam_thresholds(body["spam_thresholds"])
    if body.get("primary_address"):
        # The store cannot rename a mailbox yet; refusing beats silently ignoring the change.
        raise _invalid_mailbox("primary_address cannot be changed")
    limits = outbound_limits(body.get("outbound_limits"))
    if limits is not None:
        fields["outbound_limits"] = limits
    if body.get("status"):
        fields["status"] = body["status"]
    if body.get("quota_bytes") is not None:
        fields["quota_bytes"] = body["quota_bytes"]
    mailbox = await api.store.update_mailbox(mailbox_id, **fields)
    if mailbox is None:
        raise APIError(404, "mailbox_update_failed", "Mailbox not found")
    return data(request, mailbox_json(mailbox))


@routes.route("DELETE", "/api/v1/mailboxes/<mailbox_id>", failure="mailbox_delete_failed")
async def delete_mailbox(api, request, mailbox_id):
    mailbox = await api.store.delete_mailbox(mailbox_id)
    if mailbox is None:
        raise APIError(404, "mailbox_delete_failed", "Mailbox not found")
    return data(request, mailbox_json(mailbox))


@routes.route("POST", "/api/v1/mailboxes/<mailbox_id>/restore", failure="mailbox_restore_failed")
async def restore_mailbox(api, request, mailbox_id):
    mailbox = await api.store.restore_mailbox(mailbox_id)
    if mailbox is None:
        raise APIError(404, "mailbox_restore_failed", "Mailbox not found")
    return data(request, mailbox_json(mailbox))


@routes.route("DELETE", "/api/v1/mailboxes/<mailbox_id>/hard", failure="mailbox_hard_delete_failed")
async def hard_delete_mailbox(api, request, mailbox_id):
    # The same store path as the hourly purge of mailboxes deleted 30 days ago (API.md 5.7).
    if not await api.store.hard_delete_mailbox(mailbox_id):
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    return data(request, {})


@routes.route(
    "POST", "/api/v1/mailboxes/<mailbox_id>/recompute-usage", failure="mailbox_recompute_failed"
)
async def recompute_usage(api, request, mailbox_id):
    used = await api.store.recompute_usage(mailbox_id)
    if used is None:
        raise APIError(404, "mailbox_not_found", "Mailbox not found")
    # Not an entity: the original answers a map, so a zero is written too.
    return data(request, {"mailbox_id": mailbox_id, "used_bytes": used})
