"""What every route of the REST API shares (API.md section 0).

The envelopes, the error type and its mapping, JSON encoding with the original's ``omitempty``,
``limit``/``cursor`` pagination, request bodies and the service-token check live here, so a
resource module only says what is particular to its resource and every route answers alike.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import orjson
from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from haitatsu.interfaces import Conflict, StorageUnavailable
from haitatsu.storage.records import rfc3339
from haitatsu.storage.views import is_zero as _is_zero

#: The HTTP body limit of the original (Fiber's ``BodyLimit``).
BODY_LIMIT = 64 * 1024 * 1024

DEFAULT_LIMIT = 50
MAX_LIMIT = 100

_INT64_MAX = 2**63 - 1


# -- errors ---------------------------------------------------------------------------------


class APIError(Exception):
    """An answer in the error envelope: ``{"error": {"code", "message", "details": {}}}``.

    Raised anywhere below a route; the application's single error handler writes it.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def unauthorized() -> APIError:
    return APIError(401, "unauthorized", "Authentication required")


def invalid_json() -> APIError:
    return APIError(400, "invalid_request", "Invalid JSON body")


def conflict() -> APIError:
    return APIError(409, "constraint_violation", "Resource conflicts with existing data")


def storage_unavailable() -> APIError:
    return APIError(503, "storage_unavailable", "Storage is temporarily unavailable, try again")


def internal(code: str) -> APIError:
    """A failure we did not expect; the code names the handler, as the original's do."""
    return APIError(500, code, "Internal server error")


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": {}}}


# -- JSON -----------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as Go's encoder writes it (non-ASCII text is not escaped).

    orjson writes the same bytes as ``json.dumps(value, ensure_ascii=False, separators=(",",
    ":"))`` for what the API answers, thirty times faster: a page of 50 message views is about
    400 KB of JSON (docs/benchmarks.md, REST). Non-string keys are written as strings, as the
    standard library does.
    """
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def respond(request, status: int, value: Any) -> bytes:
    """Set the status and JSON content type; return the body for Klein to write."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return dumps(value)


def data(request, value: Any, status: int = 200) -> bytes:
    """The single-item envelope ``{"data": ...}``."""
    return respond(request, status, {"data": value})


def omit_zero(fields: dict, keep: Iterable[str] = ()) -> dict:
    """Drop zero values like the original's ``omitempty`` ent structs do (API.md 0).

    ``keep`` names fields that an explicit struct always shows (app passwords).
    """
    if keep:
        kept = set(keep)
        return {k: v for k, v in fields.items() if k in kept or not _is_zero(v)}
    # A true value is never zero: only the false ones need the exact test (a page of message
    # views calls this 100 times).
    return {k: v for k, v in fields.items() if v or not _is_zero(v)}


def timestamp(ns: int | None) -> str | None:
    """RFC 3339 with nanoseconds in UTC, Go's default time encoding."""
    return rfc3339(ns)


# -- request bodies -------------------------------------------------------------------------


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(request) -> Any:
    """Parse the request body as JSON; ``invalid_request`` if it is not, 413 if too large.

    twisted.web has already received the body (into a temporary file once it passes 100 kB, so
    not into memory); the limit bounds what we read from it.
    """
    content = request.content
    if content is None:
        raise invalid_json()
    content.seek(0)
    raw = content.read(BODY_LIMIT + 1)
    if len(raw) > BODY_LIMIT:
        raise body_too_large()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_json() from None


def read_object(request) -> dict:
    """The body as a JSON object: anything else cannot decode into a request struct."""
    value = read_json(request)
    if not isinstance(value, dict):
        raise invalid_json()
    return value


def body_too_large() -> APIError:
    return APIError(413, "request_too_large", "Request body exceeds the 64 MiB limit")


def check_body_size(request) -> None:
    """Refuse a body over the limit on every route, whether or not it reads the body."""
    if getattr(request, "body_too_large", False):
        raise body_too_large()
    length = request.getHeader(b"content-length")
    if length is not None:
        try:
            if int(length) > BODY_LIMIT:
                raise body_too_large()
        except ValueError:
            pass
    content = request.content
    if content is not None:
        content.seek(0, 2)
        size = content.tell()
        content.seek(0)
        if size > BODY_LIMIT:
            raise body_too_large()


