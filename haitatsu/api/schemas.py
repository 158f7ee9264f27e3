"""OpenAPI pieces the routes declare next to themselves (``RouteTable.route(spec=...)``).

Component schemas are JSON Schema 2020-12 (OpenAPI 3.1). Entity objects follow the original's
``omitempty``: no property is required unless it is always present, and extra properties are
allowed, so a schema states types without forbidding what a newer server adds.
"""

from __future__ import annotations

TIME = {"type": "string", "format": "date-time"}
ID = {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}

COMPONENTS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object", "maxProperties": 0},
                },
            }
        },
    },
    "Pagination": {
        "type": "object",
        "required": ["next", "limit"],
        "properties": {
            "next": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    },
    "Empty": {"type": "object", "maxProperties": 0},
    "Any": {},
    "Event": {
        "type": "object",
        "required": ["id", "event_type", "status", "created_at", "updated_at"],
        "properties": {
            "id": ID,
            "event_type": {"type": "string"},
            "trace_id": {"type": "string"},
            "message_id": {"type": "string"},
            "mailbox_id": {"type": "string"},
            "payload": {"type": "object"},
            "status": {
                "enum": ["queued", "processing", "retry", "delivered", "failed", "no_endpoint"]
            },
            "attempts": {"type": "integer"},
            "locked_by": {"type": "string"},
            "locked_until": TIME,
            "next_attempt_at": TIME,
            "last_error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "created_at": TIME,
            "updated_at": TIME,
        },
    },
    "SenderRule": {
        "type": "object",
        "required": ["id", "scope", "kind", "match_type", "value", "action", "created_at"],
        "properties": {
            "id": ID,
            "scope": {"enum": ["global", "mailbox", "domain"]},
            "scope_ref": {"type": "string"},
            "kind": {"enum": ["allow", "block"]},
            "match_type": {"enum": ["email", "domain", "ip", "cidr"]},
            "value": {"type": "string"},
            "action": {"enum": ["junk", "reject"]},
            "created_at": TIME,
            "updated_at": TIME,
        },
    },
    "SenderRuleRequest": {
        "type": "object",
        "required": ["scope", "kind", "match_type", "value"],
        "properties": {
            "scope": {"enum": ["global", "mailbox", "domain"]},
            "scope_ref": {"type": "string"},
            "kind": {"enum": ["allow", "block"]},
            "match_type": {"enum": ["email", "domain", "ip", "cidr"]},
            "value": {"type": "string", "minLength": 1},
            "action": {"enum": ["junk", "reject", ""]},
        },
    },
    "ExportJob": {
        "type": "object",
        "required": ["id", "mailbox_id", "status", "created_at", "updated_at"],
        "properties": {
            "id": ID,
            "mailbox_id": {"type": "string"},
            "status": {"enum": ["queued", "processing", "completed", "failed"]},
            "object_key": {"type": "string"},
            "size_bytes": {"type": "integer"},
            "locked_by": {"type": "string"},
            "locked_until": TIME,
            "last_error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "expires_at": TIME,
            "created_at": TIME,
            "updated_at": TIME,
        },
    },
    "ImportJob": {
        "type": "object",
        "required": ["id", "mailbox_id", "source_type", "status", "created_at", "updated_at"],
        "properties": {
            "id": ID,
            "mailbox_id": {"type": "string"},
            "source_type": {"enum": ["zip", "maildir", "imap", "mbox"]},
            "source": {"type": "object"},
            "status": {"enum": ["queued", "processing", "completed", "failed"]},
            "imported_count": {"type": "integer"},
            "locked_by": {"type": "string"},
            "locked_until": TIME,
            "last_error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "created_at": TIME,
            "updated_at": TIME,
        },
    },
    "ImportRequest": {
        "type": "object",
        "required": ["source_type", "source"],
        "properties": {
            "source_type": {"enum": ["zip", "maildir", "imap", "mbox"]},
            "source": {
                "type": "object",
                "description": (
                    "zip: object_key (or key); maildir, mbox: path (inside imports.root); "
                    "imap: addr (host:port), username, password, mailbox or mailboxes, tls, "
                    "starttls, skip_verify"
                ),
                "properties": {
                    "object_key": {"type": "string"},
                    "key": {"type": "string"},
                    "path": {"type": "string"},
                    "addr": {"type": "string"},
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                    "mailbox": {"type": "string"},
                    "mailboxes": {"type": "array", "items": {"type": "string"}},
                    "tls": {"type": "boolean"},
                    "starttls": {"type": "boolean"},
                    "skip_verify": {"type": "boolean"},
                },
            },
        },
    },
    "DNSCheck": {
        "type": "object",
        "required": ["domain", "checks"],
        "properties": {
            "domain": {"type": "string"},
            "checks": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "required": ["name", "status", "message"],
                    "properties": {
                        "name": {"enum": ["mx", "dkim", "spf", "dmarc"]},
                        "status": {"enum": ["ok", "warning", "missing"]},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def error_response(description: str) -> dict:
    return {"description": description, "content": json_content(ref("Error"))}


def data_response(description: str, schema: dict) -> dict:
    return {
        "description": description,
        "content": json_content(
            {"type": "object", "required": ["data"], "properties": {"data": schema}}
        ),
    }


def list_response(item: str) -> dict:
    return {
        "description": "A page of the list",
        "content": json_content(
            {
                "type": "object",
                "required": ["data", "pagination"],
                "properties": {
                    "data": {"type": "array", "items": ref(item)},
                    "pagination": ref("Pagination"),
                },
            }
        ),
    }


def query_parameter(name: str, schema: dict | None = None, description: str = "") -> dict:
    parameter = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
    }
    if description:
        parameter["description"] = description
    return parameter


PAGINATION_PARAMETERS = [
    query_parameter("limit", {"type": "string"}, "1 to 100; anything else means 50"),
    query_parameter("cursor", {"type": "string"}, "the `pagination.next` of the previous page"),
]


def list_operation(summary: str, item: str, filters=(), times=()) -> dict:
    """A paginated list with exact-match ``filters`` and inclusive RFC 3339 ``times``."""
    return {
        "summary": summary,
        "parameters": [
            *PAGINATION_PARAMETERS,
            *(query_parameter(name) for name in filters),
            *(query_parameter(name, {"type": "string"}, "RFC 3339, inclusive") for name in times),
        ],
        "responses": {"200": list_response(item)},
    }


def stream_operation() -> dict:
    return {
        "summary": "The mailbox's changes as Server-Sent Events (our addition)",
        "parameters": [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Resume after this event id: missed events are replayed",
            }
        ],
        "responses": {
            "200": {
                "description": "An endless text/event-stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    }
