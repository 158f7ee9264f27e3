"""The configuration as typed, frozen values.

Block and key names are the original server's (API.md section 4), so an operator's existing
``haitatsu.pkl`` loads unchanged; our additions are optional blocks. ``Config.from_mapping`` takes
the evaluated Pkl module (as plain JSON data) and validates every value, naming the key and the
problem in the ``ConfigError`` it raises. Unknown keys are ignored, as the original does.
"""

from __future__ import annotations

import os
import re
import typing
import urllib.parse
from typing import Any

import attrs


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


def _nonneg(instance, attribute, value):
    if value < 0:
        raise ValueError("must be >= 0")


def _positive(instance, attribute, value):
    if value <= 0:
        raise ValueError("must be > 0")


def _endpoint_types() -> frozenset:
    """The endpoint types ``serverFromString`` understands: Twisted's own and any installed
    ``IStreamServerEndpointStringParser`` plugin's prefix."""
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    builtin = {"tcp", "tcp6", "ssl", "unix", "systemd"}
    return frozenset(builtin | {p.prefix for p in getPlugins(IStreamServerEndpointStringParser)})


def _endpoint(value: str, key: str) -> str:
    """Turn ``host:port`` (or ``[v6]:port``, ``:port``) into a Twisted server endpoint string.

    A value that already names an endpoint type (``tcp:``, ``ssl:``, ``unix:``, ...) is kept.
    An empty value means the listener is off.
    """
    value = value.strip()
    if not value:
        return ""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", value)
    if m:
        host, port = m.group(1), m.group(2)
        if int(port) > 65535:
            raise ConfigError(f"{key}: port {port} is out of range")
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    m = re.fullmatch(r"([^:\s]*):(\d+)", value)
    if m:
        host, port = m.group(1), m.group(2)
        if int(port) > 65535:
            raise ConfigError(f"{key}: port {port} is out of range")
        if host in ("", "0.0.0.0", "*"):
            return f"tcp:{port}"
        return f"tcp:{port}:interface={host}"
    m = re.match(r"^([a-z0-9]+):", value)
    if m:
        if m.group(1) not in _endpoint_types():
            raise ConfigError(
                f"{key}: {value!r} is neither host:port nor a Twisted endpoint string "
                f"(known endpoint types: {', '.join(sorted(_endpoint_types()))})"
            )
        return value
    raise ConfigError(f"{key}: {value!r} is neither host:port nor a Twisted endpoint string")


@attrs.frozen
class ServerConfig:
    api_addr: str = "127.0.0.1:8080"
    public_hostname: str = "localhost"
    instance_name: str = "haitatsu"
    shutdown_timeout_seconds: int = attrs.field(default=10, validator=_nonneg)
    data_dir: str = "data"


@attrs.frozen
class SMTPConfig:
    inbound_addr: str = "127.0.0.1:2525"
    max_message_size_bytes: int = attrs.field(default=0, validator=_nonneg)
    max_inbound_recipients: int = attrs.field(default=0, validator=_nonneg)
    idle_timeout_seconds: int = attrs.field(default=300, validator=_nonneg)
    max_line_length: int = attrs.field(default=4000, validator=_nonneg)


@attrs.frozen
class IMAPConfig:
    addr: str = "127.0.0.1:1143"
    #: Our addition: IMAP over implicit TLS (port 993); served only when TLS is configured.
    tls_addr: str = ""
    max_connections_per_ip: int = attrs.field(default=30, validator=_nonneg)
    idle_timeout_seconds: int = attrs.field(default=1800, validator=_nonneg)


@attrs.frozen
class POP3Config:
    """Our addition. Off unless configured (the example config listens on 127.0.0.1:1110), so an
    existing configuration of the original opens no new port."""

    addr: str = ""
    #: Implicit TLS (port 995); served only when TLS is configured.
    tls_addr: str = ""
    #: RFC 1939 wants at least 10 minutes; 0 disables the timer.
    idle_timeout_seconds: int = attrs.field(default=600, validator=_nonneg)


@attrs.frozen
class SubmissionConfig:
    starttls_addr: str = ""
    tls_addr: str = ""


