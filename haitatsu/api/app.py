"""The REST API as one Klein application (DESIGN.md "REST API", API.md sections 0 and 1).

``HaitatsuAPI`` holds the collaborators; the routes live per resource in their own modules and
are installed on the class's Klein app, so state lives on the instance (Klein's "non-global
state" pattern) and every route shares one error handler and one set of conventions.
"""

from __future__ import annotations

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from haitatsu.api import conventions, folders, mailboxes, messages, ops, passwords
from haitatsu.api.conventions import APIError, error_body, go_html_escape, respond
from haitatsu.interfaces import Conflict, StorageUnavailable

RESOURCES = (ops, mailboxes, passwords, folders, messages)

API_PREFIX = b"/api/v1"


def _klein_app() -> Klein:
    app = Klein()
    # Fiber (the original's router) treats "/x" and "/x/" alike and never redirects.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    for module in RESOURCES:
        module.routes.install(app)
    return app


class HaitatsuAPI:
    """The REST API: ``Site(HaitatsuAPI(...).resource())`` serves it.

    ``get_config()`` returns the live ``Config``; the service token is read from it on every
    request, so a reload changes it at once. ``reloader.reload()`` returns a Deferred that
    fails with the reason when a reload is refused; ``reloader`` may be None.
    """

    app = _klein_app()
    _log = Logger()

    def __init__(self, get_config, store, reloader, reactor):
        self.get_config = get_config
        self.store = store
        self.reloader = reloader
        self.reactor = reactor

    def resource(self):
        """The twisted.web resource of the whole API (root, /health, /ready and /api/v1)."""
        return self.app.resource()

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
