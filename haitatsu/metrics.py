"""Prometheus metrics with the original's names (API.md 5.1), served at ``/metrics``.

``Metrics`` owns a registry of its own (not prometheus-client's process-wide default), so a test
can build one and read exactly its counters. The server uses one instance, ``METRICS``: the
protocol code increments it where the events happen (a connection accepted, a message stored),
which would otherwise mean threading it through every factory and session for a counter. The
process and platform collectors of prometheus-client stand in for Go's.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# Go's client has no ``*_created`` series; a scraper configured for the original sees the same.
disable_created_metrics()

__all__ = ["CONTENT_TYPE_LATEST", "METRICS", "Metrics"]


class Metrics:
    """One set of the original's metrics on a registry of its own."""

    def __init__(self, process_collectors: bool = True):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.api_requests = Counter(
            "api_requests", "REST API requests answered", ["method", "status"], registry=registry
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Webhook events and outbound jobs waiting (sampled when /metrics is read)",
            registry=registry,
        )
        self.worker_jobs = Counter(
            "worker_jobs", "Jobs finished by workers", ["type", "status"], registry=registry
        )
        self.smtp_connections = Counter(
            "smtp_connections", "Inbound SMTP connections accepted", registry=registry
        )
        self.messages_received = Counter(
            "messages_received", "Inbound messages accepted (250 after DATA)", registry=registry
        )
        self.messages_sent = Counter(
            "messages_sent", "Messages submitted for outbound delivery", registry=registry
        )
        self.messages_delivered = Counter(
            "messages_delivered", "Outbound messages delivered to the relay", registry=registry
        )
        self.messages_bounced = Counter(
            "messages_bounced", "Outbound messages failed permanently", registry=registry
        )
        self.mailbox_over_quota = Counter(
            "mailbox_over_quota", "Deliveries refused because a quota was full", registry=registry
        )
        self.webhook_failures = Counter(
            "webhook_failures", "Webhook delivery attempts that failed", registry=registry
        )
        self.imap_sessions = Gauge("imap_sessions", "Open IMAP connections", registry=registry)
        # Our additions: the filter chain (docs/plugins.md).
        self.filter_verdicts = Counter(
            "filter_verdicts",
            "Verdicts of filters other than a plain continue",
            ["filter", "stage", "action"],
            registry=registry,
        )
        self.filter_errors = Counter(
            "filter_errors",
            "Filters that raised or timed out (handled by their on_error policy)",
            ["filter", "stage", "kind"],
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict | None = None) -> float:
        """The current value of a sample (``0`` if it has none yet): for tests and logs."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


#: The server's metrics.
METRICS = Metrics()
