"""``GET /api/v1/dns/check/:domain`` (API.md 1.14): MX, DKIM, SPF and DMARC of a domain, looked
up through twisted.names with the resolvers of ``dns.nameservers`` (the system's when empty)."""

from __future__ import annotations

from twisted.names import client, dns
from twisted.names import error as dns_error

from haitatsu.api import schemas
from haitatsu.api.conventions import APIError, RouteTable, data

routes = RouteTable()

#: Seconds for each try of a query: an API call must not wait for the resolver's full minute.
QUERY_TIMEOUT = (1, 3)


def resolver_for(config, reactor):
    """A twisted.names resolver for ``config.dns``."""
    servers = config.dns.servers()
    if servers:
        return client.Resolver(servers=servers, reactor=reactor)
    return client.createResolver(reactor=reactor)


async def _lookup(lookup, name: str) -> list | None:
    """The answer records, [] when the name has none, None when the lookup itself failed."""
    try:
        answers, _, _ = await lookup(name, timeout=QUERY_TIMEOUT)
    except (dns_error.DomainError, dns_error.AuthoritativeDomainError):
        return []
    except Exception:
        return None
    return answers


def _texts(answers, name: str) -> list[str]:
    out = []
    for record in answers or ():
        if record.type == dns.TXT and str(record.name).lower() == name.lower():
            out.append(b"".join(record.payload.data).decode("utf-8", "replace"))
    return out


def mx_check(answers, hosts: list[str]) -> dict:
    targets = sorted(
        {str(r.payload.name).lower().rstrip(".") for r in answers or () if r.type == dns.MX}
    )
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
    mx = await _lookup(resolver.lookupMailExchange, domain)
    selector = await dkim_selector(api.store, domain)
    dkim_name = f"{selector}._domainkey.{domain}" if selector else ""
    dkim_texts = (
        _texts(await _lookup(resolver.lookupText, dkim_name), dkim_name) if selector else []
    )
    spf_texts = _texts(await _lookup(resolver.lookupText, domain), domain)
    dmarc_name = f"_dmarc.{domain}"
    dmarc_texts = _texts(await _lookup(resolver.lookupText, dmarc_name), dmarc_name)
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
