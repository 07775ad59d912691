"""``GET /v1/fleet``: one JSON snapshot of everything the console's fleet view shows,
built from what the gateway already has — its registry (the workers' heartbeats: their
provider, pid, host, start time and cumulative counters), one round trip to the queue
(each version's backlog and dead-letter count: ``Transport.queue_counts``) and this
gateway's own request metrics (``axon_requests_total``, the latency histogram).

Contract of the answer (``snapshot``)::

    {"gateway": {"instance", "reachable", "ready", "at_ms"},
     "models": [{"name", "task",
                 "gateway": {"requests", "errors", "latency_buckets": [[le_s, count]…]},
                 "shadow": null | {"version", "fraction", "ready", "stats"},
                 "versions": [{"version", "ready", "backlog", "dead_letters",
                               "counters": {"requests", "errors", "rows", "runs",
                                            "expired", "redeliveries", "dead_letters",
                                            "queue_ns", "success_ns"},
                               "workers": [{"instance", "provider", "pid", "host",
                                            "uptime_s", "max_batch_rows", "requests",
                                            "rows", "runs"}]}]}]}

Everything is cumulative (counters since each worker, or this gateway, started): the
page turns two snapshots into rates (requests/s, rows per run, p50/p99 over its window).
``counters`` are the workers' heartbeat counters summed over the version's live
workers (the whole fleet, whichever gateway answers); ``gateway`` counts only what
this gateway process answered on the inference endpoints (``INFERENCE_ENDPOINTS``), so
a page behind a load balancer resets its latency window when ``instance`` changes.
``backlog``/``dead_letters`` are null when the queue could not be read (the rest is
still answered). ``shadow`` is the routing admin API's (``routing_admin.shadow_view``:
the rule's shadow version and this gateway's figures of it). Uptime is the worker's
last heartbeat minus its start, both on Redis' clock (no two hosts' clocks are
compared).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from services.contract.protocol import WorkerInfo
from services.contract.queue_view import QueueCounts
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import ModelVersion
from services.gateway.responses import JSON
from services.gateway.routing import DirectRoute
from services.gateway.routing_admin import shadow_view
from services.gateway.state import gateway, tag
from services.gateway.transport import TransportDown, TransportError

INFERENCE_ENDPOINTS: Final = frozenset({"infer", "classify", "forecast", "generate"})
"""``endpoint`` labels whose requests the gateway figures count."""


def worker_view(info: WorkerInfo) -> dict[str, Any]:
    """One worker as the fleet view shows it."""
    stats = info.stats
    return {
        "instance": info.instance,
        "provider": info.provider,
        "pid": info.pid,
        "host": info.host,
        "uptime_s": max(info.updated_at_ms - info.started_at_ms, 0) / 1000,
        "max_batch_rows": info.max_batch_rows,
        "requests": _count(stats, "success") + _count(stats, "fail"),
        "rows": _int(stats.get("inference_count")),
        "runs": _int(stats.get("execution_count")),
    }


def version_counters(workers: Iterable[WorkerInfo]) -> dict[str, int]:
    """The heartbeat counters of ``workers`` summed (see the module docstring)."""
    total = dict.fromkeys(
        ("requests", "errors", "rows", "runs", "expired", "redeliveries", "dead_letters",
         "queue_ns", "success_ns"), 0,
    )  # fmt: skip
    for info in workers:
        stats = info.stats
        total["requests"] += _count(stats, "success") + _count(stats, "fail")
        total["errors"] += _count(stats, "fail")
        total["rows"] += _int(stats.get("inference_count"))
        total["runs"] += _int(stats.get("execution_count"))
        total["queue_ns"] += _ns(stats, "queue")
        total["success_ns"] += _ns(stats, "success")
        for key in ("expired", "redeliveries", "dead_letters"):
            total[key] += _int(stats.get(key))
    return total


def gateway_figures(metrics: GatewayMetrics) -> dict[str, dict[str, Any]]:
    """By model: this gateway's answered inference requests, those with a status >= 400,
    and the latency histogram's cumulative buckets ``[[le_s, count], …]`` (``+Inf``
    last, as ``null``), summed over the inference endpoints and both protocols."""
    figures: dict[str, dict[str, Any]] = {}

    def of(model: str) -> dict[str, Any]:
        return figures.setdefault(model, {"requests": 0, "errors": 0, "buckets": {}})

    for metric in metrics.requests.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("endpoint") in INFERENCE_ENDPOINTS:
                entry = of(labels["model"])
                entry["requests"] += int(sample.value)
                if int(labels.get("code", "0")) >= 400:
                    entry["errors"] += int(sample.value)
    for metric in metrics.request_duration.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("endpoint") in INFERENCE_ENDPOINTS:
                buckets = of(labels["model"])["buckets"]
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0) + int(sample.value)
    return {
        model: {
            "requests": entry["requests"],
            "errors": entry["errors"],
            "latency_buckets": [
                [le if le != float("inf") else None, count]
                for le, count in sorted(entry["buckets"].items())
            ],
        }
        for model, entry in figures.items()
    }


def snapshot(
    models: Mapping[str, Sequence[ModelVersion]],
    counts: Mapping[tuple[str, int], QueueCounts] | None,
    figures: Mapping[str, Mapping[str, Any]],
    *,
    instance: str,
    reachable: bool,
    ready: bool,
    at_ms: int,
    shadows: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The ``GET /v1/fleet`` answer (module docstring) from the registry's ``models``, the
    queue ``counts`` by (model, version) (None: not read), ``gateway_figures`` and each
    model's ``shadow`` view (absent: null)."""
    empty = {"requests": 0, "errors": 0, "latency_buckets": []}
    out = []
    for name, versions in sorted(models.items()):
        rows = []
        for mv in versions:
            count = counts.get((name, mv.version)) if counts is not None else None
            rows.append(
                {
                    "version": mv.version,
                    "ready": mv.ready and reachable,
                    "backlog": count.backlog if count is not None else None,
                    "dead_letters": count.dead_letters if count is not None else None,
                    "counters": version_counters(mv.workers),
                    "workers": [worker_view(info) for info in mv.workers],
                }
            )
        out.append(
            {
                "name": name,
                "task": versions[-1].metadata.task,
                "gateway": dict(figures.get(name, empty)),
                "shadow": (shadows or {}).get(name),
                "versions": rows,
            }
        )
    return {
        "gateway": {"instance": instance, "reachable": reachable, "ready": ready, "at_ms": at_ms},
        "models": out,
    }


