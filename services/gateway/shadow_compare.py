"""How a shadow's reply is compared with the primary's, per task (pure; used by
``services.gateway.shadow`` and by ``axon replay``):

- classify: the top-1 label of each row (argmax of ``probabilities``, ties to the
  lowest index as the classify endpoint ranks them): rows that agree, and the share of
  rows that differ as the ``difference``;
- forecast: the mean absolute difference of ``forecast``;
- generate: the mean absolute pixel difference of ``image`` (the same body carries the
  same seed, so the same latent vectors: any difference is the model's);
- any other task, or a model whose outputs are named otherwise: the mean absolute
  difference over every output both replies have.

Outputs that cannot be compared (different shapes, no common output, not numbers)
raise ``Incomparable``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Outputs = Mapping[str, np.ndarray[Any, Any]]

TASK_OUTPUT = {"classify": "probabilities", "forecast": "forecast", "generate": "image"}
"""The output each task compares (as ``results`` renders it)."""


class Incomparable(ValueError):
    """The two replies cannot be compared; ``str`` says why."""


@dataclass(frozen=True)
class Comparison:
    """One request's comparison: ``rows`` compared; ``agree`` rows whose top-1 label is
    the same (classify only, else None); ``difference`` (see the module docstring)."""

    rows: int
    agree: int | None
    difference: float


def compare(task: str, primary: Outputs, shadow: Outputs) -> Comparison:
    """Compare ``shadow``'s outputs with ``primary``'s for a model of ``task``; a
    difference that is not finite (NaN or infinite outputs) is ``Incomparable``."""
    result = _compare(task, primary, shadow)
    if not math.isfinite(result.difference):
        raise Incomparable(f"the difference is {result.difference} (outputs not finite)")
    return result


def _compare(task: str, primary: Outputs, shadow: Outputs) -> Comparison:
    name = TASK_OUTPUT.get(task)
    if name is not None and name in primary and name in shadow:
        a, b = _pair(name, primary[name], shadow[name])
        if task == "classify":
            return _top1(a, b)
        return Comparison(_rows(a), None, _mean_abs(a, b))
    common = sorted(set(primary) & set(shadow))
    if not common:
        raise Incomparable(
            f"no output in common (primary {sorted(primary)}, shadow {sorted(shadow)})"
        )
    pairs = [_pair(n, primary[n], shadow[n]) for n in common]
    total = sum(a.size for a, _ in pairs)
    summed = sum(float(np.abs(a - b).sum()) for a, b in pairs)
    return Comparison(_rows(pairs[0][0]), None, summed / total if total else 0.0)


def _pair(
    name: str, a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if a.shape != b.shape:
        raise Incomparable(f"output {name!r}: shape {list(a.shape)} vs {list(b.shape)}")
    if not (np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number)):
        raise Incomparable(f"output {name!r}: not numbers ({a.dtype}, {b.dtype})")
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)


def _rows(a: np.ndarray[Any, Any]) -> int:
    return int(a.shape[0]) if a.ndim else 1


def _mean_abs(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.abs(a - b).mean()) if a.size else 0.0


def _top1(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> Comparison:
    if a.ndim != 2 or a.shape[1] == 0:
        raise Incomparable(f"output 'probabilities': expected [rows, classes], got {list(a.shape)}")
    agree = int((np.argmax(a, axis=1) == np.argmax(b, axis=1)).sum())
    rows = int(a.shape[0])
    return Comparison(rows, agree, 1.0 - agree / rows if rows else 0.0)
