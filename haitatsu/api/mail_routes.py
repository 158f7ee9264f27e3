"""Routes (aliases, patterns, catch-alls): ``/api/v1/routes`` (API.md 1.4).

The store checks what makes a route valid (``check_route``: the required pair, the reserved
local part, the ``*@domain`` form of a catch-all, a pattern's syntax) and writes the
``route.*`` audit events in the same transaction as the change.
"""

from __future__ import annotations

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    omit_zero,
    page_of,
    page_response,
    read_object,
    timestamp,
)
from haitatsu.storage.store import InvalidRoute

routes = RouteTable()


def route_json(route) -> dict:
    return omit_zero(
        {
            "id": route.id,
            "source_address": route.source_address,
            "type": route.type,
            "destinations": list(route.destinations),
            "status": route.status,
            "created_at": timestamp(route.created_at),
            "updated_at": timestamp(route.updated_at),
            "deleted_at": timestamp(route.deleted_at),
        }
    )


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_route", message)


def _fields(body: dict) -> dict:
    """The request's fields, type-checked (``invalid_route`` naming the field)."""
    for key in ("source_address", "type", "status"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _invalid(f"{key} must be a string")
    destinations = body.get("destinations")
    if destinations is not None and (
        not isinstance(destinations, list) or not all(isinstance(d, str) for d in destinations)
    ):
        raise _invalid("destinations must be an array of mailbox ids")
    return body


def _refused(error: InvalidRoute) -> APIError:
    return APIError(400, error.code, error.message)


@routes.route("GET", "/api/v1/routes", failure="route_list_failed")
async def list_routes(api, request):
    page = page_of(request)
    rows = await api.store.list_routes(limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, route_json)


@routes.route("POST", "/api/v1/routes", failure="route_create_failed")
async def create_route(api, request):
    body = _fields(read_object(request))
    try:
        route = await api.store.create_route(
            body.get("source_address") or "",
            body.get("type") or "",
            destinations=body.get("destinations") or [],
            status=body.get("status") or "active",
        )
    except InvalidRoute as e:
        raise _refused(e) from None
    return data(request, route_json(route), status=201)


@routes.route("GET", "/api/v1/routes/<route_id>", failure="route_not_found")
async def get_route(api, request, route_id):
    route = await api.store.get_route(route_id)
    if route is None:
        raise APIError(404, "route_not_found", "Route not found")
    return data(request, route_json(route))


@routes.route("PATCH", "/api/v1/routes/<route_id>", failure="route_update_failed")
async def update_route(api, request, route_id):
    body = _fields(read_object(request))
    # Empty strings and absent fields leave the route as it is; a destinations array (even
    # an empty one) replaces the list.
    fields = {k: body[k] for k in ("source_address", "type", "status") if body.get(k)}
    if body.get("destinations") is not None:
        fields["destinations"] = body["destinations"]
    try:
        route = await api.store.update_route(route_id, **fields)
    except InvalidRoute as e:
        raise _refused(e) from None
    if route is None:
        raise APIError(404, "route_update_failed", "Route not found")
    return data(request, route_json(route))


@routes.route("DELETE", "/api/v1/routes/<route_id>", failure="route_delete_failed")
async def delete_route(api, request, route_id):
    route = await api.store.delete_route(route_id)
    if route is None:
        raise APIError(404, "route_delete_failed", "Route not found")
    return data(request, route_json(route))
