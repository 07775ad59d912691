"""Univariate time series: statsmodels' bundled sunspots and co2, or a CSV column.

Series come back as ``float64 [T]`` in their own units, without missing values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import DataError

BUILTIN_SERIES = ("sunspots", "co2")


@dataclass(frozen=True)
class Series:
    values: np.ndarray  # float64 [T]
    name: str
    source: str
    missing_filled: int


def _fill_missing(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Linear interpolation inside, nearest value at the ends."""
    mask = ~np.isfinite(values)
    n = int(mask.sum())
    if n == 0:
        return values, 0
    if n == len(values):
        raise DataError("data: the series holds no finite values")
    idx = np.arange(len(values))
    out = values.copy()
    out[mask] = np.interp(idx[mask], idx[~mask], values[~mask])
    return out, n


def load_series(data: str, column: str | None) -> Series:
    """`data` is ``sunspots``, ``co2`` or a CSV path (then `column` names the column)."""
    if data == "sunspots":
        from statsmodels.datasets import sunspots

        v = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)
        return Series(v, "sunspots", "statsmodels.datasets.sunspots (yearly, 1700-2008)", 0)
    if data == "co2":
        from statsmodels.datasets import co2

        raw = co2.load_pandas().data["co2"].to_numpy(np.float64)
        v, n = _fill_missing(raw)
        return Series(v, "co2", "statsmodels.datasets.co2 (weekly, Mauna Loa)", n)
    path = Path(data)
    if not path.is_file():
        raise DataError(
            f"data: {data!r} is neither a built-in series ({', '.join(BUILTIN_SERIES)}) "
            "nor an existing CSV file"
        )
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"data: cannot read CSV {path}: {exc}") from exc
    if column is None:
        raise DataError(f"column: {path} is a CSV; name the column to forecast with --column")
    if column not in frame.columns:
        raise DataError(
            f"column: {column!r} is not in {path}; columns: {', '.join(map(str, frame.columns))}"
        )
    raw = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    v, n = _fill_missing(raw)
    return Series(v, path.stem, str(path), n)


def make_windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: ``x [N, window]`` histories and ``y [N, horizon]`` next values.

    Window i covers ``values[i : i + window]`` and predicts
    ``values[i + window : i + window + horizon]``.
    """
    n = len(values) - window - horizon + 1
    if n <= 0:
        raise DataError(
            f"window/horizon: a series of {len(values)} points is too short for window "
            f"{window} + horizon {horizon}"
        )
    idx = np.arange(window + horizon)[None, :] + np.arange(n)[:, None]
    both = values[idx]
    return both[:, :window], both[:, window:]
