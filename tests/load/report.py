"""Pure helpers of the load tests: read Locust's CSV history, judge whether memory stayed
flat, and draw the report plots (matplotlib, no display)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MB = 2**20


@dataclass(frozen=True)
class Point:
    """One row of Locust's ``*_stats_history.csv`` for the aggregate of all requests."""

    t: float  # seconds since the first row
    users: int
    rps: float
    failures_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def read_history(path: Path) -> list[Point]:
    """The ``Aggregated`` rows of a Locust stats history CSV, in time order."""
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("Name") == "Aggregated"]
    if not rows:
        return []
    start = float(rows[0]["Timestamp"])
    return [
        Point(
            t=float(r["Timestamp"]) - start,
            users=int(_number(r.get("User Count")) or 0),
            rps=_number(r.get("Requests/s")),
            failures_per_s=_number(r.get("Failures/s")),
            p50_ms=_number(r.get("50%")),
            p95_ms=_number(r.get("95%")),
            p99_ms=_number(r.get("99%")),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def read_stats(path: Path) -> list[EndpointStats]:
    """Every row of Locust's ``*_stats.csv`` (per request name, plus ``Aggregated``)."""
    with path.open(newline="") as handle:
        return [
            EndpointStats(
                name=r["Name"],
                requests=int(r["Request Count"]),
                failures=int(r["Failure Count"]),
                rps=_number(r["Requests/s"]),
                p50_ms=_number(r["50%"]),
                p95_ms=_number(r["95%"]),
                p99_ms=_number(r["99%"]),
            )
            for r in csv.DictReader(handle)
        ]


def stats_table(stats: Sequence[EndpointStats]) -> str:
    lines = [
        "| request | count | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        lines.append(
            f"| {s.name} | {s.requests} | {s.failures} | {s.rps:.1f} | "
            f"{s.p50_ms:.0f} | {s.p95_ms:.0f} | {s.p99_ms:.0f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether one process' resident memory stayed flat over a run."""

    flat: bool
    growth_bytes: float  # fitted growth over the judged window (least-squares slope × span)
    allowed_bytes: float
    median_bytes: float
    samples: int

    def describe(self) -> str:
        word = "flat" if self.flat else "GROWING"
        return (
            f"{word}: median {self.median_bytes / MB:.1f} MB, fitted growth "
            f"{self.growth_bytes / MB:+.1f} MB (allowed {self.allowed_bytes / MB:.1f} MB, "
            f"{self.samples} samples)"
        )


def memory_flat(
    samples: Sequence[tuple[float, float]],
    *,
    warmup_s: float,
    abs_tolerance_bytes: float = 32 * MB,
    rel_tolerance: float = 0.10,
) -> MemoryVerdict:
    """Judge ``(seconds, rss_bytes)`` samples of one process.

    Samples in the first ``warmup_s`` are ignored (imports, caches, pools and allocator
    arenas fill up while load ramps). Over the rest, a least-squares line is fitted; the
    memory is flat when its growth over that window is at most the larger of
    ``abs_tolerance_bytes`` and ``rel_tolerance`` × the median RSS. A line, not first vs
    last sample, so one garbage-collection spike or a freed arena does not decide.
    """
    if not samples:
        raise ValueError("no memory samples")
    start = min(t for t, _ in samples)
    judged = sorted((t, float(v)) for t, v in samples if t - start >= warmup_s)
    if len(judged) < 3:
        raise ValueError(
            f"only {len(judged)} samples after the {warmup_s:.0f} s warm-up; need at least 3"
        )
    times = [t for t, _ in judged]
    values = [v for _, v in judged]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    var_t = sum((t - mean_t) ** 2 for t in times)
    slope = 0.0 if var_t == 0 else sum((t - mean_t) * (v - mean_v) for t, v in judged) / var_t
    growth = slope * (times[-1] - times[0])
    median = statistics.median(values)
    allowed = max(abs_tolerance_bytes, rel_tolerance * median)
    return MemoryVerdict(growth <= allowed, growth, allowed, median, len(judged))


def plot_history(points: Sequence[Point], png: Path, title: str) -> None:
    """Throughput (and failures) and p50/p95/p99 latency over time, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [p.t for p in points]
    top.plot(t, [p.rps for p in points], label="requests/s")
    top.plot(t, [p.failures_per_s for p in points], label="failures/s", color="tab:red")
    users = top.twinx()
    users.plot(t, [p.users for p in points], label="users", color="tab:gray", linestyle=":")
    users.set_ylabel("users")
    top.set_ylabel("throughput (req/s)")
    top.legend(loc="upper left")
    top.set_title(title)
    for name, values in (
        ("p50", [p.p50_ms for p in points]),
        ("p95", [p.p95_ms for p in points]),
        ("p99", [p.p99_ms for p in points]),
    ):
        bottom.plot(t, values, label=name)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def plot_memory(series: Mapping[str, Sequence[tuple[float, float]]], png: Path) -> None:
    """RSS over time, one line per process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    for name, samples in sorted(series.items()):
        axes.plot([t for t, _ in samples], [v / MB for _, v in samples], label=name)
    axes.set_xlabel("seconds")
    axes.set_ylabel("RSS (MB)")
    axes.set_title("resident memory per process")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
