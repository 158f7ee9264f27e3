"""Health, readiness (API.md 5.1) and the config reload (API.md 1.14)."""

from __future__ import annotations

from twisted.internet.defer import TimeoutError, maybeDeferred

from haitatsu.api import schemas
from haitatsu.api.conventions import APIError, RouteTable, data, respond

routes = RouteTable()

#: How long ``/ready`` waits for each check: a hung database is "not ready", not a hung probe.
READY_TIMEOUT_SECONDS = 5


def _status_answer(description: str) -> dict:
    return {
        "description": description,
        "content": schemas.json_content(
            {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string"}, "error": {"type": "string"}},
            }
        ),
    }


@routes.route(
    "GET",
    "/health",
    auth=False,
    spec={"summary": "Liveness", "responses": {"200": _status_answer("Alive")}},
)
async def health(api, request):
    return respond(request, 200, {"status": "ok"})


async def _check(api, check) -> str | None:
    """Run one readiness check; the reason it failed, or None."""
    try:
        d = maybeDeferred(check)
        d.addTimeout(READY_TIMEOUT_SECONDS, api.reactor)
        await d
    except TimeoutError:
        return f"timed out after {READY_TIMEOUT_SECONDS}s"
    except Exception as e:
        return str(e) or type(e).__name__
    return None


@routes.route(
    "GET",
    "/ready",
    auth=False,
    spec={
        "summary": "Readiness: database, migrations and blob store",
        "responses": {
            "200": _status_answer("Ready"),
            "503": _status_answer("Not ready, with the reason"),
        },
    },
)
async def ready(api, request):
    for name, check in (("database", api.store.check), ("blobs", api.store.blobs.check)):
        reason = await _check(api, check)
        if reason is not None:
            return respond(request, 503, {"status": "not_ready", "error": f"{name}: {reason}"})
    return respond(request, 200, {"status": "ready"})


@routes.route("POST", "/api/v1/admin/reload", failure="reload_failed")
async def reload(api, request):
    if api.reloader is None:
        raise APIError(503, "reload_unavailable", "Config reload is not available")
    try:
        await api.reloader.reload()
    except Exception as e:
        raise APIError(409, "reload_failed", str(e)) from None
    return data(request, {})
