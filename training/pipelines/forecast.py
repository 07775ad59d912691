"""Forecaster pipeline: series → chronological split → scaler fitted on the training
split → RNN/LSTM/GRU with gradient clipping → test RMSE/MAE next to persistence and
ARIMA baselines → ONNX (scaling inside the graph, dynamic batch and time axes).

Split (T points): the last ``test_fraction`` of points is the test tail, the
``val_fraction`` before it the validation segment, the rest the training segment. A
window belongs to a segment when all its *targets* fall inside it (inputs may reach
back into earlier segments, as they would in production).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import report
from training.data.series import Series, load_series, make_windows
from training.distributed import current
from training.engine import Checkpointer, History, fit, seed_everything, train_device
from training.errors import ConfigError, DataError
from training.export import spec
from training.models.forecaster import (
    CELLS,
    ExportedForecaster,
    ForecasterConfig,
    build_forecaster,
    loss_function,
)
from training.pipelines.common import ExportPlan, report_dir, run_dir, save_final

CONFIG = ForecasterConfig

MIN_MAX_HISTORY = 1024
"""Lower bound of the ``max_history`` written to metadata.json (16 windows otherwise)."""


@dataclass(frozen=True)
class Split:
    """Window indices per segment and the segment boundaries (point indices)."""

    x: np.ndarray  # [N, window]
    y: np.ndarray  # [N, horizon]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start: int
    test_start: int


def split_series(values: np.ndarray, cfg: ForecasterConfig) -> Split:
    n = len(values)
    test_start = n - max(cfg.horizon, round(cfg.test_fraction * n))
    val_start = test_start - max(cfg.horizon, round(cfg.val_fraction * n))
    x, y = make_windows(values, cfg.window, cfg.horizon)
    first_target = np.arange(len(x)) + cfg.window
    last_target = first_target + cfg.horizon - 1
    train = np.flatnonzero(last_target < val_start)
    val = np.flatnonzero((first_target >= val_start) & (last_target < test_start))
    test = np.flatnonzero(first_target >= test_start)
    if len(train) < 2 or len(test) < 1:
        raise DataError(
            f"data: {n} points leave {len(train)} training and {len(test)} test windows for "
            f"window {cfg.window} + horizon {cfg.horizon}; use a shorter window or more data"
        )
    return Split(x, y, train, val, test, val_start, test_start)


def _errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    diff = pred - truth
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}


def arima_forecasts(values: np.ndarray, sp: Split, cfg: ForecasterConfig) -> np.ndarray:
    """ARIMA(p,d,q) fitted on the training segment only, then applied (parameters fixed)
    at each test origin: ``[N_test, horizon]``."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.arima.model import ARIMA

    if len(cfg.arima_order) != 3:
        raise ConfigError(f"arima_order: give p,d,q (three numbers); got {cfg.arima_order}")
    order = tuple(int(o) for o in cfg.arima_order)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        fitted = ARIMA(values[: sp.val_start], order=order).fit()
        out = []
        for i in sp.test:
            origin = i + cfg.window
            out.append(fitted.apply(values[:origin]).forecast(cfg.horizon))
    return np.asarray(out)


@dataclass
class Trained:
    model: ExportedForecaster
    history: History
    test_pred: np.ndarray  # [N_test, horizon]
    metrics: dict[str, Any]


def train_once(cfg: ForecasterConfig, series: Series, checkpoint: bool = True) -> Trained:
    """Train one forecaster and evaluate it on the test tail."""
    seed_everything(cfg.seed)
    device = train_device(cfg)
    sp = split_series(series.values, cfg)
    train_points = series.values[: sp.val_start]
    mean, std = float(train_points.mean()), float(train_points.std() or 1.0)
    net = build_forecaster(cfg)
    model = ExportedForecaster(net, mean, std).to(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).to(device)

    lossf = loss_function(cfg.loss)
    xv, yv = t(sp.x[sp.val]), t(sp.y[sp.val])
    # The loss is computed on scaled values so its size does not depend on the series' units.

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return lossf(m(batch[0]) / std, batch[1] / std)

    def val_loss(m: nn.Module) -> float:
        if len(xv) == 0:
            return 0.0
        return float(lossf(m(xv) / std, yv / std))

    hist = fit(
        model,
        (t(sp.x[sp.train]), t(sp.y[sp.train])),
        loss_fn,
        val_loss,
        cfg,
        clip_norm=cfg.clip_norm or None,
        checkpointer=Checkpointer(cfg, {}) if checkpoint else None,
        desc=cfg.name,
    )
    model = model.cpu().eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(sp.x[sp.test].astype(np.float32))).numpy().astype(np.float64)
    truth = sp.y[sp.test]
    persistence = np.repeat(sp.x[sp.test][:, -1:], cfg.horizon, axis=1)
    clip = cfg.clip_norm
    norms = np.asarray(hist.grad_norm)
    metrics: dict[str, Any] = {
        "test": _errors(pred, truth),
        "persistence": _errors(persistence, truth),
        "test_points": int(len(series.values) - sp.test_start),
        "test_windows": len(sp.test),
        "grad_norm_mean": float(norms.mean()),
        "grad_norm_max": float(norms.max()),
        "clipped_share": float((norms > clip).mean()) if clip > 0 else 0.0,
        "training": hist.summary(),
    }
    return Trained(model, hist, pred, metrics)


