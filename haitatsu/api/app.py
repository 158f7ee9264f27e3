"""The REST API as one Klein application (DESIGN.md "REST API", API.md sections 0 and 1).

``HaitatsuAPI`` holds the collaborators; the routes live per resource in their own modules and
are installed on the class's Klein app, so state lives on the instance (Klein's "non-global
state" pattern) and every route shares one error handler and one set of conventions.
"""

from __future__ import annotations

import tempfile

from klein import Klein
from twisted.logger import Logger, LogLevel
from twisted.web.server import Request, Site
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import haitatsu.log
from haitatsu.api import (
    acme_challenge,
    audit,
    conventions,
    dkim,
    dnscheck,
    domains,
    events,
    exports,
    folders,
    imports,
    labels,
    mail_routes,
    mailboxes,
    message_actions,
    messages,
    metrics,
    openapi,
    ops,
    outbound,
    passwords,
    queue,
    routing_rules,
    senderrules,
    sieve,
)
from haitatsu.api.conventions import BODY_LIMIT, APIError, error_body, go_html_escape, respond
from haitatsu.dns import Resolver
from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.submission.pipeline import SubmissionPipeline

RESOURCES = (
    ops,
    mailboxes,
    passwords,
    folders,
    messages,
    domains,
    mail_routes,
    routing_rules,
    labels,
    message_actions,
    audit,
    queue,
    dkim,
    outbound,
    events,
    senderrules,
    sieve,
    exports,
    imports,
    dnscheck,
    metrics,
    openapi,
    acme_challenge,
)


def all_routes() -> list:
    """Every route of the application, in registration order."""
    return [route for module in RESOURCES for route in module.routes.routes]


API_PREFIX = b"/api/v1"


def _klein_app() -> Klein:
    app = Klein()
    # Fiber (the original's router) treats "/x" and "/x/" alike and never redirects.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    for module in RESOURCES:
        module.routes.install(app)
    return app


class QuietSite(Site):
    """A ``Site`` whose access log line is formatted only when the live log level lets it
    through: twisted.web logs each request at level info, and formatting the line costs as
    much as a small request's own work (docs/benchmarks.md, REST); at ``warn`` it was formatted
    and then dropped."""

    def log(self, request):
        if haitatsu.log.settings.predicate.logLevelForNamespace("log_legacy") <= LogLevel.info:
            super().log(request)


class HaitatsuAPI:
    """The REST API: ``api.site()`` (or ``Site(api.resource())``) serves it.

    ``get_config()`` returns the live ``Config``; the service token is read from it on every
    request, so a reload changes it at once. ``reloader.reload()`` returns a Deferred that
    fails with the reason when a reload is refused; ``reloader`` may be None. ``spool_dir`` is
    where ``POST /mailboxes/:id/outbound`` writes the message it sends (default: the system's
    temporary directory); ``submission`` the ``SubmissionPipeline`` it goes through (default:
    one on the same store and config). ``metrics`` is the ``haitatsu.metrics.Metrics`` to count
    requests in and serve (the server's by default). ``acme_http01`` holds the answers to
    pending ACME HTTP-01 challenges (``haitatsu.acme.HTTP01Responder``), None without ACME.
    ``resolver`` returns the server's shared ``haitatsu.dns.Resolver`` (the hub passes the
    filters' one); without it the API builds its own from ``dns``.
    """

    app = _klein_app()
    _log = Logger()

    #: Seconds between the comment lines that keep an idle event stream (and proxies) alive.
    sse_heartbeat_seconds = 15.0

    def __init__(
        self,
        get_config,
        store,
        reloader,
        reactor,
        spool_dir=None,
        submission=None,
        metrics=None,
        acme_http01=None,
        resolver=None,
    ):
        from haitatsu.metrics import METRICS

        self.get_config = get_config
        self.store = store
        self.reloader = reloader
        self.reactor = reactor
        if submission is None:
            submission = SubmissionPipeline(
                store, get_config, reactor, spool_dir or tempfile.gettempdir()
            )
        self.submission = submission
        self.metrics = metrics if metrics is not None else METRICS
        self.acme_http01 = acme_http01
        self._shared_resolver = resolver
        self._resolver = None
        self._openapi = None

    def resolver(self):
        """The ``haitatsu.dns.Resolver`` for DNS checks: the server's shared one (the filters',
        with its cache) when the hub handed it in, else one of the API's own for the live
        ``dns`` config (rebuilt when a reload changes it)."""
        if self._shared_resolver is not None:
            return self._shared_resolver()
        config = self.get_config()
        if self._resolver is None or not self._resolver.same_settings(config.dns):
            self._resolver = Resolver.from_config(config.dns, self.reactor)
        return self._resolver

    def openapi(self) -> dict:
        """The OpenAPI document of every route (built once)."""
        if self._openapi is None:
            self._openapi = openapi.build_document(all_routes())
        return self._openapi

    def resource(self):
        """The twisted.web resource of the whole API (root, /health, /ready and /api/v1)."""
        return self.app.resource()

    def site(self, body_limit: int = BODY_LIMIT) -> Site:
        """A ``Site`` serving ``resource()`` that stops storing a request body past the limit.

        Behind a plain ``Site`` the limit still holds, but twisted.web first spools the whole
        body to a temporary file; this one discards what is over the limit as it arrives.
        """
        request_type = type("BodyLimitedRequest", (BodyLimitedRequest,), {"body_limit": body_limit})
        return QuietSite(self.resource(), requestFactory=request_type)

    def authenticate(self, request) -> None:
        """Raise the exact 401 envelope unless the request carries the live service token."""
        token = self.get_config().api.service_token
        if not conventions.token_matches(request.getHeader(b"authorization"), token):
            raise conventions.unauthorized()

    @app.handle_errors(Exception)
    def _error(self, request, failure):
        error = failure.value
        if isinstance(error, HTTPException):
            return self._unrouted(request, error)
        if isinstance(error, APIError):
            pass
        elif isinstance(error, StorageUnavailable):
            self._log.warn(
                "{method} {path}: storage unavailable: {error}",
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("utf-8", "replace"),
                error=str(error),
            )
            error = conventions.storage_unavailable()
        elif isinstance(error, Conflict):
            error = conventions.conflict()
        else:
            self._log.failure(
                "{method} {path} failed",
                failure=failure,
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("utf-8", "replace"),
            )
            error = conventions.internal("internal_error")
        return respond(request, error.status, error_body(error.code, error.message))

    def _unrouted(self, request, error: HTTPException):
        """No route matched: Fiber's plain-text answers, after the token check under /api/v1."""
        path = request.path
        if path == API_PREFIX or path.startswith(API_PREFIX + b"/"):
            try:
                self.authenticate(request)
            except APIError as denied:
                return respond(request, denied.status, error_body(denied.code, denied.message))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if isinstance(error, MethodNotAllowed):
            request.setResponseCode(405)
            return b"Method Not Allowed"
        request.setResponseCode(404)
        method = request.method.decode("ascii", "replace")
        text = f"Cannot {method} {go_html_escape(path.decode('utf-8', 'replace'))}"
        return text.encode("utf-8")


class BodyLimitedRequest(Request):
    """A request that keeps at most ``body_limit`` bytes of body and notes when there was more.

    The route answers 413 (``conventions.check_body_size``) instead of reading the body.
    """

    body_limit = BODY_LIMIT
    body_too_large = False

    def gotLength(self, length):
        if length is not None and length > self.body_limit:
            self.body_too_large = True
            length = 0  # keep nothing: an in-memory buffer that stays empty
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > self.body_limit:
            # A chunked body of unannounced length went over: drop what we kept too.
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)
