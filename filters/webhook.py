"""``webhook``: ask an HTTP endpoint of yours about each message, and do what it answers.

At each of its ``stages`` (DATA by default) the filter POSTs the message's metadata as JSON
(``haitatsu.filtering.metadata``: the connection, the envelope, the header fields, the results
so far) to ``url``, signed like the server's webhooks (API.md 3): ``X-Haitatsu-Signature:
sha256=`` + HMAC-SHA256 over ``timestamp + "." + body`` keyed by ``secret`` (default
``webhooks.secret``; one of them is required), with ``X-Haitatsu-Event: filter.<stage>``,
``X-Haitatsu-Timestamp``, ``X-Haitatsu-Trace-ID`` and ``X-Haitatsu-Delivery`` (a ULID per
request).

A 2xx answer with an empty body is a plain continue; otherwise its JSON object is the verdict
(``{"action": "reject", "code": 550, "enhanced": "5.7.1", "text": "...", "reason": "..."}``,
``"headers"``, ``"score"``, ``"spam_reasons"``, ``"fields"``). A non-2xx answer, a body that is
not such an object, or no answer within ``request_timeout_seconds`` is a failure of the filter:
its ``on_error`` applies (by default a tempfail, so mail never passes a broken endpoint).

Options: ``url`` (required, http or https), ``secret``, ``stages`` (``["data"]``; any of
connect, helo, mail, rcpt, data, delivery), ``request_timeout_seconds`` (10),
``max_response_bytes`` (65536), ``include_headers`` (true: the header fields at DATA).
"""

from __future__ import annotations

import json

import treq
import ulid
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.plugin import IPlugin
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from haitatsu.filtering import IFilter, IFilterFactory, Options, Stage
from haitatsu.filtering.metadata import context_metadata, verdict_from_answer
from haitatsu.webhooks import go_json, signature, webhook_timestamp


class WebhookError(Exception):
    """The endpoint failed: it did not answer in time, answered non-2xx or nonsense."""


def _cancelled(error: Exception) -> Exception:
    """``error``, or CancelledError when it is the request's cancellation (the chain's
    ``timeout_seconds`` ran out): the chain then treats it as the timeout it is."""
    reasons = getattr(error, "reasons", None) or []
    if any(getattr(r, "check", lambda *_: False)(defer.CancelledError) for r in reasons):
        return defer.CancelledError()
    return error


class _Body:
    """Collects a response body up to ``limit`` bytes; ``over`` once it went past."""

    def __init__(self, limit: int):
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def __call__(self, data: bytes):
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
            self.chunks = []
        elif not self.over:
            self.chunks.append(data)


@implementer(IFilter)
class WebhookFilter:
    name = "webhook"

    def __init__(self, http, pool, clock, url, secret, stages, timeout, max_bytes, headers):
        self.http = http
        self.pool = pool
        self.clock = clock
        self.url = url
        self.secret = secret
        self.stages = tuple(stages)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.include_headers = headers

    async def check(self, stage, context):
        payload = context_metadata(stage, context, headers=self.include_headers)
        payload["event"] = f"filter.{stage.value}"
        body = go_json(payload)
        timestamp = webhook_timestamp(self.clock.seconds())
        headers = {
            "Content-Type": "application/json",
            "X-Haitatsu-Event": payload["event"],
            "X-Haitatsu-Timestamp": timestamp,
            "X-Haitatsu-Signature": signature(self.secret, timestamp, body),
            "X-Haitatsu-Trace-ID": context.trace_id,
            "X-Haitatsu-Delivery": str(ulid.ULID()),
        }

        async def exchange():
            response = await self.http.post(self.url, data=body, headers=headers)
            collected = _Body(self.max_bytes)
            await treq.collect(response, collected)
            return response.code, collected

        d = defer.Deferred.fromCoroutine(exchange())
        timed_out = []
        timer = self.clock.callLater(self.timeout, lambda: (timed_out.append(1), d.cancel()))
        try:
            code, collected = await d
        except Exception as e:
            if timed_out:
                raise WebhookError(f"{self.url}: no answer within {self.timeout:g} s") from None
            raise _cancelled(e) from None
        finally:
            if timer.active():
                timer.cancel()
        if not 200 <= code < 300:
            raise WebhookError(f"{self.url} answered {code}")
        if collected.over:
            raise WebhookError(f"{self.url}: answer over {self.max_bytes} bytes")
        raw = b"".join(collected.chunks)
        if not raw.strip():
            return None
        try:
            answer = json.loads(raw)
        except ValueError as e:
            raise WebhookError(f"{self.url}: answer is not JSON ({e})") from None
        try:
            return verdict_from_answer(answer, default_reason="webhook")
        except ValueError as e:
            raise WebhookError(f"{self.url}: {e}") from None

    def close(self):
        return self.pool.closeCachedConnections()


@implementer(IPlugin, IFilterFactory)
class WebhookFactory:
    name = "webhook"
    description = "POST the message's metadata to an HTTP endpoint and take its verdict"

    def build(self, options, environment):
        opts = Options(self.name, options)
        url = opts.string("url").strip()
        if not url.startswith(("http://", "https://")):
            raise opts.error("url", f"expected an http:// or https:// URL, got {url!r}")
        webhooks = getattr(environment.config, "webhooks", None)
        secret = opts.string("secret", default=getattr(webhooks, "secret", "") or "")
        if not secret:
            raise opts.error("secret", "required (or set webhooks.secret): requests are signed")
        names = opts.strings("stages", default=["data"])
        stages = []
        for name in names:
            try:
                stages.append(Stage(name))
            except ValueError:
                known = ", ".join(s.value for s in Stage)
                raise opts.error("stages", f"unknown stage {name!r} (stages: {known})") from None
        if not stages:
            raise opts.error("stages", "name at least one stage")
        timeout = opts.number("request_timeout_seconds", default=10.0, minimum=0.001)
        max_bytes = opts.integer("max_response_bytes", default=65536, minimum=1)
        include_headers = opts.boolean("include_headers", default=True)
        opts.done()
        reactor = environment.reactor
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        http = HTTPClient(Agent(reactor, pool=pool))
        return WebhookFilter(
            http, pool, reactor, url, secret, stages, timeout, max_bytes, include_headers
        )


webhook = WebhookFactory()
