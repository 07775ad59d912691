"""Every Prometheus metric of the gateway, defined once with fixed labels (docs/metrics.md).

Metrics live in the app's own ``CollectorRegistry`` so that several apps (tests) in one
process never collide. ``model`` is only ever a model the gateway knows (else ``""``),
so a client cannot blow up label cardinality with made-up names.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    queue_wait: Histogram
    inflight: Gauge
    rejected: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "axon_requests_total",
                "HTTP requests answered, by model, version, endpoint and status code",
                ["model", "version", "endpoint", "code"],
                registry=registry,
            ),
            request_duration=Histogram(
                "axon_request_duration_seconds",
                "Time from request arrival to response, by model and endpoint",
                ["model", "endpoint"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            queue_wait=Histogram(
                "axon_queue_wait_seconds",
                "Time from XADD to the worker's reply arriving at this gateway",
                ["model"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            inflight=Gauge(
                "axon_inflight_requests",
                "Requests of this gateway process waiting for a worker's reply",
                ["model"],
                registry=registry,
            ),
            rejected=Counter(
                "axon_rejected_total",
                "Requests refused before queueing or given up, by reason",
                ["model", "reason"],
                registry=registry,
            ),
        )


REJECT_REASONS = {
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    429: "backlog",
    503: "unavailable",
    504: "deadline",
}
"""``reason`` label of ``axon_rejected_total`` per status code."""
