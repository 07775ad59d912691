"""The recorder: each event updates the heartbeat's stats and a real Prometheus registry;
without metrics it updates the stats alone."""

from __future__ import annotations

import prometheus_client
import pytest

from services.contract.errors import ErrorCode
from services.runtime.metrics import QUEUE_WAIT_BUCKETS, WorkerMetrics, prometheus_backend
from services.runtime.recorder import Recorder
from services.runtime.stats import Duration, WorkerStats

LABELS = {"model": "m", "version": "3"}


def play(recorder: Recorder) -> None:
    """One of every event."""
    recorder.redelivered()
    recorder.redelivered()
    recorder.dead_lettered()
    recorder.expired()
    recorder.queued([1_500])
    recorder.queued([])
    recorder.failed(ErrorCode.INVALID_INPUT, 2_000)
    recorder.failed(ErrorCode.INVALID_INPUT, 1_000)
    recorder.failed(ErrorCode.DEADLINE_EXCEEDED, -5)  # a clock step back counts as 0 ns
    recorder.succeeded(4, [7_000])
    recorder.succeeded(0, [])
    recorder.ran(4, 0.002)
    recorder.ran(1, 0.0005)
    recorder.batch_done(1_234_567.9)
    recorder.backlog(12)
    recorder.backlog(5)
    recorder.gpu_memory(1 << 20)


def expected_stats() -> WorkerStats:
    return WorkerStats(
        inference_count=4,
        execution_count=2,
        success=Duration(1, 7_000),
        fail=Duration(3, 3_000),
        queue=Duration(1, 1_500),
        compute_infer=Duration(2, 2_500_000),
        expired=1,
        redeliveries=2,
        dead_letters=1,
        last_inference_ms=1_234_567,
    )


def test_every_event_updates_stats_and_metrics() -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics.create(prometheus_backend(registry))
    stats = WorkerStats()
    recorder = Recorder(stats, metrics, model="m", version=3, provider="CPUExecutionProvider")
    assert recorder.samples_gauges
    play(recorder)
    assert stats == expected_stats()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**LABELS, **labels})

    assert value("axon_redeliveries_total") == 2
    assert value("axon_dead_letters_total") == 1
    assert value("axon_expired_total") == 1
    assert value("axon_worker_replies_total", code="invalid_input") == 2
    assert value("axon_worker_replies_total", code="deadline_exceeded") == 1
    assert value("axon_worker_replies_total", code="ok") == 1
    assert value("axon_batch_rows_count") == 2 and value("axon_batch_rows_sum") == 5
    duration = {"provider": "CPUExecutionProvider"}
    assert value("axon_inference_duration_seconds_count", **duration) == 2
    assert value("axon_inference_duration_seconds_sum", **duration) == pytest.approx(0.0025)
    assert value("axon_backlog") == 5
    assert value("axon_gpu_memory_used_bytes", device="0") == 1 << 20


def test_a_series_appears_only_once_its_event_happened() -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics.create(prometheus_backend(registry))
    recorder = Recorder(WorkerStats(), metrics, model="m", version=3, provider="cpu")
    assert registry.get_sample_value("axon_expired_total", LABELS) is None
    recorder.expired()
    assert registry.get_sample_value("axon_expired_total", LABELS) == 1
    assert registry.get_sample_value("axon_dead_letters_total", LABELS) is None


def test_without_metrics_only_the_stats_are_updated() -> None:
    stats = WorkerStats()
    recorder = Recorder(stats, None, model="m", version=3, provider="cpu")
    assert not recorder.samples_gauges
    play(recorder)
    assert stats == expected_stats()


def test_a_batch_observes_each_value_as_observe_would() -> None:
    """``queued`` of a batch writes each bucket once; the exposition is the same as one
    ``observe`` per value, edges (a value equal to a bound, beyond the last) included."""
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics.create(prometheus_backend(registry))
    recorder = Recorder(WorkerStats(), metrics, model="m", version=3, provider="cpu")
    reference = prometheus_client.Histogram(
        "reference", "same buckets", buckets=QUEUE_WAIT_BUCKETS, registry=None
    )
    waits_s = [0.0, 0.0005, 0.001, 0.001, 0.0042, 2.5, 30.0, 31.0, 1e9]
    recorder.queued([int(w * 1e9) for w in waits_s])
    for wait_s in waits_s:
        reference.observe(int(wait_s * 1e9) / 1e9)

    def samples(name: str, labels: dict[str, str]) -> list[tuple[str, float]]:
        found = []
        for family in registry.collect() if name != "reference" else reference.collect():
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if wanted and sample.name.startswith(name) and not sample.name.endswith("_created"):
                    found.append((sample.name.removeprefix(name), sample.value))
        return found

    ours = samples("axon_worker_queue_wait_seconds", LABELS)
    assert ours and ours == samples("reference", {})
