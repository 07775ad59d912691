"""Stacking and splitting of rows around one run, and isolation of a failing request.

The run function here is a deterministic numpy computation (y = 2x, failing on any
negative value), standing in for ``ModelSession.run``'s contract: axis 0 in = axis 0 out.
"""

from __future__ import annotations

import numpy as np

from services.runtime.executor import BatchExecutor
from services.runtime.prepare import Tensors


class Doubler:
    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, feeds: Tensors) -> Tensors:
        x = feeds["x"]
        self.calls.append(x.shape)
        if (x < 0).any():
            raise RuntimeError("negative input")
        return {"y": x * 2, "rows": np.arange(x.shape[0])}


def request(rows: int, width: int = 3, start: float = 0.0) -> Tensors:
    return {"x": (np.arange(rows * width, dtype=np.float32) + start).reshape(rows, width)}


def test_rows_of_many_requests_run_once_and_split_back() -> None:
    model = Doubler()
    requests = [request(1, start=0), request(3, start=100), request(2, start=200)]
    result = BatchExecutor(model).execute(requests)
    assert model.calls == [(6, 3)]
    assert [run.rows for run in result.runs] == [6]
    for req, outcome in zip(requests, result.outcomes, strict=True):
        assert outcome.outputs is not None
        np.testing.assert_array_equal(outcome.outputs["y"], req["x"] * 2)


def test_different_trailing_shapes_make_separate_runs() -> None:
    model = Doubler()
    result = BatchExecutor(model).execute(
        [request(1, width=3), request(2, width=5), request(1, width=3)]
    )
    assert sorted(model.calls) == [(2, 3), (2, 5)]
    assert [o.outputs["y"].shape for o in result.outcomes if o.outputs] == [(1, 3), (2, 5), (1, 3)]


def test_a_failing_request_is_isolated_from_the_others() -> None:
    model = Doubler()
    bad = {"x": -np.ones((1, 3), np.float32)}
    result = BatchExecutor(model).execute([request(2), bad, request(1, start=10)])
    assert result.outcomes[1].outputs is None and result.outcomes[1].error is not None
    assert "negative input" in str(result.outcomes[1].error)
    assert result.outcomes[0].outputs is not None and result.outcomes[2].outputs is not None
    np.testing.assert_array_equal(result.outcomes[2].outputs["y"], request(1, start=10)["x"] * 2)
    assert [run.ok for run in result.runs] == [False, True, False, True]
