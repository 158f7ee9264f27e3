"""Talking to the REST API in tests: in memory through treq's ``StubTreq``, on a real store."""

from __future__ import annotations

import json

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor, task

from haitatsu.api import HaitatsuAPI
from haitatsu.config.model import APIConfig, Config

TOKEN = "test-service-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@attrs.frozen
class Answer:
    status: int
    headers: object
    body: bytes
    #: The response's Content-Length (the HTTP client keeps it out of ``headers``).
    length: int | None = None

    @property
    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class LiveConfig:
    """What the config watcher gives the API: the current Config, replaced on reload."""

    def __init__(self, token: str = TOKEN):
        self.config = Config(api=APIConfig(service_token=token))

    def __call__(self) -> Config:
        return self.config

    def set_token(self, token: str) -> None:
        self.config = attrs.evolve(self.config, api=APIConfig(service_token=token))


class APIClient:
    """Requests against ``HaitatsuAPI.resource()`` with no sockets.

    The store answers from its thread pool, so the in-memory connection is pumped, with the
    real reactor turning in between, until the whole response has arrived.
    """

    def __init__(self, store=None, reloader=None, config=None, resolver=None):
        # ``config`` is the get_config callable: a LiveConfig, or e.g. a watcher's ``current``.
        self.config = config or LiveConfig()
        self.api = HaitatsuAPI(self.config, store, reloader, reactor, resolver=resolver)
        self.stub = StubTreq(self.api.resource())

    async def _pumped(self, d):
        done = []
        d.addBoth(lambda result: done.append(result) or result)
        while not done:
            self.stub.flush()
            if not done:
                await task.deferLater(reactor, 0.001, lambda: None)
        return await d

    async def request(
        self,
        method: str,
        path: str,
        json_body=None,
        body: bytes | None = None,
        auth=True,
        headers: dict | None = None,
    ) -> Answer:
        all_headers = dict(AUTH) if auth else {}
        all_headers.update(headers or {})
        kwargs = {}
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            all_headers.setdefault("Content-Type", "application/json")
        if body is not None:
            kwargs["data"] = body
        response = await self._pumped(
            self.stub.request(method, "http://api.test" + path, headers=all_headers, **kwargs)
        )
        content = await self._pumped(self.stub.content(response))
        length = response.length if isinstance(response.length, int) else None
        return Answer(response.code, response.headers, content, length)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def patch(self, path, json_body=None, **kw):
        return self.request("PATCH", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": {}}}