def is_int(value: Any) -> bool:
    """An int64 JSON number: not a bool, not a float, within Go's int64 range."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -_INT64_MAX - 1 <= value <= _INT64_MAX
    )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def optional_str(body: dict, key: str, error: Callable[[str], APIError]) -> str | None:
    """The string at ``key``, None if absent or null; ``error(message)`` for another type."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise error(f"{key} must be a string")
    return value


def optional_int(body: dict, key: str, error: Callable[[str], APIError]) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not is_int(value):
        raise error(f"{key} must be an integer")
    return value


# -- query parameters -----------------------------------------------------------------------


def query(request, name: str) -> str:
    """The first value of query parameter ``name``, or "" (Fiber's ``c.Query``)."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return ""
    return values[0].decode("utf-8", "replace")


def time_bound(request, name: str) -> int | None:
    """An inclusive time bound from an RFC 3339 query parameter (``after``, ``before``), as
    nanoseconds; 400 ``invalid_<name>`` otherwise (API.md 1.9, 1.10). Times are int64
    nanoseconds in the database, so years past 2262 mean "no bound" rather than an overflow."""
    text = query(request, name)
    if not text:
        return None
    try:
        value = parse_rfc3339(text)
    except ValueError:
        raise APIError(
            400, f"invalid_{name}", f"{name} must be an RFC 3339 time, e.g. 2025-05-01T10:20:30Z"
        ) from None
    return max(-(2**63), min(value, 2**63 - 1))


# -- pagination (API.md 0.2) ----------------------------------------------------------------


@attrs.frozen
class Page:
    """A list request: how many rows, and the ``(created_at, id)`` to continue after."""

    limit: int = DEFAULT_LIMIT
    before: tuple[int, str] | None = None


def parse_limit(text: str) -> int:
    """50 when absent, unparsable or <= 0; at most 100."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return DEFAULT_LIMIT
    value = int(text)
    if value > _INT64_MAX or value <= 0:
        # Go's strconv.Atoi fails on int64 overflow, which the original treats as "unparsable".
        return DEFAULT_LIMIT
    return min(value, MAX_LIMIT)


def invalid_cursor() -> APIError:
    return APIError(400, "invalid_cursor", "Invalid cursor")


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch from an RFC 3339 time (fractions up to nanoseconds)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise ValueError(f"time out of range: {text!r}")
    if day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"day out of range: {text!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second))
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    fraction = int((m.group(7) or "").ljust(9, "0"))
    return seconds * 1_000_000_000 + fraction


def encode_cursor(created_at: int, row_id: str) -> str:
    """base64url without padding of ``"<created_at RFC3339Nano UTC>|<id>"``."""
    text = f"{timestamp(created_at)}|{row_id}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The ``(created_at_ns, id)`` a cursor continues after; ``invalid_cursor`` otherwise."""
    if "=" in cursor or not re.fullmatch(r"[A-Za-z0-9_-]*", cursor) or len(cursor) % 4 == 1:
        raise invalid_cursor()
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        when, row_id = text.split("|", 1)
        created_at = parse_rfc3339(when)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_cursor() from None
    if not row_id:
        raise invalid_cursor()
    return created_at, row_id


def page_of(request) -> Page:
    """The ``limit`` and ``cursor`` of a list request."""
    cursor = query(request, "cursor")
    before = decode_cursor(cursor) if cursor else None
    return Page(limit=parse_limit(query(request, "limit")), before=before)


def page_rows(rows: Sequence, page: Page) -> tuple[list, str]:
    """Cut a result fetched with ``limit + 1`` to the page; return it and the ``next`` cursor.

    ``next`` encodes the last row returned, and is "" when no extra row exists.
    """
    rows = list(rows)
    if len(rows) <= page.limit:
        return rows, ""
    rows = rows[: page.limit]
    return rows, encode_cursor(*_sort_key(rows[-1]))


def _sort_key(row) -> tuple[int, str]:
    if isinstance(row, tuple):  # (MailboxMessage, MessageInfo)
        row = row[0]
    return row.created_at, row.id


def paginate_in_memory(rows: Iterable, page: Page) -> list:
    """Apply the list order and cursor to rows a store returns unpaginated (folders).

    Returns up to ``limit + 1`` rows, like a store's paginated list.
    """
    ordered = sorted(rows, key=_sort_key, reverse=True)
    if page.before is not None:
        ordered = [row for row in ordered if _sort_key(row) < page.before]
    return ordered[: page.limit + 1]


