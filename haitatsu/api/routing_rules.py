"""Routing rules: ``/api/v1/routing/rules`` and the legacy ``/routing_rules`` (API.md 1.5).

The rules run at delivery, in the store (``RulesMixin``); here they are created, listed,
changed and deleted (a hard delete; there is no GET by id, as in the original).
"""

from __future__ import annotations

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    is_int,
    omit_zero,
    page_of,
    page_response,
    read_object,
    timestamp,
)
from haitatsu.storage.store.rules import CONDITION_KEYS, SCOPES

routes = RouteTable()


def rule_json(rule) -> dict:
    return omit_zero(
        {
            "id": rule.id,
            "scope": rule.scope,
            "scope_ref": rule.scope_ref,
            "priority": rule.priority,
            "name": rule.name,
            "enabled": rule.enabled,
            "conditions": rule.conditions,
            "actions": rule.actions,
            "created_at": timestamp(rule.created_at),
            "updated_at": timestamp(rule.updated_at),
        }
    )


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_routing_rule", message)


def _fields(body: dict) -> dict:
    """Type-check every field present (``invalid_routing_rule`` naming it)."""
    for key in ("scope", "scope_ref", "name"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _invalid(f"{key} must be a string")
    if body.get("scope") and body["scope"] not in SCOPES:
        raise _invalid("scope must be one of " + ", ".join(SCOPES))
    if body.get("priority") is not None and not is_int(body["priority"]):
        raise _invalid("priority must be an integer")
    if body.get("enabled") is not None and not isinstance(body["enabled"], bool):
        raise _invalid("enabled must be a boolean")
    conditions = body.get("conditions")
    if conditions is not None:
        if not isinstance(conditions, dict):
            raise _invalid("conditions must be an object")
        for key in CONDITION_KEYS:
            if key in conditions and not isinstance(conditions[key], str):
                raise _invalid(f"condition {key} must be a string")
    actions = body.get("actions")
    if actions is not None:
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise _invalid("actions must be an array of objects")
    return body


async def _list(api, request):
    page = page_of(request)
    rows = await api.store.list_rules(limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, rule_json)


async def _create(api, request):
    body = _fields(read_object(request))
    if not body.get("scope") or not body.get("name") or not body.get("actions"):
        raise _invalid("Scope, name and actions are required")
    enabled = body.get("enabled")
    rule = await api.store.create_rule(
        body["scope"],
        body["name"],
        body["actions"],
        scope_ref=body.get("scope_ref") or "",
        priority=body.get("priority") or 0,
        enabled=True if enabled is None else enabled,
        conditions=body.get("conditions") or {},
    )
    return data(request, rule_json(rule), status=201)


async def _update(api, request, rule_id):
    body = _fields(read_object(request))
    # Sent fields replace the rule's; empty strings (and an empty actions list, which no rule
    # may have) are ignored.
    fields = {k: body[k] for k in ("scope", "scope_ref", "name") if body.get(k)}
    for key in ("priority", "enabled", "conditions"):
        if body.get(key) is not None:
            fields[key] = body[key]
    if body.get("actions"):
        fields["actions"] = body["actions"]
    rule = await api.store.update_rule(rule_id, **fields)
    if rule is None:
        raise APIError(404, "routing_rule_update_failed", "Routing rule not found")
    return data(request, rule_json(rule))


async def _delete(api, request, rule_id):
    if not await api.store.delete_rule(rule_id):
        raise APIError(404, "routing_rule_delete_failed", "Routing rule not found")
    return data(request, {})


for _prefix in ("/api/v1/routing/rules", "/api/v1/routing_rules"):  # new path, legacy alias
    routes.route("GET", _prefix, failure="routing_rule_list_failed")(_list)
    routes.route("POST", _prefix, failure="routing_rule_create_failed")(_create)
    routes.route("PATCH", _prefix + "/<rule_id>", failure="routing_rule_update_failed")(_update)
    routes.route("DELETE", _prefix + "/<rule_id>", failure="routing_rule_delete_failed")(_delete)
