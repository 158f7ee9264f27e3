"""Sender rules: ``/api/v1/rules/sender`` (API.md 1.12). How inbound mail applies them is in
``haitatsu/delivery/senderrules.py``."""

from __future__ import annotations

import ipaddress

from haitatsu.api import schemas
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    read_object,
    timestamp,
)

routes = RouteTable()

SCOPES = ("global", "mailbox", "domain")
KINDS = ("allow", "block")
MATCH_TYPES = ("email", "domain", "ip", "cidr")
ACTIONS = ("junk", "reject")


def rule_json(rule) -> dict:
    # An explicit struct in the original: every field is always present.
    return {
        "id": rule.id,
        "scope": rule.scope,
        "scope_ref": rule.scope_ref,
        "kind": rule.kind,
        "match_type": rule.match_type,
        "value": rule.value,
        "action": rule.action,
        "created_at": timestamp(rule.created_at),
        "updated_at": timestamp(rule.updated_at),
    }


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_sender_rule", message)


def validate(body: dict) -> dict:
    """The rule's fields, or ``invalid_sender_rule`` with the reason."""
    fields = {}
    for key in ("scope", "scope_ref", "kind", "match_type", "value", "action"):
        value = body.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise _invalid(f"{key} must be a string")
        fields[key] = value.strip()
    for key, allowed in (("scope", SCOPES), ("kind", KINDS), ("match_type", MATCH_TYPES)):
        if not fields[key]:
            raise _invalid(f"{key} is required")
        if fields[key] not in allowed:
            raise _invalid(f"{key} must be one of {', '.join(allowed)}")
    if not fields["value"]:
        raise _invalid("value is required")
    fields["action"] = fields["action"] or "junk"
    if fields["action"] not in ACTIONS:
        raise _invalid(f"action must be one of {', '.join(ACTIONS)}")
    if fields["scope"] != "global" and not fields["scope_ref"]:
        raise _invalid(f"scope_ref is required for scope {fields['scope']}")
    value = fields["value"].lower()
    if fields["match_type"] == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _invalid("value must be an IP address for match_type ip") from None
    elif fields["match_type"] == "cidr":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise _invalid("value must be a CIDR network for match_type cidr") from None
    elif fields["match_type"] == "email" and "@" not in value:
        raise _invalid("value must be an email address for match_type email")
    elif fields["match_type"] == "domain" and ("@" in value or not value.strip(".")):
        raise _invalid("value must be a domain for match_type domain")
    fields["value"] = value
    return fields


list_rules = routes.list_route(
    "/api/v1/rules/sender",
    "list_rules",
    "sender_rule_list_failed",
    lambda api, **kw: api.store.list_sender_rules(**kw),
    rule_json,
    filters=("scope", "kind"),
    spec=schemas.list_operation("Sender rules", "SenderRule", filters=("scope", "kind")),
)


@routes.route(
    "POST",
    "/api/v1/rules/sender",
    failure="sender_rule_create_failed",
    spec={
        "summary": "Create a sender rule",
        "requestBody": {
            "required": True,
            "content": schemas.json_content(schemas.ref("SenderRuleRequest")),
        },
        "responses": {"201": schemas.data_response("The rule", schemas.ref("SenderRule"))},
    },
)
async def create_rule(api, request):
    fields = validate(read_object(request))
    rule = await api.store.create_sender_rule(**fields)
    return data(request, rule_json(rule), 201)


@routes.route(
    "DELETE",
    "/api/v1/rules/sender/<rule_id>",
    failure="sender_rule_delete_failed",
    spec={
        "summary": "Delete a sender rule",
        "responses": {"200": schemas.data_response("Deleted", schemas.ref("Empty"))},
    },
)
async def delete_rule(api, request, rule_id):
    if not await api.store.delete_sender_rule(rule_id):
        raise APIError(404, "sender_rule_delete_failed", "Sender rule not found")
    return data(request, {})
