"""PNG plots written into a model's ``report/`` folder (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(curves: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """One line per named curve (e.g. train / val loss per epoch)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def grad_norms(norms: Mapping[str, Sequence[float]], clip: float, path: Path) -> Path:
    """Gradient norm per step (before clipping), log scale, with the clipping threshold."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in norms.items():
        ax.plot(values, label=label, linewidth=0.8)
    if clip > 0:
        ax.axhline(clip, color="k", linestyle="--", linewidth=0.8, label=f"clip = {clip}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient L2 norm (before clipping)")
    ax.legend()
    return _save(fig, path)


def confusion(matrix: np.ndarray, labels: Sequence[str], path: Path) -> Path:
    """Confusion matrix: rows = true class, columns = predicted class."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def forecast_vs_actual(
    actual: np.ndarray, predictions: Mapping[str, np.ndarray], start: int, path: Path
) -> Path:
    """The series' test tail and one-step-ahead-origin forecasts (first horizon step)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(start, start + len(actual))
    ax.plot(x, actual, "k-", label="actual", linewidth=1.5)
    for label, pred in predictions.items():
        ax.plot(x[: len(pred)], pred, label=label, linewidth=1)
    ax.set_xlabel("time step")
    ax.set_title("test tail: forecast vs actual (first forecast step)")
    ax.legend()
    return _save(fig, path)


def image_grid(images: np.ndarray, path: Path, title: str, ncols: int = 10) -> Path:
    """A grid of ``[N, C, H, W]`` images (greyscale or RGB)."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.8, nrows * 0.8 + 0.4))
    lo, hi = float(images.min()), float(images.max())
    for k, ax in enumerate(np.asarray(axes).reshape(-1)):
        ax.axis("off")
        if k < n:
            img = images[k]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray_r", vmin=lo, vmax=hi)
            else:
                ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-9), 0, 1))
    fig.suptitle(title)
    return _save(fig, path)
