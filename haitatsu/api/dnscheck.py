"""``GET /api/v1/dns/check/:domain`` (API.md 1.14): MX, DKIM, SPF and DMARC of a domain, looked
up through the server's shared resolver (``haitatsu.dns.Resolver``, the filters' one, with its
TTL cache) on the name servers of ``dns.nameservers`` (the system's when empty)."""

from __future__ import annotations

from haitatsu.api import schemas
from haitatsu.api.conventions import APIError, RouteTable, data
from haitatsu.dns import NameNotFound, ServerFailure, TemporaryDNSError

routes = RouteTable()


async def _lookup(lookup, name: str) -> list | None:
    """What ``lookup(name)`` found, [] when the name has none (or the server answered with an
    error), None when no answer came (timeout)."""
    try:
        return await lookup(name)
    except (NameNotFound, ServerFailure):
        return []
    except TemporaryDNSError:
        return None


def mx_check(answers, hosts: list[str]) -> dict:
    """``answers``: the resolver's ``(preference, host)`` pairs, or None when the lookup
    failed."""
    targets = sorted({host.lower().rstrip(".") for _, host in answers or ()})
    if answers is None:
        return {"name": "mx", "status": "missing", "message": "MX lookup failed"}
    if not targets:
        return {"name": "mx", "status": "missing", "message": "no MX records"}
    matching = [t for t in targets if t in hosts]
    if matching:
        return {"name": "mx", "status": "ok", "message": f"MX points to {matching[0]}"}
    return {
        "name": "mx",
        "status": "warning",
        "message": f"MX points to {', '.join(targets)}, expected one of: {', '.join(hosts)}",
    }


def dkim_check(selector: str | None, texts: list[str] | None, domain: str) -> dict:
    if not selector:
        return {"name": "dkim", "status": "missing", "message": "no DKIM key for the domain"}
    name = f"{selector}._domainkey.{domain}"
    if not texts:
        return {"name": "dkim", "status": "missing", "message": f"no TXT record at {name}"}
    if any("v=DKIM1" in t for t in texts):
        return {"name": "dkim", "status": "ok", "message": f"DKIM record found at {name}"}
    return {"name": "dkim", "status": "warning", "message": f"TXT at {name} has no v=DKIM1"}


def prefix_check(name: str, prefix: str, texts: list[str] | None, where: str) -> dict:
    if not texts:
        return {"name": name, "status": "missing", "message": f"no TXT record at {where}"}
    for text in texts:
        if text.startswith(prefix):
            return {"name": name, "status": "ok", "message": text}
    return {
        "name": name,
        "status": "warning",
        "message": f"no TXT record at {where} starts with {prefix}",
    }


async def dkim_selector(store, domain: str) -> str | None:
    """The selector of the key that signs the domain's mail (its newest active DKIM key), or
    None when the domain has none."""
    key = await store.signing_key(domain)
    return key.selector if key is not None else None


@routes.route(
    "GET",
    "/api/v1/dns/check/<domain>",
    failure="dns_check_failed",
    spec={
        "summary": "Check a domain's MX, DKIM, SPF and DMARC records",
        "responses": {"200": schemas.data_response("The checks", schemas.ref("DNSCheck"))},
    },
)
async def dns_check(api, request, domain):
    domain = domain.strip().lower().rstrip(".")
    if not domain:
        raise APIError(400, "domain_required", "Domain is required")
    config = api.get_config()
    resolver = api.resolver()
    hosts = [config.server.public_hostname.lower().rstrip(".")]
    mx = await _lookup(resolver.mx, domain)
    selector = await dkim_selector(api.store, domain)
    dkim_name = f"{selector}._domainkey.{domain}" if selector else ""
    dkim_texts = await _lookup(resolver.txt, dkim_name) if selector else []
    spf_texts = await _lookup(resolver.txt, domain)
    dmarc_name = f"_dmarc.{domain}"
    dmarc_texts = await _lookup(resolver.txt, dmarc_name)
    return data(
        request,
        {
            "domain": domain,
            "checks": [
                mx_check(mx, hosts),
                dkim_check(selector, dkim_texts, domain),
                prefix_check("spf", "v=spf1", spf_texts, domain),
                prefix_check("dmarc", "v=DMARC1", dmarc_texts, dmarc_name),
            ],
        },
    )