@attrs.frozen
class RelayConfig:
    """The smarthost every outbound job goes through (API.md 5.4, docs/queue.md)."""

    addr: str = ""
    username: str = ""
    password: str = ""
    #: Accepted for the original's sake (its PLAIN auth host); the TLS name checked is the host
    #: part of ``addr``.
    from_host: str = ""
    max_attempts: int = attrs.field(default=30, validator=_nonneg)
    max_retry_minutes: int = attrs.field(default=240, validator=_nonneg)
    #: Our additions. ``tls``: "opportunistic" (STARTTLS when offered, what the original's Go
    #: client does), "required" (no STARTTLS offered: temporary failure) or "off".
    tls: str = attrs.field(
        default="opportunistic",
        validator=attrs.validators.in_(["opportunistic", "required", "off"]),
    )
    #: Check the relay's certificate against the host name of ``addr`` (service-identity).
    verify_cert: bool = True
    #: PEM file of the CAs to trust for the relay; empty means the system's trust store.
    ca_file: str = ""
    #: How long the relay may stay silent before an attempt is given up (a temporary failure).
    timeout_seconds: int = attrs.field(default=300, validator=_positive)

    @property
    def host_port(self) -> tuple[str, int] | None:
        """``(host, port)`` of ``addr`` (port 25 when absent), or None when no relay is set."""
        addr = self.addr.strip()
        if not addr:
            return None
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", addr)
        if m is None:
            m = re.fullmatch(r"([^:\s\[\]]+)(?::(\d+))?", addr)
        if m is None or (m.group(2) and not 0 < int(m.group(2)) <= 65535):
            raise ConfigError(f"relay.addr: {self.addr!r} is not host:port")
        return m.group(1), int(m.group(2) or 25)


@attrs.frozen
class NotificationsConfig:
    """Mail haitatsu writes itself: the bounce (DSN) filed in a sender's INBOX."""

    #: Empty means ``postmaster@<server.public_hostname>``.
    from_address: str = ""
    render_url: str = ""
    render_secret: str = ""
    timeout_seconds: int = attrs.field(default=10, validator=_nonneg)
    max_response_bytes: int = attrs.field(default=65536, validator=_nonneg)


@attrs.frozen
class DatabaseConfig:
    driver: str = attrs.field(
        default="sqlite", validator=attrs.validators.in_(["sqlite", "postgres"])
    )
    dsn: str = ""
    max_connections: int = attrs.field(default=10, validator=_nonneg)


#: S3's smallest part of a multipart upload (other than the last one).
S3_MIN_PART_SIZE = 5 * 1024 * 1024


def _part_size(instance, attribute, value):
    if value < S3_MIN_PART_SIZE:
        raise ValueError(f"must be >= {S3_MIN_PART_SIZE} (5 MiB, S3's smallest multipart part)")