def train(cfg: ForecasterConfig, models_dir: Path) -> Path:
    """Run the whole pipeline; returns the final checkpoint's path."""
    series = load_series(cfg.data, cfg.column or None)
    result = train_once(cfg, series)
    if not current().is_main:  # under torchrun only rank 0 reports and writes final.pt
        return run_dir(cfg) / "final.pt"
    sp = split_series(series.values, cfg)
    arima = arima_forecasts(series.values, sp, cfg)
    truth = sp.y[sp.test]
    result.metrics["arima"] = {**_errors(arima, truth), "order": list(cfg.arima_order)}
    result.metrics["rmse"] = result.metrics["test"]["rmse"]
    result.metrics["mae"] = result.metrics["test"]["mae"]
    rdir = report_dir(cfg)
    report.loss_curves(
        {"train": result.history.train_loss, "validation": result.history.val_loss},
        rdir / "loss.png",
        f"{cfg.name}: {cfg.loss} (scaled)",
    )
    report.grad_norms({cfg.cell: result.history.grad_norm}, cfg.clip_norm, rdir / "grad_norm.png")
    result.history.write_grad_log(rdir / "grad_norm.csv")
    tail = series.values[sp.test_start :]
    report.forecast_vs_actual(
        tail,
        {
            cfg.cell: result.test_pred[:, 0],
            "arima": arima[:, 0],
            "persistence": sp.x[sp.test][:, -1],
        },
        sp.test_start,
        rdir / "forecast.png",
    )
    extras = {
        "meta": {
            "task": "forecast",
            "architecture": cfg.cell,
            "window": cfg.window,
            "horizon": cfg.horizon,
            # The longest history served (services refuse longer ones with a 400):
            # memory per request stays bounded whatever a client sends.
            "max_history": max(MIN_MAX_HISTORY, 16 * cfg.window),
            "dataset": {
                "name": series.name,
                "source": series.source,
                "points": len(series.values),
                "missing_filled": series.missing_filled,
                "n_train": len(sp.train),
                "n_val": len(sp.val),
                "n_test": len(sp.test),
                "val_start": sp.val_start,
                "test_start": sp.test_start,
            },
            "metrics": result.metrics,
        },
        "scaler": [float(result.model.mean), float(result.model.std)],
    }
    return save_final(cfg, result.model.state_dict(), extras)


def compare_cells(cfg: ForecasterConfig, out_dir: Path) -> list[dict[str, Any]]:
    """Train rnn, lstm and gru on the same data and split; tabulate RMSE and gradient norms.

    Writes ``compare-cells.json`` and ``grad_norm_by_cell.png`` into `out_dir`.
    """
    import json

    series = load_series(cfg.data, cfg.column or None)
    rows: list[dict[str, Any]] = []
    norms: dict[str, list[float]] = {}
    for cell in CELLS:
        run_cfg = replace(cfg, cell=cell, name=f"{cfg.name}-{cell}")
        res = train_once(run_cfg, series, checkpoint=False)
        g = np.asarray(res.history.grad_norm)
        k = max(1, len(g) // 10)
        norms[cell] = res.history.grad_norm
        rows.append(
            {
                "cell": cell,
                "rmse": res.metrics["test"]["rmse"],
                "mae": res.metrics["test"]["mae"],
                "persistence_rmse": res.metrics["persistence"]["rmse"],
                "grad_norm_first_10pct": float(g[:k].mean()),
                "grad_norm_last_10pct": float(g[-k:].mean()),
                "grad_norm_max": float(g.max()),
                "clipped_share": res.metrics["clipped_share"],
                "epochs": len(res.history.train_loss),
                "params": sum(p.numel() for p in res.model.parameters()),
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare-cells.json").write_text(json.dumps(rows, indent=2) + "\n")
    report.grad_norms(norms, cfg.clip_norm, out_dir / "grad_norm_by_cell.png")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of `compare_cells` rows."""
    cols = [
        "cell",
        "params",
        "epochs",
        "rmse",
        "mae",
        "persistence_rmse",
        "grad_norm_first_10pct",
        "grad_norm_last_10pct",
        "grad_norm_max",
        "clipped_share",
    ]
    head = " | ".join(cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            " | ".join(
                f"{r[c]:.4g}" if isinstance(r[c], float) and not math.isnan(r[c]) else str(r[c])
                for c in cols
            )
        )
    return "\n".join(lines)


def export_plan(
    cfg: ForecasterConfig, state_dict: dict[str, torch.Tensor], extras: dict[str, Any]
) -> ExportPlan:
    """Rebuild the forecaster; plain RNNs use the legacy exporter (see training/export.py)."""
    model = ExportedForecaster(build_forecaster(cfg), *extras["scaler"])
    model.load_state_dict(state_dict)
    mean, std = extras["scaler"]
    gen = torch.Generator().manual_seed(0)

    def history(b: int, steps: int) -> dict[str, torch.Tensor]:
        return {"history": mean + std * torch.randn(b, steps, generator=gen)}

    w = cfg.window
    return ExportPlan(
        module=model.eval(),
        example=history(2, w),
        inputs=[spec("history", np.float32, [-1, -1])],
        outputs=[spec("forecast", np.float32, [-1, cfg.horizon])],
        cases=[history(1, w), history(3, max(2, w // 2)), history(7, w * 2 + 3), history(2, 1)],
        legacy=cfg.cell == "rnn",
    )
