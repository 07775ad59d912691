"""The queue workers of one model service process: one ``Worker`` per stream partition
of its model version (``AXON_PARTITIONS``; one by default), sharing the process's ONNX
Runtime session, Redis client, metrics and tracing.

Each partition's worker is a full worker (its own read loop, claims, outbox and
heartbeat under its own consumer name), so everything said of one worker holds per
partition; the group starts, stops and reports them together.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.contract.protocol import RedisClient
from services.contract.tracing import Tracing
from services.runtime.metrics import WorkerMetrics
from services.runtime.priority import lower_priority
from services.runtime.session import ModelSession
from services.runtime.settings import WorkerSettings
from services.runtime.worker import Worker


class WorkerGroup:
    """``settings.partitions`` workers of one model version (partition 0 first)."""

    def __init__(
        self,
        redis: RedisClient,
        session: ModelSession,
        settings: WorkerSettings,
        *,
        metrics: WorkerMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._nice = settings.nice
        self.workers = [
            Worker(redis, session, settings, metrics=metrics, partition=p, tracing=tracing)
            for p in range(settings.partitions)
        ]

    async def run(self) -> None:
        """Run every worker until each has stopped (``stop``) and drained; first lower
        the process's CPU priority to ``settings.nice`` when that is set."""
        if self._nice:
            lower_priority(self._nice)
        await asyncio.gather(*(worker.run() for worker in self.workers))

    def stop(self) -> None:
        """Ask every worker for a graceful stop (``Worker.stop``)."""
        for worker in self.workers:
            worker.stop()

    @property
    def ready(self) -> bool:
        """True while every partition's worker is registered and reading."""
        return all(worker.ready for worker in self.workers)

    @property
    def alive(self) -> bool:
        """False once any worker's heartbeat loop ended outside a stop (``Worker.alive``)."""
        return all(worker.alive for worker in self.workers)

    def stats(self) -> dict[str, Any]:
        """The workers' counters summed (``WorkerStats.as_dict`` shape; the latest
        ``last_inference_ms``)."""
        total: dict[str, Any] = {}
        for worker in self.workers:
            _add(total, worker.stats.as_dict())
        return total


def _add(total: dict[str, Any], stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        elif key == "last_inference_ms":
            total[key] = max(total.get(key, 0), value)
        else:
            total[key] = total.get(key, 0) + value
