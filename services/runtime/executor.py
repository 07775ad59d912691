"""Batch execution: stack the rows of many requests, one ONNX Runtime run, split back.

Requests in a batch are grouped by the shape of their non-batch axes (a forecaster's
histories of different lengths cannot share a tensor); each group is one run. If a run
fails and the group holds several requests, each is re-run on its own so that one bad
request gets its own error and the others their results.

Shapes: each request ``r`` brings inputs ``{name: [rows_r, *rest]}``; a group's run gets
``{name: [sum rows_r, *rest]}`` and every output ``[sum rows_r, *out_rest]`` is split
back at the cumulative row offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.contract.errors import InferenceError
from services.runtime.prepare import Tensors

log = logging.getLogger(__name__)

RunFn = Callable[[Tensors], Tensors]


@dataclass
class Outcome:
    """Result for one request: ``outputs`` on success, else ``error``."""

    outputs: Tensors | None = None
    error: InferenceError | None = None


@dataclass
class RunRecord:
    """One ONNX Runtime run: rows it carried and seconds it took; ``started`` is the
    executor's clock (``time.perf_counter`` by default) when it began."""

    rows: int
    seconds: float
    ok: bool
    started: float = 0.0


@dataclass
class BatchResult:
    """Outcomes in request order plus a record of every run made."""

    outcomes: list[Outcome]
    runs: list[RunRecord] = field(default_factory=list)


def _signature(inputs: Tensors) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in inputs.items()))


def _rows(inputs: Tensors) -> int:
    return int(next(iter(inputs.values())).shape[0])


class BatchExecutor:
    """Runs batches of validated requests through ``run_fn`` (a ``ModelSession.run``)."""

    def __init__(self, run_fn: RunFn, clock: Callable[[], float] = time.perf_counter) -> None:
        self._run_fn = run_fn
        self._clock = clock

    def execute(self, requests: Sequence[Tensors]) -> BatchResult:
        """Outcomes for ``requests`` (validated inputs, each with axis 0 = rows)."""
        result = BatchResult(outcomes=[Outcome() for _ in requests])
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, inputs in enumerate(requests):
            groups.setdefault(_signature(inputs), []).append(index)
        for indices in groups.values():
            self._run_group(requests, indices, result)
        return result

    def _run_group(
        self, requests: Sequence[Tensors], indices: list[int], result: BatchResult
    ) -> None:
        members = [requests[i] for i in indices]
        rows = [_rows(inputs) for inputs in members]
        if len(members) == 1:
            feeds = members[0]
        else:
            feeds = {name: np.concatenate([m[name] for m in members]) for name in members[0]}
        try:
            outputs = self._timed_run(feeds, sum(rows), result)
        except Exception as exc:  # ONNX Runtime raises its own hierarchy
            if len(members) > 1:
                for index in indices:
                    self._run_group(requests, [index], result)
                return
            log.warning("inference failed for one request: %s", exc)
            result.outcomes[indices[0]].error = InferenceError(f"model run failed: {exc}")
            return
        offsets = np.cumsum(rows)[:-1]
        split = {name: np.split(value, offsets) for name, value in outputs.items()}
        for position, index in enumerate(indices):
            result.outcomes[index].outputs = {
                name: parts[position] for name, parts in split.items()
            }

    def _timed_run(self, feeds: Tensors, rows: int, result: BatchResult) -> Tensors:
        start = self._clock()
        try:
            outputs = self._run_fn(feeds)
        except Exception:
            result.runs.append(RunRecord(rows, self._clock() - start, False, start))
            raise
        result.runs.append(RunRecord(rows, self._clock() - start, True, start))
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != rows:
                raise InferenceError(
                    f"output {name!r} has shape {list(value.shape)}, expected {rows} rows"
                )
        return outputs
