"""``GET /.well-known/acme-challenge/<token>``: HTTP-01 answers for ACME (docs/tls.md).

Served without the token, as a CA fetches it: the key authorization of a pending HTTP-01
challenge, or 404. The answers come from the ``ACMEManager``'s ``HTTP01Responder``
(``HaitatsuAPI(acme_http01=...)``); without ACME every token is unknown.
"""

from __future__ import annotations

from haitatsu.api.conventions import RouteTable

routes = RouteTable()

_TEXT = {"text/plain": {"schema": {"type": "string"}}}


@routes.route(
    "GET",
    "/.well-known/acme-challenge/<token>",
    auth=False,
    spec={
        "summary": "ACME HTTP-01 challenge answer",
        "responses": {
            "200": {
                "description": "The key authorization of a pending challenge",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
            "404": {"description": "No pending challenge has this token", "content": _TEXT},
        },
    },
)
async def acme_challenge(api, request, token):
    responder = api.acme_http01
    answer = responder.get(token) if responder is not None else None
    if answer is None:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Not Found"
    request.setResponseCode(200)
    # As in RFC 8555 section 8.3's example.
    request.setHeader(b"Content-Type", b"application/octet-stream")
    return answer.encode("ascii")
