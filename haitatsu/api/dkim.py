"""DKIM keys: ``/api/v1/dkim`` (API.md 1.11), with the legacy ``/dkim_keys`` paths as aliases.

The server generates the key pair (RSA 2048 in a thread; Ed25519 on request, our addition) and
answers with the DNS record to publish; the private key never leaves the server. There is no
delete, as in the original.
"""

from __future__ import annotations

import re

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from haitatsu import dkim as dkimmod
from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    page_of,
    page_response,
    read_object,
)

routes = RouteTable()
_log = Logger()

# A DNS label (selector) and a domain name of such labels; both end up in a DNS name and in the
# DKIM-Signature header, where anything else would break the record or the header.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


def dkim_key_json(key) -> dict:
    """API.md 1.11's custom shape: id, domain, selector and the DNS record, nothing else."""
    return {
        "id": key.id,
        "domain": key.domain,
        "selector": key.selector,
        "dns": {
            "name": dkimmod.dns_name(key.selector, key.domain),
            "type": "TXT",
            "value": dkimmod.dns_record(key.algorithm, key.public_key),
        },
    }


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_dkim_key", message)


def _string(body: dict, key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string")
    return value


async def list_keys(api, request):
    page = page_of(request)
    rows = await api.store.list_dkim_keys(limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, dkim_key_json)


async def create_key(api, request):
    body = read_object(request)
    domain = _string(body, "domain").strip().lower()
    if not domain:
        raise APIError(400, "domain_required", "Domain is required")
    if not _DOMAIN.fullmatch(domain) or len(domain) > 253:
        raise _invalid("domain must be a domain name such as example.com")
    selector = _string(body, "selector").strip().lower() or dkimmod.DEFAULT_SELECTOR
    if not _SELECTOR.fullmatch(selector):
        raise _invalid("selector must be a DNS label such as zpr1")
    algorithm = _string(body, "algorithm").strip().lower() or "rsa"
    if algorithm not in dkimmod.ALGORITHMS:
        raise _invalid('algorithm must be "rsa" or "ed25519"')
    try:
        pair = await deferToThreadPool(
            api.reactor, api.reactor.getThreadPool(), dkimmod.generate_key, algorithm
        )
    except Exception:
        _log.failure("generating a DKIM key failed")
        raise APIError(500, "dkim_key_generation_failed", "Internal server error") from None
    key = await api.store.create_dkim_key(
        domain, selector, pair.algorithm, pair.private_pem, pair.public_pem
    )
    _log.info(
        "DKIM key {key_id} created for {domain} (selector {selector}, {algorithm})",
        key_id=key.id,
        domain=domain,
        selector=selector,
        algorithm=algorithm,
    )
    return data(request, dkim_key_json(key), status=201)


async def get_key(api, request, key_id):
    key = await api.store.get_dkim_key(key_id)
    if key is None:
        raise APIError(404, "dkim_key_not_found", "DKIM key not found")
    return data(request, dkim_key_json(key))


for _base in ("/api/v1/dkim", "/api/v1/dkim_keys"):
    routes.route("GET", _base, failure="dkim_key_list_failed")(list_keys)
    routes.route("POST", _base, failure="dkim_key_create_failed")(create_key)
    routes.route("GET", _base + "/<key_id>", failure="dkim_key_not_found")(get_key)
