"""Domains and their quotas: ``/api/v1/domains`` (our addition, docs/api.md "Domains").

A domain's quota caps the sum of ``used_bytes`` over the mailboxes whose primary address is in
the domain. The routes follow the contract's conventions: envelopes, ``omitempty`` entities,
``limit``/``cursor`` pagination, handler-specific error codes.
"""

from __future__ import annotations

import re

from haitatsu.api.conventions import (
    APIError,
    RouteTable,
    data,
    is_int,
    omit_zero,
    page_of,
    page_response,
    read_object,
    timestamp,
)

routes = RouteTable()

# Letters, digits, hyphens, underscores and dots, as in host names (and IDNA's xn-- labels).
_DOMAIN = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


def domain_json(domain) -> dict:
    return omit_zero(
        {
            "name": domain.name,
            "quota_bytes": domain.quota_bytes,
            "used_bytes": domain.used_bytes,
            "mailbox_count": domain.mailbox_count,
            "created_at": timestamp(domain.created_at),
            "updated_at": timestamp(domain.updated_at),
        }
    )


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_domain", message)


def domain_name(text: str) -> str:
    """The path's domain, lowercased; ``invalid_domain`` unless it looks like a host name."""
    name = text.strip().lower()
    if not _DOMAIN.fullmatch(name) or ".." in name:
        raise _invalid("domain must be a domain name such as example.com")
    return name


@routes.route("GET", "/api/v1/domains", failure="domain_list_failed")
async def list_domains(api, request):
    page = page_of(request)
    rows = await api.store.list_domains(limit=page.limit + 1, before=page.before)
    return page_response(request, rows, page, domain_json)


@routes.route("GET", "/api/v1/domains/<domain>", failure="domain_not_found")
async def get_domain(api, request, domain):
    found = await api.store.get_domain(domain_name(domain))
    if found is None:
        raise APIError(404, "domain_not_found", "Domain not found")
    return data(request, domain_json(found))


@routes.route("PUT", "/api/v1/domains/<domain>/quota", failure="domain_quota_update_failed")
async def set_domain_quota(api, request, domain):
    name = domain_name(domain)
    body = read_object(request)
    if body.get("quota_bytes") is None:
        raise APIError(400, "quota_bytes_required", "quota_bytes is required")
    quota = body["quota_bytes"]
    if not is_int(quota) or quota < 0:
        raise _invalid("quota_bytes must be an integer >= 0")
    found, created = await api.store.set_domain_quota(name, quota)
    return data(request, domain_json(found), status=201 if created else 200)
