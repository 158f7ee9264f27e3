"""The OpenAPI 3.1 document, generated from the route table (``GET /api/v1/openapi.json``).

Every registered route appears, with what its module declared (``RouteTable.route(spec=...)``)
over a default that every route shares: the Bearer token where it applies, the path parameters,
the error envelope for 4xx and 5xx, and a JSON body for success. The document cannot drift from
the routes because it is made from them; ``tests/api/test_openapi.py`` checks both directions and
schemathesis checks answers against it.

It is served without the token: it describes the contract, holds no data, and tools fetch it.
"""

from __future__ import annotations

import copy
import re

from haitatsu import __version__
from haitatsu.api import schemas
from haitatsu.api.conventions import RouteTable, respond

routes = RouteTable()

_PARAM = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(path: str) -> str:
    """Klein's ``/mailboxes/<mailbox_id>`` as OpenAPI's ``/mailboxes/{mailbox_id}``."""
    return _PARAM.sub(r"{\1}", path)


def _default_operation(route) -> dict:
    success = "201" if route.method in ("POST", "PUT") else "200"
    responses = {
        "200": schemas.data_response("Success", {}),
        "400": schemas.error_response("Invalid request"),
        "404": schemas.error_response("Not found"),
        "409": schemas.error_response("Conflict"),
        "413": schemas.error_response("Body over 64 MiB"),
        "500": schemas.error_response("Unexpected failure; the code names the handler"),
        "503": schemas.error_response("Storage temporarily unavailable"),
    }
    if success == "201":
        responses["201"] = schemas.data_response("Created", {})
    if route.method in ("POST", "PUT", "PATCH"):
        body = {
            "required": False,
            "content": schemas.json_content({"type": "object"}),
        }
    else:
        body = None
    operation = {
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = body
    if route.auth:
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = schemas.error_response("Missing or wrong service token")
    else:
        operation["security"] = []
    return operation


def _merge(operation: dict, spec: dict | None) -> dict:
    if not spec:
        return operation
    spec = copy.deepcopy(spec)
    responses = spec.pop("responses", {})
    parameters = spec.pop("parameters", [])
    operation.update(spec)
    # A route's own responses replace the default success answers and add to the errors.
    if any(code.startswith("2") for code in responses):
        for code in [c for c in operation["responses"] if c.startswith("2")]:
            del operation["responses"][code]
    operation["responses"].update(responses)
    operation["parameters"] = operation["parameters"] + parameters
    return operation


def build_document(route_list) -> dict:
    """The whole document for ``route_list`` (every ``Route`` of the application)."""
    paths: dict = {}
    for route in route_list:
        operation = _merge(_default_operation(route), route.spec)
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "haitatsu",
            "version": __version__,
            "description": (
                "Mailboxes, messages, events and webhooks of a haitatsu mail server. "
                "Compatible with the original Go haitatsu's API; see docs/api.md."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": copy.deepcopy(schemas.COMPONENTS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.route(
    "GET",
    "/api/v1/openapi.json",
    auth=False,
    spec={
        "summary": "This document",
        "responses": {
            "200": {
                "description": "The OpenAPI 3.1 document",
                "content": schemas.json_content({"type": "object"}),
            }
        },
    },
)
async def openapi_document(api, request):
    return respond(request, 200, api.openapi())
