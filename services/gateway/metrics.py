"""Every Prometheus metric of the gateway, defined once with fixed labels (docs/metrics.md).

Metrics live in the app's own ``CollectorRegistry`` so that several apps (tests) in one
process never collide. ``model`` is only ever a model the gateway knows (else ``""``),
so a client cannot blow up label cardinality with made-up names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
from starlette.responses import Response

from services.contract.tracing import Exemplar

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

DIFFERENCE_BUCKETS = (
    0.0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    queue_wait: Histogram
    inflight: Gauge
    rejected: Counter
    routed: Counter
    jobs: Counter
    job_polls: Counter
    shadow_requests: Counter
    shadow_rows: Counter
    shadow_difference: Histogram
    shadow_latency: Histogram
    shadow_inflight: Gauge
    captured: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "axon_requests_total",
                "Requests answered, by model, version, endpoint, status code and protocol "
                "(http, grpc: code is the HTTP status a gRPC status maps from)",
                ["model", "version", "endpoint", "code", "protocol"],
                registry=registry,
            ),
            request_duration=Histogram(
                "axon_request_duration_seconds",
                "Time from request arrival to response, by model, endpoint and protocol",
                ["model", "endpoint", "protocol"],
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
            routed=Counter(
                "axon_routed_total",
                "Unversioned requests a routing rule sent to a version, by model, version "
                "and reason (weights, sticky, no_ready_version: the default was used)",
                ["model", "version", "reason"],
                registry=registry,
            ),
            jobs=Counter(
                "axon_jobs_total",
                "Async jobs (Prefer: respond-async) accepted (202), by model and status "
                "(submitted)",
                ["model", "status"],
                registry=registry,
            ),
            job_polls=Counter(
                "axon_job_polls_total",
                "GET /v1/jobs/{id} answers by the job's status (pending, succeeded, failed)",
                ["status"],
                registry=registry,
            ),
            shadow_requests=Counter(
                "axon_shadow_requests_total",
                "Requests sampled for a shadow copy, by model, shadow version and outcome "
                "(compared, shadow_error, timeout, primary_failed, incomparable, dropped, "
                "refused, unavailable)",
                ["model", "version", "outcome"],
                registry=registry,
            ),
            shadow_rows=Counter(
                "axon_shadow_rows_total",
                "Rows of compared classify requests, by model, shadow version and whether "
                "the shadow's top-1 label matched the primary's (agree, disagree)",
                ["model", "version", "top1"],
                registry=registry,
            ),
            shadow_difference=Histogram(
                "axon_shadow_difference",
                "Per compared request: classify, the share of rows whose top-1 label "
                "differs; forecast, the mean absolute difference; generate, the mean "
                "absolute pixel difference (the model's value range)",
                ["model", "version"],
                buckets=DIFFERENCE_BUCKETS,
                registry=registry,
            ),
            shadow_latency=Histogram(
                "axon_shadow_latency_seconds",
                "Compared requests: time from the copy's start to the primary's reply "
                "(role primary) and to the shadow's reply read back (role shadow)",
                ["model", "version", "role"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            shadow_inflight=Gauge(
                "axon_shadow_inflight",
                "Shadow copies this gateway process has in flight (AXON_SHADOW_MAX_INFLIGHT)",
                registry=registry,
            ),
            captured=Counter(
                "axon_captured_total",
                "Requests sampled for capture (AXON_CAPTURE_FRACTION), by model and outcome "
                "(stored, dropped, too_large, failed)",
                ["model", "outcome"],
                registry=registry,
            ),
        )


REJECT_REASONS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "backlog",
    503: "unavailable",
    504: "deadline",
}
"""``reason`` label of ``axon_rejected_total`` per status code."""


@dataclass
class RequestRecorder:
    """Counts one answered request in ``axon_requests_total``,
    ``axon_request_duration_seconds`` and, for a refusal, ``axon_rejected_total``: the
    one place both protocols (the HTTP middleware, the gRPC service) record a request.
    Labelled children are looked up once per label set (``labels()`` takes a lock and
    builds a tuple each call); label values are bounded (known models only)."""

    metrics: GatewayMetrics
    _counters: dict[tuple[str, str, str, int, str], Counter] = field(default_factory=dict)
    _durations: dict[tuple[str, str, str], Histogram] = field(default_factory=dict)

    def observe(
        self,
        protocol: str,
        model: str,
        version: str,
        endpoint: str,
        status: int,
        seconds: float,
        exemplar: Exemplar | None = None,
    ) -> None:
        """``status`` is the HTTP status (for gRPC, the one its code maps from);
        ``exemplar``: the request's trace (when traced and sampled), kept with the
        duration's bucket."""
        key = (model, version, endpoint, status, protocol)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(*key)
        counter.inc()
        duration = self._durations.get((model, endpoint, protocol))
        if duration is None:
            duration = self.metrics.request_duration.labels(model, endpoint, protocol)
            self._durations[(model, endpoint, protocol)] = duration
        duration.observe(seconds, exemplar)
        if status in REJECT_REASONS:
            self.metrics.rejected.labels(model, REJECT_REASONS[status]).inc()


def metrics_response(registry: CollectorRegistry, accept: str) -> Response:
    """``/metrics``: OpenMetrics (with exemplars: the trace ids of sampled requests) when
    the scraper asks for it in ``accept`` (Prometheus does), else the classic text
    format."""
    if "application/openmetrics-text" in accept:
        return Response(
            openmetrics.generate_latest(registry),  # type: ignore[no-untyped-call]
            media_type=openmetrics.CONTENT_TYPE_LATEST,
        )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