async def fleet(request: Request) -> Response:
    """``GET /v1/fleet`` (the module docstring)."""
    tag(request, "fleet")
    state = gateway(request)
    models = state.registry.models()
    served = [mv for versions in models.values() for mv in versions]
    keys = [(mv.name, mv.version) for mv in served]
    partitions = {(mv.name, mv.version): mv.partitions for mv in served}
    counts: dict[tuple[str, int], QueueCounts] | None
    try:
        found = await state.transport.queue_counts(keys, partitions)
        counts = dict(zip(keys, found, strict=True))
    except (TransportDown, TransportError):
        counts = None
    return JSON(
        snapshot(
            models,
            counts,
            gateway_figures(state.metrics),
            instance=state.settings.instance,
            reachable=state.registry.reachable,
            ready=state.ready,
            at_ms=int(time.time() * 1000),
            shadows={
                name: shadow_view(
                    name,
                    state.registry.rule(name),
                    {mv.version for mv in versions if mv.ready},
                    state.shadows,
                )
                for name, versions in models.items()
            },
        )
    )


def _count(stats: Mapping[str, Any], key: str) -> int:
    value = stats.get(key)
    return _int(value.get("count")) if isinstance(value, Mapping) else 0


def _ns(stats: Mapping[str, Any], key: str) -> int:
    value = stats.get(key)
    return _int(value.get("ns")) if isinstance(value, Mapping) else 0


def _int(value: Any) -> int:
    """A heartbeat counter as an int (0 for anything that is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


routes = [DirectRoute("/v1/fleet", fleet, methods=["GET"])]
