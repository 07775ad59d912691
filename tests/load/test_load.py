"""Load tests: the pure report helpers (memory verdict, Locust CSV parsing), and the
``--quick`` Locust run against a real ``axon serve`` (``python -m tests.load.run``)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.load.report import MB, memory_flat, read_history, read_stats

ROOT = Path(__file__).resolve().parents[2]


def _series(values: Sequence[float], step_s: float = 5.0) -> list[tuple[float, float]]:
    return [(i * step_s, v) for i, v in enumerate(values)]


def test_flat_with_noise_is_flat() -> None:
    rng = random.Random(0)
    samples = _series([200 * MB + rng.uniform(-8, 8) * MB for _ in range(120)])
    verdict = memory_flat(samples, warmup_s=60)
    assert verdict.flat and abs(verdict.growth_bytes) < 4 * MB


def test_steady_leak_is_not_flat() -> None:
    # +0.5 MB per 5 s sample: 60 MB over 10 minutes, past max(32 MB, 10 % of ~230 MB).
    verdict = memory_flat(_series([200 * MB + i * 0.5 * MB for i in range(120)]), warmup_s=60)
    assert not verdict.flat and verdict.growth_bytes == pytest.approx(53.5 * MB, rel=0.01)


def test_growth_during_warm_up_is_ignored() -> None:
    values = [50 * MB + i * 10 * MB for i in range(12)] + [170 * MB] * 108
    assert memory_flat(_series(values), warmup_s=60).flat
    assert not memory_flat(_series(values), warmup_s=0).flat


def test_one_spike_does_not_decide() -> None:
    values = [300 * MB] * 120
    values[-1] = 600 * MB  # a last-sample spike: first-vs-last would call it a leak
    assert memory_flat(_series(values), warmup_s=60).flat


def test_relative_tolerance_for_big_processes() -> None:
    values = [2000 * MB + i * 1 * MB for i in range(120)]  # +107 MB fitted, 10 % is ~205 MB
    verdict = memory_flat(_series(values), warmup_s=60)
    assert verdict.flat and verdict.allowed_bytes == pytest.approx(0.1 * verdict.median_bytes)


def test_too_few_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        memory_flat(_series([1.0] * 10), warmup_s=60)
    with pytest.raises(ValueError):
        memory_flat([], warmup_s=0)


HISTORY = (
    (
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
        "99.9%,99.99%,100%,Total Request Count,Total Failure Count\n"
    )
    + """1700000000,2,,Aggregated,0.000000,0.000000,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0
1700000001,4,POST,classify 1,10.0,0.0,5,6,7,8,9,10,11,12,13,13,13,10,0
1700000001,4,,Aggregated,12.500000,0.500000,5,6,7,8,9,10,11,12,13,13,13,12,1
"""
)


def test_read_history(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(HISTORY)
    points = read_history(path)
    assert [p.t for p in points] == [0.0, 1.0]
    assert points[1].rps == 12.5 and points[1].p99_ms == 12 and points[1].users == 4
    assert points[0].p50_ms != points[0].p50_ms  # N/A → nan


def test_quick_loadtest(model_repo: Path, tmp_path: Path) -> None:
    """``make loadtest`` in small: axon serve + Locust (8 users, 20 s) + report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.load.run",
            "--quick",
            "--models-dir",
            str(model_repo),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stats = {s.name: s for s in read_stats(tmp_path / "locust_stats.csv")}
    for name in (
        "classify 1",
        "classify batch",
        "classify png",
        "infer 1",
        "infer batch",
        "forecast 1",
        "forecast long",
        "forecast batch",
        "generate 1",
        "generate png",
        "generate array",
    ):
        assert name in stats, sorted(stats)
    assert stats["Aggregated"].failures == 0 and stats["Aggregated"].requests > 100
    assert len(read_history(tmp_path / "locust_stats_history.csv")) >= 5
    for png in ("report.png", "memory.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "summary.md").read_text()
    assert "Result: PASS" in summary and "gateway-" in summary and "redis-" in summary
