"""The Grafana dashboard: valid JSON, and its queries use only the axon_* metrics and
labels the code defines, and show every one of them."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import Counter

from services.gateway.metrics import GatewayMetrics
from services.runtime.metrics import WorkerMetrics
from tests.k8s.manifests import K8S

DASHBOARD = K8S / "components" / "monitoring" / "axon-dashboard.json"
TARGET_LABELS = {"le", "pod", "namespace", "instance", "job", "container"}
"""Labels Prometheus adds to every scraped series (and ``le`` of histogram buckets)."""


class _Recorder:
    """A metrics backend that records what WorkerMetrics.create declares."""

    def __init__(self) -> None:
        self.labels: dict[str, set[str]] = {}

    def _declare(self, **kwargs: Any) -> None:
        self.labels[kwargs["name"]] = set(kwargs.get("labelnames", ()))

    Histogram = Gauge = Counter = _declare


def code_metrics() -> dict[str, set[str]]:
    """Metric name → label names, for every axon_* metric the gateway and workers define."""
    recorder = _Recorder()
    WorkerMetrics.create(recorder)
    found = dict(recorder.labels)
    gateway = GatewayMetrics.create()
    for metric in vars(gateway).values():
        if hasattr(metric, "_labelnames"):
            suffix = "_total" if isinstance(metric, Counter) else ""
            found[metric._name + suffix] = set(metric._labelnames)
    return found


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _metric(series: str, known: dict[str, set[str]]) -> str | None:
    if series in known:
        return series
    base = re.sub(r"_(bucket|sum|count)$", "", series)
    return base if base in known else None


def test_code_metrics_are_found() -> None:
    metrics = code_metrics()
    assert metrics["axon_requests_total"] == {"model", "version", "endpoint", "code", "protocol"}
    assert {"axon_batch_rows", "axon_backlog", "axon_gpu_memory_used_bytes"} <= set(metrics)


def test_dashboard_uses_only_defined_metrics_and_labels() -> None:
    known = code_metrics()
    for expr in expressions():
        used = [_metric(s, known) for s in re.findall(r"\baxon_\w+", expr)]
        assert used and None not in used, f"unknown metric in: {expr}"
        allowed = set().union(*(known[m] for m in used if m)) | TARGET_LABELS
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            assert labels <= allowed, f"{labels - allowed} not labels of {used}: {expr}"
        for label in re.findall(r"(\w+)\s*[=!]~?\s*\"", expr):
            assert label in allowed, f"{label} not a label of {used}: {expr}"


def test_every_metric_is_on_the_dashboard() -> None:
    known = code_metrics()
    shown = {_metric(s, known) for e in expressions() for s in re.findall(r"\baxon_\w+", e)}
    missing = set(known) - shown
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_latency_panels_show_exemplars() -> None:
    """Every latency quantile of a histogram that carries exemplars (trace ids) shows
    them, so a slow bucket links to a trace (docs/observability.md)."""
    dash = json.loads(DASHBOARD.read_text())
    with_exemplars = ("axon_request_duration_seconds", "axon_queue_wait_seconds")
    targets = [t for p in dash["panels"] for t in p["targets"]]
    chosen = [t for t in targets if any(f"{m}_bucket" in t["expr"] for m in with_exemplars)]
    chosen = [t for t in chosen if "axon_worker_" not in t["expr"]]
    assert len(chosen) >= 5 and all(t.get("exemplar") is True for t in chosen)
