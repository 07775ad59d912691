"""Every ``axon_*`` worker metric, defined once (names and labels: docs/metrics.md).

Metrics are built through a *backend* with prometheus_client's constructor signature:
inside a BentoML service pass ``bentoml.metrics`` (so they appear on the service's
``/metrics``); elsewhere pass ``prometheus_backend(registry)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

import prometheus_client

MODEL_LABELS = ("model", "version")

BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

QUEUE_WAIT_BUCKETS = (*DURATION_BUCKETS, 5.0, 10.0, 30.0)


class MetricsBackend(Protocol):
    """What ``WorkerMetrics.create`` needs: prometheus_client-style constructors."""

    Counter: Any
    Gauge: Any
    Histogram: Any


class _PrometheusBackend:
    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.Counter = functools.partial(prometheus_client.Counter, registry=registry)
        self.Gauge = functools.partial(prometheus_client.Gauge, registry=registry)
        self.Histogram = functools.partial(prometheus_client.Histogram, registry=registry)


def prometheus_backend(registry: prometheus_client.CollectorRegistry) -> MetricsBackend:
    """A backend registering into ``registry`` (a fresh one per worker in tests)."""
    return _PrometheusBackend(registry)


@dataclass(frozen=True)
class WorkerMetrics:
    """The worker's Prometheus metrics; each takes ``model`` and ``version`` labels
    (plus ``provider`` for inference duration, ``code`` for errors)."""

    batch_rows: Any
    inference_duration: Any
    backlog: Any
    redeliveries: Any
    dead_letters: Any
    expired: Any
    replies: Any
    gpu_memory_used: Any
    queue_wait: Any

    @classmethod
    def create(cls, backend: MetricsBackend) -> WorkerMetrics:
        return cls(
            batch_rows=backend.Histogram(
                name="axon_batch_rows",
                documentation="Rows per ONNX Runtime run",
                labelnames=MODEL_LABELS,
                buckets=BATCH_ROWS_BUCKETS,
            ),
            inference_duration=backend.Histogram(
                name="axon_inference_duration_seconds",
                documentation="Duration of one ONNX Runtime run",
                labelnames=(*MODEL_LABELS, "provider"),
                buckets=DURATION_BUCKETS,
            ),
            backlog=backend.Gauge(
                name="axon_backlog",
                documentation="Entries in the model version's request stream (unread + unacked)",
                labelnames=MODEL_LABELS,
            ),
            redeliveries=backend.Counter(
                name="axon_redeliveries_total",
                documentation="Entries claimed from a worker that did not acknowledge them",
                labelnames=MODEL_LABELS,
            ),
            dead_letters=backend.Counter(
                name="axon_dead_letters_total",
                documentation="Entries moved to the dead-letter stream",
                labelnames=MODEL_LABELS,
            ),
            expired=backend.Counter(
                name="axon_expired_total",
                documentation="Entries answered with a deadline error without being computed",
                labelnames=MODEL_LABELS,
            ),
            replies=backend.Counter(
                name="axon_worker_replies_total",
                documentation="Replies sent by the worker, by outcome code (ok or error code)",
                labelnames=(*MODEL_LABELS, "code"),
            ),
            gpu_memory_used=backend.Gauge(
                name="axon_gpu_memory_used_bytes",
                documentation="GPU memory in use on the worker's device (GPU workers only)",
                labelnames=(*MODEL_LABELS, "device"),
            ),
            queue_wait=backend.Histogram(
                name="axon_worker_queue_wait_seconds",
                documentation="Time from a request's enqueue (Redis clock) to its batch's start",
                labelnames=MODEL_LABELS,
                buckets=QUEUE_WAIT_BUCKETS,
            ),
        )