@attrs.frozen
class S3Config:
    """Object storage for blobs. ``endpoint`` is ``host[:port]`` as in the original (minio-go),
    with ``use_ssl`` choosing the scheme; a full ``http://`` or ``https://`` URL is accepted too
    and its scheme wins."""

    endpoint: str = ""
    bucket: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = ""
    use_ssl: bool = False
    #: Our additions. ``None``: path style unless the endpoint is AWS (``*.amazonaws.com``).
    path_style: bool | None = None
    #: Object names are ``<prefix>/blobs/ab/<sha256>`` (no prefix: ``blobs/ab/<sha256>``).
    prefix: str = ""
    #: Blobs larger than this go up as a multipart upload in parts of this size.
    multipart_threshold_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_part_size)
    request_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)

    @property
    def endpoint_url(self) -> str:
        """``scheme://host[:port]`` of the endpoint, without a trailing slash."""
        endpoint = self.endpoint.strip().rstrip("/")
        if "://" in endpoint:
            return endpoint
        return ("https://" if self.use_ssl else "http://") + endpoint

    @property
    def host(self) -> str:
        """``host[:port]`` of the endpoint."""
        return self.endpoint_url.split("://", 1)[1]

    @property
    def uses_path_style(self) -> bool:
        if self.path_style is not None:
            return self.path_style
        hostname = urllib.parse.urlsplit(self.endpoint_url).hostname or ""
        return not hostname.endswith(".amazonaws.com")

    @property
    def signing_region(self) -> str:
        return self.region or "us-east-1"

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when an endpoint is set but the block is
        unusable."""
        if not self.endpoint:
            return
        m = re.fullmatch(
            r"(?:(https?)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d+))?/?",
            self.endpoint.strip(),
        )
        if not m or (m.group(3) and int(m.group(3)) > 65535):
            raise ConfigError(
                f"s3.endpoint: {self.endpoint!r} is neither host[:port] nor http(s)://host[:port]"
            )
        for key in ("bucket", "access_key_id", "secret_access_key"):
            if not getattr(self, key):
                raise ConfigError(f"s3.{key}: required when s3.endpoint is set")
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", self.prefix.strip("/") or "x"):
            raise ConfigError(
                f"s3.prefix: {self.prefix!r} may only use letters, digits, '.', '_', '-' and '/'"
            )


@attrs.frozen
class StorageConfig:
    """Our addition: where the embedded default keeps blobs, how messages are split into blobs
    and how often unreferenced blobs are collected (docs/storage.md)."""

    blob_dir: str = ""
    #: Leaf MIME parts with a body at least this large are stored once, as blobs of their own;
    #: 0 stores every message as one blob.
    attachment_dedup_threshold_bytes: int = attrs.field(default=65536, validator=_nonneg)
    #: How often garbage collection runs; 0 turns it off.
    blob_gc_interval_seconds: int = attrs.field(default=3600, validator=_nonneg)
    #: How long an unreferenced blob is kept before garbage collection may remove it.
    blob_gc_grace_seconds: int = attrs.field(default=86400, validator=_nonneg)


@attrs.frozen
class TLSCertificateConfig:
    """One more certificate for ``tls.mode = "manual"``, served to clients that ask for one of
    its names (SNI)."""

    cert_file: str = ""
    key_file: str = ""


@attrs.frozen
class TLSConfig:
    mode: str = attrs.field(
        default="off",
        validator=attrs.validators.in_(["off", "disabled", "", "manual", "acme", "storage"]),
    )
    #: The default certificate (PEM, leaf first, then the chain) and its key.
    cert_file: str = ""
    key_file: str = ""
    #: Our addition: more certificates, chosen by the name the client asks for (docs/tls.md).
    certificates: tuple[TLSCertificateConfig, ...] = ()
    #: ACME (``mode = "acme"``, docs/tls.md): the account's contact address (required), the CA
    #: (a directory URL or a name from ``ACME_CAS``) and where account and certificates live.
    acme_email: str = ""
    acme_ca: str = ""
    acme_cache_path: str = "/var/lib/haitatsu/certmagic"
    #: Dedicated challenge listeners (0: none; HTTP-01 is then answered on ``server.api_addr``,
    #: TLS-ALPN-01 on the implicit-TLS listeners) and the interface they bind.
    acme_listen_host: str = ""
    acme_http_port: int = attrs.field(default=0, validator=_nonneg)
    acme_tls_alpn_port: int = attrs.field(default=0, validator=_nonneg)
    acme_disable_http_challenge: bool = False
    acme_disable_tls_alpn_challenge: bool = False
    #: Accepted for the original's sake; challenges are answered by the node that asked.
    acme_disable_distributed_solvers: bool = False
    #: Our additions: names certified besides ``server.public_hostname`` (one certificate
    #: each), a PEM CA bundle to verify the ACME server with (a private or test CA), when to
    #: renew and how often to check.
    acme_domains: tuple[str, ...] = ()
    acme_ca_file: str = ""
    acme_renew_before_days: int = attrs.field(default=30, validator=_nonneg)
    acme_check_interval_minutes: int = attrs.field(default=720, validator=_nonneg)

    @property
    def enabled(self) -> bool:
        return self.mode not in ("off", "disabled", "")

    def acme_endpoint(self, port: int, key: str) -> str:
        """The endpoint string of a dedicated challenge listener on ``acme_listen_host``."""
        host = self.acme_listen_host.strip()
        return _endpoint(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", key)


#: Names ``tls.acme_ca`` accepts besides a directory URL (the original's names).
ACME_CAS = {
    "": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-production": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


def acme_directory_url(tls: TLSConfig) -> str:
    """The ACME directory URL ``tls.acme_ca`` names; raises ``ConfigError`` when it names none."""
    value = tls.acme_ca.strip()
    if value.lower() in ACME_CAS:
        return ACME_CAS[value.lower()]
    if value.lower() == "zerossl":
        raise ConfigError(
            'tls.acme_ca: "zerossl" needs external account binding, which haitatsu does not '
            "support; use Let's Encrypt or another CA's directory URL"
        )
    if not value.startswith("https://"):
        raise ConfigError(
            f"tls.acme_ca: expected an https:// ACME directory URL or one of "
            f"{', '.join(repr(k) for k in ACME_CAS if k)}, got {value!r}"
        )
    return value


def acme_domains(config: Config) -> tuple[str, ...]:
    """The names ACME certifies: ``server.public_hostname`` first, then ``tls.acme_domains``."""
    names = [config.server.public_hostname, *config.tls.acme_domains]
    return tuple(dict.fromkeys(n.strip().lower().rstrip(".") for n in names))


_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}$")


def _validate_acme(config: Config) -> None:
    tls = config.tls
    if not tls.acme_email or "@" not in tls.acme_email:
        raise ConfigError('tls.acme_email: an email address is required when tls.mode is "acme"')
    acme_directory_url(tls)
    for i, name in enumerate(acme_domains(config)):
        if not _DNS_NAME.match(name) or name.replace(".", "").isdigit():
            key = "server.public_hostname" if i == 0 else "tls.acme_domains"
            raise ConfigError(
                f"{key}: {name!r} cannot be certified by ACME (a public DNS name is needed; "
                "wildcards need DNS-01, which is not supported)"
            )
    if tls.acme_disable_http_challenge and tls.acme_disable_tls_alpn_challenge:
        raise ConfigError(
            "tls.acme_disable_http_challenge, tls.acme_disable_tls_alpn_challenge: at least "
            "one challenge type must stay enabled"
        )


@attrs.frozen
class APIConfig:
    service_token: str = ""


@attrs.frozen
class LimitsConfig:
    max_message_size_bytes: int = attrs.field(default=52428800, validator=_nonneg)
    max_inbound_recipients: int = attrs.field(default=100, validator=_nonneg)
    max_submission_recipients: int = attrs.field(default=100, validator=_nonneg)
    max_connections_per_ip: int = attrs.field(default=20, validator=_nonneg)
    inbound_messages_per_minute_per_ip: int = attrs.field(default=120, validator=_nonneg)
    default_outbound_per_hour: int = attrs.field(default=0, validator=_nonneg)
    default_outbound_per_day: int = attrs.field(default=0, validator=_nonneg)
    default_outbound_recipients_per_message: int = attrs.field(default=0, validator=_nonneg)


@attrs.frozen
class WorkersConfig:
    enabled: bool = True
    concurrency: int = attrs.field(default=0, validator=_nonneg)


@attrs.frozen
class RetentionConfig:
    """Our addition: how long the hourly cleanup (API.md 5.7, docs/storage.md "Retention") keeps
    what it lets go, in days (at least 1; the defaults are API.md's periods). Hot: each hourly
    run reads the current values."""

    #: A message in Trash whose row has not changed for this long is soft-deleted.
    trash_days: int = attrs.field(default=30, validator=_positive)
    #: A message whose placements were all soft-deleted this long ago is purged, and so is a
    #: mailbox in status ``deleted`` this long (``store.purge_deleted_mailboxes``).
    deleted_days: int = attrs.field(default=30, validator=_positive)
    #: How long a UID that left a folder is remembered for QRESYNC (RFC 7162).
    vanished_days: int = attrs.field(default=30, validator=_positive)


@attrs.frozen
class ImportsConfig:
    """Our addition: where ``maildir`` and ``mbox`` import jobs may read (docs/api.md
    "Import jobs"). A source ``path`` must resolve inside ``root``; empty (the default) refuses
    every path source. Hot."""

    root: str = ""


@attrs.frozen
class LoggingConfig:
    level: str = attrs.field(
        default="info",
        validator=attrs.validators.in_(["debug", "info", "warn", "warning", "error"]),
    )
    format: str = attrs.field(default="text", validator=attrs.validators.in_(["text", "json"]))


@attrs.frozen
class MetricsConfig:
    enabled: bool = True


def _endpoint_map(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"expected a Mapping of event type to URL, got {type(value).__name__}")
    for event_type, url in value.items():
        if not isinstance(url, str):
            raise ValueError(f"{event_type}: expected a URL String, got {type(url).__name__}")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ValueError(f"{event_type}: {url!r} is not an http(s) URL")
    return dict(value)


@attrs.frozen
class WebhooksConfig:
    """Webhook delivery (API.md 3). Every key is hot: workers read it on each attempt."""

    default_timeout_seconds: int = attrs.field(default=10, validator=_nonneg)
    secret: str = ""
    #: event type -> URL (exact match).
    endpoints: dict = attrs.field(factory=dict, converter=_endpoint_map, hash=False)
    max_attempts: int = attrs.field(default=10, validator=_nonneg)

    @property
    def timeout(self) -> float:
        """0 means the default, 10 s."""
        return float(self.default_timeout_seconds or 10)

    @property
    def attempts(self) -> int:
        """0 means the default, 10."""
        return self.max_attempts or 10


def _nameservers(value) -> tuple:
    if value == {}:
        return ()  # `nameservers {}` in a config that does not amend the schema
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError("expected a Listing of host or host:port Strings")
    out = []
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"{entry!r} is not a host or host:port")
        out.append(entry.strip())
    return tuple(out)


@attrs.frozen
class DNSConfig:
    """Our addition: the resolver for DNS checks (``GET /dns/check``) and filters.
    ``nameservers`` lists ``host`` or ``host:port`` (``[v6]:port``); empty means the system's
    /etc/resolv.conf."""

    nameservers: tuple = attrs.field(default=(), converter=_nameservers)
    #: How long one lookup may take (a retry included) before it is a temporary failure.
    timeout_seconds: float = attrs.field(default=5.0, validator=_positive)
    #: Answers kept in the filters' cache (by TTL, at most an hour); 0 turns the cache off.
    cache_size: int = attrs.field(default=10000, validator=_nonneg)

    def servers(self) -> list[tuple[str, int]]:
        """``(host, port)`` pairs for twisted.names."""
        out = []
        for entry in self.nameservers:
            m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", entry) or re.fullmatch(
                r"([^:]+):(\d+)", entry
            )
            out.append((m.group(1), int(m.group(2))) if m else (entry.strip("[]"), 53))
        return out


#: Keys of a ``filters`` entry the chain uses itself; every other key is the filter's option.
FILTER_KEYS = ("name", "on_error", "timeout_seconds")
#: What a filter's ``on_error`` may say (docs/plugins.md).
FILTER_ERROR_POLICIES = ("tempfail", "continue", "reject", "quarantine")
_FILTER_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@attrs.frozen
class FilterSpec:
    """One entry of ``filters``: which filter, how the chain treats it, and its options."""

    name: str
    #: What a failure (exception or timeout) of the filter means.
    on_error: str = "tempfail"
    #: Longest the filter may take at one stage; 0 means the chain's default (30 s).
    timeout_seconds: float = 0.0
    options: dict = attrs.field(factory=dict, hash=False)


def _filter_specs(value) -> tuple:
    if isinstance(value, tuple) and all(isinstance(v, FilterSpec) for v in value):
        return value
    if value == {}:
        return ()  # `filters {}` in a config that does not amend the schema
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a Listing of filter objects, got {_kind(value)}")
    specs = []
    for i, entry in enumerate(value):
        if isinstance(entry, FilterSpec):
            specs.append(entry)
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"[{i}]: expected an object with a name, got {_kind(entry)}")
        name = entry.get("name")
        if not isinstance(name, str) or not _FILTER_NAME.match(name):
            raise ValueError(
                f"[{i}].name: expected a filter name (lower case letters, digits, _), got {name!r}"
            )
        on_error = entry.get("on_error", "tempfail")
        if on_error not in FILTER_ERROR_POLICIES:
            raise ValueError(
                f"[{i}] ({name}).on_error: must be one of {list(FILTER_ERROR_POLICIES)}, "
                f"got {on_error!r}"
            )
        timeout = entry.get("timeout_seconds", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"[{i}] ({name}).timeout_seconds: expected a Number >= 0")
        options = {k: v for k, v in entry.items() if k not in FILTER_KEYS}
        specs.append(FilterSpec(name, on_error, float(timeout), options))
    return tuple(specs)


#: The chain when the config says nothing: the sender rules of the REST API (API.md 1.12), the
#: spam score of API.md 2.1 (Junk per mailbox threshold, reject above the server's) and each
#: recipient's Sieve script (docs/sieve.md), so what users set over REST applies to mail.
DEFAULT_FILTERS = (FilterSpec("sender_rules"), FilterSpec("spam_score"), FilterSpec("sieve"))


@attrs.frozen
class PluginsConfig:
    """Our addition: where operators put filter plugins of their own (docs/plugins.md)."""

    #: A directory of plugin modules; empty means only the built-in filters. Hot.
    directory: str = ""


def _zones(value) -> tuple:
    if value == {}:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError("expected a Listing of zone names")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("every zone must be a non-empty String")
    return tuple(v.strip() for v in value)


@attrs.frozen
class SpamConfig:
    """The original's ``spam`` block (API.md 4): the thresholds and the DNSBL defaults that the
    ``dnsbl`` filter and Junk placement use."""

    #: Score from which a message goes to Junk (0 means 5).
    junk_threshold: float = attrs.field(default=5.0, validator=_nonneg)
    #: Score from which it is refused (0 means 10).
    reject_threshold: float = attrs.field(default=10.0, validator=_nonneg)
    #: DNSBL zones the ``dnsbl`` filter asks when its own ``zones`` option is not set.
    dnsbl_zones: tuple = attrs.field(default=(), converter=_zones)
    #: Score of a listing (0 means 4).
    dnsbl_score: float = attrs.field(default=4.0, validator=_nonneg)
    require_helo: bool = False


@attrs.frozen
class SieveConfig:
    """Our addition: limits on users' Sieve scripts (docs/sieve.md), checked when a script is
    saved over REST or ManageSieve. Hot."""

    #: Largest script accepted, in bytes.
    max_script_bytes: int = attrs.field(default=65536, validator=_positive)
    #: Scripts one mailbox may keep.
    max_scripts: int = attrs.field(default=20, validator=_positive)


@attrs.frozen
class ManageSieveConfig:
    """Our addition: the ManageSieve listener (RFC 5804, docs/sieve.md). Off unless ``addr`` is
    set; STARTTLS when TLS is configured. Restart-only."""

    addr: str = ""
    idle_timeout_seconds: int = attrs.field(default=1800, validator=_nonneg)


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    smtp: SMTPConfig = SMTPConfig()
    imap: IMAPConfig = IMAPConfig()
    pop3: POP3Config = POP3Config()
    submission: SubmissionConfig = SubmissionConfig()
    relay: RelayConfig = RelayConfig()
    database: DatabaseConfig = DatabaseConfig()
    s3: S3Config | None = None
    storage: StorageConfig = StorageConfig()
    tls: TLSConfig = TLSConfig()
    api: APIConfig = APIConfig()
    limits: LimitsConfig = LimitsConfig()
    workers: WorkersConfig = WorkersConfig()
    retention: RetentionConfig = RetentionConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    dns: DNSConfig = DNSConfig()
    spam: SpamConfig = SpamConfig()
    #: The filter chain, in order (docs/plugins.md); hot.
    filters: tuple = attrs.field(default=DEFAULT_FILTERS, converter=_filter_specs)
    plugins: PluginsConfig = PluginsConfig()
    imports: ImportsConfig = ImportsConfig()
    sieve: SieveConfig = SieveConfig()
    managesieve: ManageSieveConfig = ManageSieveConfig()

    # -- derived values -------------------------------------------------------------------

    @property
    def max_message_size(self) -> int:
        """The effective size limit: ``limits`` wins, ``smtp`` is the original's legacy fallback."""
        return self.limits.max_message_size_bytes or self.smtp.max_message_size_bytes or 52428800

    @property
    def max_inbound_recipients(self) -> int:
        return self.limits.max_inbound_recipients or self.smtp.max_inbound_recipients or 100

    @property
    def data_dir(self) -> str:
        """The directory for the embedded default's state (``server.data_dir``)."""
        return self.server.data_dir

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite database file, or ``None`` when the driver is not SQLite.

        For SQLite ``database.dsn`` is a file path; empty means ``<data_dir>/haitatsu.db``, so the
        embedded default needs no database settings at all.
        """
        if self.database.driver != "sqlite":
            return None
        return self.database.dsn or os.path.join(self.server.data_dir, "haitatsu.db")

    @property
    def blob_dir(self) -> str:
        """The blob directory: ``storage.blob_dir``, or ``<data_dir>/blobs`` when empty."""
        return self.storage.blob_dir or os.path.join(self.server.data_dir, "blobs")

    def resolve_paths(self, base_dir: str) -> Config:
        """Make every relative filesystem path absolute, relative to ``base_dir``.

        The loader passes the config file's directory, so a config means the same thing whatever
        the working directory of the process (twistd, systemd, tests) and on every reload.
        """

        def absolute(path: str) -> str:
            if not path:
                return path
            return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))

        dsn = self.database.dsn
        if self.database.driver == "sqlite" and dsn and dsn != ":memory:":
            if not dsn.startswith("file:"):
                dsn = absolute(dsn)
        return attrs.evolve(
            self,
            server=attrs.evolve(self.server, data_dir=absolute(self.server.data_dir)),
            database=attrs.evolve(self.database, dsn=dsn),
            storage=attrs.evolve(self.storage, blob_dir=absolute(self.storage.blob_dir)),
            plugins=attrs.evolve(self.plugins, directory=absolute(self.plugins.directory)),
            relay=attrs.evolve(self.relay, ca_file=absolute(self.relay.ca_file)),
            imports=attrs.evolve(self.imports, root=absolute(self.imports.root)),
            tls=attrs.evolve(
                self.tls,
                cert_file=absolute(self.tls.cert_file),
                key_file=absolute(self.tls.key_file),
                certificates=tuple(
                    attrs.evolve(c, cert_file=absolute(c.cert_file), key_file=absolute(c.key_file))
                    for c in self.tls.certificates
                ),
                acme_cache_path=absolute(self.tls.acme_cache_path),
                acme_ca_file=absolute(self.tls.acme_ca_file),
            ),
        )

    def endpoint(self, key: str) -> str:
        """The Twisted endpoint string for a listener key such as ``"smtp.inbound_addr"``."""
        block, name = key.split(".")
        return _endpoint(getattr(getattr(self, block), name), key)

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Any, base_dir: str | None = None) -> Config:
        """Validate evaluated config data and build a ``Config``; raise ``ConfigError``.

        With ``base_dir`` (the config file's directory), relative paths are resolved against it
        (see ``resolve_paths``).
        """
        if not isinstance(data, dict):
            raise ConfigError("the configuration must evaluate to an object")
        config = _build(cls, data, "")
        for key in LISTENER_KEYS:
            config.endpoint(key)  # raises ConfigError naming the key
        if config.database.driver == "postgres" and not config.database.dsn:
            raise ConfigError('database.dsn: required when database.driver is "postgres"')
        if config.s3 is not None:
            config.s3.validate()
        if config.webhooks.endpoints and not config.webhooks.secret:
            raise ConfigError("webhooks.secret: required when webhooks.endpoints is not empty")
        _ = config.relay.host_port  # raises ConfigError naming relay.addr
        if config.tls.mode == "manual" and not (config.tls.cert_file and config.tls.key_file):
            raise ConfigError('tls.cert_file, tls.key_file: required when tls.mode is "manual"')
        for i, extra in enumerate(config.tls.certificates):
            if not (extra.cert_file and extra.key_file):
                raise ConfigError(f"tls.certificates[{i}]: cert_file and key_file are required")
        if config.tls.mode == "acme":
            _validate_acme(config)
        if base_dir is not None:
            config = config.resolve_paths(base_dir)
        return config


#: Listener keys, each a ``host:port`` or an endpoint string.
LISTENER_KEYS = (
    "server.api_addr",
    "smtp.inbound_addr",
    "imap.addr",
    "imap.tls_addr",
    "pop3.addr",
    "pop3.tls_addr",
    "submission.starttls_addr",
    "submission.tls_addr",
    "managesieve.addr",
)

#: Keys whose change needs a restart; a reload that changes any of them is refused.
RESTART_KEYS = (
    "database",
    "s3",
    "storage",
    "server.api_addr",
    "server.public_hostname",
    "server.instance_name",
    "server.data_dir",
    "smtp.inbound_addr",
    "imap.addr",
    "imap.tls_addr",
    "pop3.addr",
    "pop3.tls_addr",
    "submission.starttls_addr",
    "submission.tls_addr",
    "managesieve.addr",
    # Turning TLS on or off changes which listeners exist and what they allow before TLS; the
    # certificate files (tls.cert_file, key_file, certificates) are re-read on every reload,
    # so renewed or moved certificates need no restart (docs/tls.md).
    "tls.mode",
    "tls.acme_email",
    "tls.acme_ca",
    "tls.acme_cache_path",
    "tls.acme_listen_host",
    "tls.acme_http_port",
    "tls.acme_tls_alpn_port",
    "tls.acme_disable_http_challenge",
    "tls.acme_disable_tls_alpn_challenge",
    "tls.acme_disable_distributed_solvers",
    "tls.acme_domains",
    "tls.acme_ca_file",
    "tls.acme_renew_before_days",
    "tls.acme_check_interval_minutes",
    "workers.enabled",
)


def restart_keys_changed(old: Config, new: Config) -> list[str]:
    """The restart-only keys whose values differ between two configurations."""
    changed = []
    for key in RESTART_KEYS:
        a, b = old, new
        for part in key.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            changed.append(key)
    return changed


def _build(cls, data: dict, prefix: str):
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        if field.name not in data:
            continue
        key = f"{prefix}{field.name}"
        value = data[field.name]
        kwargs[field.name] = _coerce(hints[field.name], value, key)
    try:
        return cls(**kwargs)
    except ValueError as e:
        # attrs validators raise ValueError naming the attribute; find which one.
        for field in attrs.fields(cls):
            if field.name in kwargs and field.converter is not None:
                try:
                    field.converter(kwargs[field.name])
                except ValueError as inner:
                    raise ConfigError(f"{prefix}{field.name}: {inner}") from None
            if field.name in kwargs and field.validator is not None:
                try:
                    field.validator(None, field, kwargs[field.name])
                except ValueError as inner:
                    raise ConfigError(f"{prefix}{field.name}: {_why(inner)}") from None
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def _why(error: ValueError) -> str:
    text = str(error)
    if "must be in" in text:
        # attrs' in_ validator: "'x' must be in [...] (got 'y')"
        m = re.search(r"must be in (\[.*?\]|\(.*?\)) \(got (.*)\)", text)
        if m:
            return f"must be one of {m.group(1)}, got {m.group(2)}"
    return text


def _coerce(hint, value, key):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if (
        origin in (typing.Union, getattr(__import__("types"), "UnionType", None))
        and type(None) in args
    ):
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a Listing, got {_kind(value)}")
        return tuple(_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if attrs.has(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a block, got {_kind(value)}")
        return _build(hint, value, key + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a Boolean, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an Int, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a Float, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a String, got {_kind(value)}")
        return value
    return value


def _kind(value) -> str:
    return {
        bool: "a Boolean",
        int: "an Int",
        float: "a Float",
        str: "a String",
        list: "a Listing",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__) + f" ({value!r})"[:60]