def page_response(request, rows: Sequence, page: Page, encode: Callable[[Any], Any]) -> bytes:
    """The list envelope ``{"data": [...], "pagination": {"next", "limit"}}``."""
    shown, next_cursor = page_rows(rows, page)
    return respond(
        request,
        200,
        {
            "data": [encode(row) for row in shown],
            "pagination": {"next": next_cursor, "limit": page.limit},
        },
    )


# -- authentication -------------------------------------------------------------------------


def token_matches(authorization: bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the service token (API.md 0).

    Exact ``Bearer `` prefix, constant-time comparison, and an empty configured token matches
    nothing.
    """
    if not token or authorization is None:
        return False
    if not authorization.startswith(b"Bearer "):
        return False
    return hmac.compare_digest(authorization[len(b"Bearer ") :], token.encode("utf-8"))


# -- Fiber's plain-text 404 -----------------------------------------------------------------

_GO_HTML_ESCAPES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;"}


def go_html_escape(text: str) -> str:
    """Go's ``html.EscapeString``, which Fiber applies to the path in ``Cannot GET /x``."""
    return "".join(_GO_HTML_ESCAPES.get(ch, ch) for ch in text)


# -- routes ---------------------------------------------------------------------------------


@attrs.frozen
class Route:
    """One route: ``failure`` is the code of a 500 when the handler fails unexpectedly."""

    method: str
    path: str
    handler: Callable
    failure: str
    auth: bool = True
    #: The route's OpenAPI operation, or the parts of it that differ from the generated
    #: default (``haitatsu/api/openapi.py``): ``summary``, ``parameters``, ``requestBody``,
    #: ``responses``.
    spec: dict | None = None


class RouteTable:
    """The routes of one resource module, installed on the application's Klein app.

    Each module keeps its handlers as plain ``async def handler(api, request, **params)``
    functions; ``install`` wraps them with what every route does (service token, body limit,
    turning an unexpected exception into the handler's 500 code) so no route can forget it.
    """

    _log = Logger()

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        failure: str = "internal_error",
        auth: bool = True,
        spec: dict | None = None,
    ):
        def register(handler):
            self.routes.append(Route(method, path, handler, failure, auth, spec))
            return handler

        return register

    def list_route(self, path: str, name: str, failure: str, fetch, encode, filters=(), spec=None):
        """Register ``GET path``, a paginated list: ``await fetch(api, limit=, before=,
        **filters)`` with each name of ``filters`` taken from the query (None when empty),
        ``limit + 1`` rows asked for, answered with ``page_response(..., encode)``. ``name`` is
        the handler's (the OpenAPI operationId's) name."""

        async def handler(api, request):
            page = page_of(request)
            chosen = {key: query(request, key) or None for key in filters}
            rows = await fetch(api, limit=page.limit + 1, before=page.before, **chosen)
            return page_response(request, rows, page, encode)

        return self._get(path, name, failure, spec, handler)

    def get_route(self, path: str, name: str, failure: str, fetch, encode, not_found, spec=None):
        """Register ``GET path`` with one path parameter: ``await fetch(api, value)`` is the
        row, answered as ``{"data": encode(row)}``, or None: 404 with ``not_found`` (code,
        message)."""

        async def handler(api, request, **params):
            (value,) = params.values()
            row = await fetch(api, value)
            if row is None:
                raise APIError(404, *not_found)
            return data(request, encode(row))

        return self._get(path, name, failure, spec, handler)

    def _get(self, path, name, failure, spec, handler):
        handler.__name__ = handler.__qualname__ = name
        return self.route("GET", path, failure=failure, spec=spec)(handler)

    def install(self, app) -> None:
        for route in self.routes:
            app.route(
                route.path,
                methods=[route.method],
                endpoint=f"{route.method} {route.path}",
                strict_slashes=False,
            )(self._endpoint(route))

    def _endpoint(self, route: Route):
        log = self._log

        async def endpoint(api, request, **params):
            metrics = getattr(api, "metrics", None)
            if metrics is not None:
                request.notifyFinish().addBoth(
                    lambda _: metrics.api_requests.labels(
                        method=route.method, status=str(request.code)
                    ).inc()
                )
            if route.auth:
                api.authenticate(request)
            check_body_size(request)
            try:
                return await route.handler(api, request, **params)
            except (APIError, StorageUnavailable, Conflict, CancelledError):
                raise
            except Exception:
                log.failure(
                    "{method} {path} failed ({code})",
                    method=route.method,
                    path=request.path.decode("utf-8", "replace"),
                    code=route.failure,
                )
                raise internal(route.failure) from None

        endpoint.__name__ = route.handler.__name__
        return endpoint
