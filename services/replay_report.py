"""``axon replay``'s report: pure summaries of the replayed requests and the PNG plot.

A ``Row`` per captured request: its outcome (``compared``, ``error``, ``timeout``,
``refused``, ``incomparable``), the comparison with the captured reply
(``services.gateway.shadow_compare``: rows, top-1 rows that agree for classifiers, the
difference) and both latencies (the captured one: the gateway's queue round trip when
it was served; the replay's: the same span, measured by ``axon replay``).

``summarize`` is what ``report.json`` holds besides the rows; ``plot`` draws
``report.png`` (latency distributions of both, and the per-request differences) with
matplotlib (the ``replay`` extra; imported only when drawing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("compared", "error", "timeout", "refused", "incomparable")


@dataclass(frozen=True)
class Row:
    """One replayed request (see the module docstring)."""

    request_id: str
    captured_version: int
    outcome: str
    rows: int
    agree: int | None
    difference: float | None
    captured_ms: float
    replay_ms: float | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50 / p95 / p99 / mean / count (numpy's linear interpolation); None if empty."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(array.mean()), "count": len(values)}  # fmt: skip


def summarize(model: str, version: int, task: str, rows: Sequence[Row]) -> dict[str, Any]:
    """The report's figures over ``rows``: outcomes, agreement (classify: top-1 rows
    that agree / rows compared), mean of the per-request differences, and latency
    percentiles (captured over every row; replay over the answered ones; both also
    over the compared rows only, the same requests)."""
    compared = [r for r in rows if r.outcome == "compared"]
    outcomes = Counter(r.outcome for r in rows)
    classify_rows = sum(r.rows for r in compared if r.agree is not None)
    agree_rows = sum(r.agree for r in compared if r.agree is not None)
    differences = [r.difference for r in compared if r.difference is not None]
    answered = [r.replay_ms for r in rows if r.replay_ms is not None]
    return {
        "model": model,
        "version": version,
        "task": task,
        "captures": len(rows),
        "captured_versions": {
            str(v): n for v, n in sorted(Counter(r.captured_version for r in rows).items())
        },
        "outcomes": {name: outcomes[name] for name in OUTCOMES},
        "compared": len(compared),
        "rows": sum(r.rows for r in compared),
        "top1_agreement": agree_rows / classify_rows if classify_rows else None,
        "mean_difference": float(np.mean(differences)) if differences else None,
        "max_difference": float(np.max(differences)) if differences else None,
        "latency_ms": {
            "captured": percentiles([r.captured_ms for r in rows]),
            "replay": percentiles(answered),
            "captured_compared": percentiles([r.captured_ms for r in compared]),
            "replay_compared": percentiles([r.replay_ms for r in compared if r.replay_ms]),
        },
    }


def plot(summary: dict[str, Any], rows: Sequence[Row], path: Path) -> None:
    """``path``: a PNG of the captured vs replayed latency distributions (histograms on
    one log-spaced scale) and the per-request differences of the compared rows.
    ``ImportError`` naming the extra when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError as exc:
        raise ImportError(
            "axon replay draws its plot with matplotlib: pip install 'axon[replay]'"
        ) from exc
    captured = [r.captured_ms for r in rows]
    replayed = [r.replay_ms for r in rows if r.replay_ms is not None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    every = [v for v in captured + replayed if v > 0]
    if every:
        bins = np.geomspace(min(every), max(every) * 1.01 + 1e-9, 30)
        left.hist(captured, bins=bins, alpha=0.6, label="captured (served)")
        left.hist(replayed, bins=bins, alpha=0.6, label=f"replay (version {summary['version']})")
        left.set_xscale("log")
        left.xaxis.set_major_formatter(ScalarFormatter())
        left.xaxis.set_minor_formatter(NullFormatter())
    left.set_xlabel("queue round trip (ms)")
    left.set_ylabel("requests")
    left.set_title("Latency")
    left.legend()
    differences = [
        r.difference for r in rows if r.outcome == "compared" and r.difference is not None
    ]
    right.hist(differences or [0.0], bins=30, color="tab:purple")
    agreement = summary["top1_agreement"]
    title = "Difference per request"
    if agreement is not None:
        title += f" (top-1 agreement {100 * agreement:.2f} %)"
    right.set_title(title)
    right.set_xlabel("difference (classify: share of rows whose top-1 differs)")
    figure.suptitle(
        f"axon replay {summary['model']} --version {summary['version']}: "
        f"{summary['compared']} of {summary['captures']} captures compared"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
