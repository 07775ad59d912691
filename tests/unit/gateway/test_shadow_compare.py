"""The per-task comparison of a shadow's reply with the primary's (``shadow_compare``),
against numbers computed here by hand."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.shadow_compare import Comparison, Incomparable, compare


def test_classify_counts_rows_whose_top1_label_agrees() -> None:
    primary = {"probabilities": np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])}
    shadow = {"probabilities": np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])}
    assert compare("classify", primary, shadow) == Comparison(3, 2, pytest.approx(1 / 3))


def test_classify_ties_go_to_the_lowest_index_as_the_endpoint_ranks_them() -> None:
    tie = {"probabilities": np.array([[0.5, 0.5, 0.0]], np.float32)}
    first = {"probabilities": np.array([[0.6, 0.4, 0.0]], np.float32)}
    assert compare("classify", tie, first).agree == 1


def test_forecast_and_generate_are_the_mean_absolute_difference() -> None:
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    b = np.array([[1.5, 2.0, 2.0], [4.0, 7.0, 6.0]], np.float32)
    assert compare("forecast", {"forecast": a}, {"forecast": b}) == Comparison(
        2, None, pytest.approx((0.5 + 1.0 + 2.0) / 6)
    )
    pixels = np.zeros((2, 1, 2, 2), np.float32)
    moved = pixels.copy()
    moved[1, 0, 1, 1] = 8.0
    result = compare("generate", {"image": pixels}, {"image": moved})
    assert result == Comparison(2, None, pytest.approx(8.0 / 8))


def test_other_outputs_fall_back_to_the_mean_difference_over_common_outputs() -> None:
    primary = {"x": np.array([[1.0, 1.0]]), "y": np.array([[0.0]]), "only": np.ones((1, 1))}
    shadow = {"x": np.array([[1.0, 3.0]]), "y": np.array([[1.0]])}
    assert compare("classify", primary, shadow) == Comparison(1, None, pytest.approx(3.0 / 3))


@pytest.mark.parametrize(
    ("primary", "shadow", "message"),
    [
        ({"forecast": np.ones((1, 3))}, {"forecast": np.ones((1, 2))}, "shape [1, 3] vs [1, 2]"),
        ({"a": np.ones(1)}, {"b": np.ones(1)}, "no output in common"),
        ({"forecast": np.ones(2)}, {"forecast": np.array([1.0, np.nan])}, "not finite"),
        ({"probabilities": np.ones(3)}, {"probabilities": np.ones(3)}, "expected [rows, classes]"),
        ({"forecast": np.array(["a"])}, {"forecast": np.array(["b"])}, "not numbers"),
    ],
)
def test_what_cannot_be_compared_says_why(
    primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], message: str
) -> None:
    task = "classify" if "probabilities" in primary else "forecast"
    with pytest.raises(Incomparable, match=message.replace("[", r"\[").replace("]", r"\]")):
        compare(task, primary, shadow)
