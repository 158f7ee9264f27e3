"""``GET /metrics`` in Prometheus' text format, behind the service token (API.md 5.1)."""

from __future__ import annotations

from haitatsu.api.conventions import RouteTable
from haitatsu.metrics import CONTENT_TYPE_LATEST

routes = RouteTable()


@routes.route(
    "GET",
    "/metrics",
    failure="metrics_failed",
    spec={
        "summary": "Prometheus metrics",
        "responses": {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
)
async def metrics(api, request):
    try:
        api.metrics.queue_depth.set(await api.store.queue_depth())
    except Exception:
        pass  # the other metrics are still worth reading while the database is away
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
    return api.metrics.exposition()
