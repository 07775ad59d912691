"""One recorder for what a worker counts: each event updates the heartbeat's
``WorkerStats`` (``stats.py``) and, when the worker has them, its Prometheus
``WorkerMetrics`` (``metrics.py``; ``None`` is handled here, once).

One method per event; ages and waits are passed in (nanoseconds, computed by the caller
from its own clock), so the recorder reads no clock and does no I/O. A metric child is
looked up by its labels on first use and kept (the first use is when its series appears,
as with calling ``labels`` each time).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from services.runtime.metrics import WorkerMetrics
from services.runtime.stats import WorkerStats


class _Ignored:
    """The metric child used when there are no metrics: every update does nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_IGNORED = _Ignored()


def observe_all(child: Any, values: Sequence[float]) -> None:
    """``child.observe(v)`` for each of ``values``, a prometheus_client histogram child
    updated once per bucket touched and once for the sum (each update of a
    multiprocess-mode value is a write to its shared file, checked against the pid;
    ``docs/decisions.md``, "Worker hot path"). Anything else is observed value by value."""
    if child is _IGNORED or not values:
        return
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            child.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        index = bisect_left(bounds, value)  # the first bound >= value, as ``observe``
        counts[index] = counts.get(index, 0) + 1
    total.inc(sum(values))
    for index, count in counts.items():
        buckets[index].inc(count)


class Recorder:
    """Records the events of one worker (``model``, ``version``, run on ``provider``)."""

    def __init__(
        self,
        stats: WorkerStats,
        metrics: WorkerMetrics | None,
        *,
        model: str,
        version: int,
        provider: str,
    ) -> None:
        self.stats = stats
        self._metrics = metrics
        self._labels = (model, str(version))
        self._provider = provider
        self._children: dict[tuple[str, ...], Any] = {}

    @property
    def samples_gauges(self) -> bool:
        """Whether ``backlog`` and ``gpu_memory`` go anywhere (worth sampling them)."""
        return self._metrics is not None

    # ---------------------------------------------------------------- entries

    def redelivered(self) -> None:
        """An entry was claimed from a worker that did not acknowledge it."""
        self.stats.redeliveries += 1
        self._child("redeliveries").inc()

    def dead_lettered(self) -> None:
        """An entry was moved to the dead-letter stream."""
        self.stats.dead_letters += 1
        self._child("dead_letters").inc()

    def expired(self) -> None:
        """An entry was answered ``deadline_exceeded`` without its result."""
        self.stats.expired += 1
        self._child("expired").inc()

    def queued(self, waits_ns: Sequence[int]) -> None:
        """A batch started; its requests had waited ``waits_ns`` since they were enqueued
        (one histogram observation each, the histogram written once per bucket)."""
        add = self.stats.queue.add
        for wait_ns in waits_ns:
            add(wait_ns)
        observe_all(self._child("queue_wait"), [wait_ns / 1e9 for wait_ns in waits_ns])

    # ---------------------------------------------------------------- replies

    def failed(self, code: str, age_ns: int) -> None:
        """A request was answered with error ``code``, ``age_ns`` after it was enqueued."""
        self.stats.fail.add(age_ns)
        self._child("replies", str(code)).inc()

    def succeeded(self, rows: int, ages_ns: Sequence[int]) -> None:
        """Requests of ``rows`` rows in all were answered with their results, each
        ``ages_ns[i]`` after it was enqueued (the counter written once per call)."""
        self.stats.inference_count += rows
        add = self.stats.success.add
        for age_ns in ages_ns:
            add(age_ns)
        if ages_ns:
            self._child("replies", "ok").inc(len(ages_ns))

    # ---------------------------------------------------------------- runs

    def ran(self, rows: int, seconds: float) -> None:
        """One ONNX Runtime run of ``rows`` rows took ``seconds``."""
        self.stats.execution_count += 1
        self.stats.compute_infer.add(int(seconds * 1e9))
        self._child("batch_rows").observe(rows)
        self._child("inference_duration", self._provider).observe(seconds)

    def batch_done(self, now_ms: float) -> None:
        """A batch's runs ended at ``now_ms`` (unix ms)."""
        self.stats.last_inference_ms = int(now_ms)

    # ---------------------------------------------------------------- gauges

    def backlog(self, entries: int) -> None:
        """The model version's stream holds ``entries`` (unread + unacknowledged)."""
        self._child("backlog").set(entries)

    def gpu_memory(self, used_bytes: int) -> None:
        """``used_bytes`` of GPU memory are in use on the worker's device (device 0)."""
        self._child("gpu_memory_used", "0").set(used_bytes)

    def _child(self, metric: str, *labels: str) -> Any:
        """The child of ``metric`` (a ``WorkerMetrics`` field) for this worker's labels
        plus ``labels``; ``_IGNORED`` without metrics."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            if self._metrics is None:
                child = _IGNORED
            else:
                child = getattr(self._metrics, metric).labels(*self._labels, *labels)
            self._children[key] = child
        return child
