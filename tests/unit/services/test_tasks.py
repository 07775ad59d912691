"""Request validation against metadata and the generator's seeded latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.contract.errors import InvalidInputError
from services.contract.inputs import check_request, validate_inputs
from services.contract.metadata import ModelMetadata, parse_metadata
from services.runtime.prepare import generator_inputs, prepare_inputs


def metadata(**fields: Any) -> ModelMetadata:
    document = {"schema_version": 1, "name": "m", "version": 1, "sha256": "0" * 64, **fields}
    return parse_metadata(document, Path("m/1/metadata.json"))


CLASSIFIER = metadata(
    task="classify",
    inputs=[{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    outputs=[
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ],
    labels=[str(i) for i in range(10)],
    image={"channels": 1, "height": 8, "width": 8, "value_range": [0, 16]},
)
FORECASTER = metadata(
    task="forecast",
    inputs=[{"name": "history", "datatype": "FP32", "shape": [-1, -1]}],
    outputs=[{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
    window=12,
    horizon=4,
)
GENERATOR = metadata(
    task="generate",
    inputs=[
        {"name": "latent", "datatype": "FP32", "shape": [-1, 16]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ],
    outputs=[{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    latent_size=16,
    conditional=True,
    num_classes=10,
)


def test_valid_inputs_return_their_row_count() -> None:
    assert validate_inputs(CLASSIFIER, {"image": np.zeros((5, 1, 8, 8), np.float32)}) == 5
    assert validate_inputs(FORECASTER, {"history": np.zeros((2, 30), np.float32)}) == 2


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"missing input\(s\) \['image'\]"),
        (
            {"image": np.zeros((1, 1, 8, 8), np.float32), "x": np.zeros(1, np.float32)},
            r"unknown input\(s\) \['x'\]",
        ),
        ({"image": np.zeros((1, 1, 8, 8), np.float64)}, "datatype FP64, expected FP32"),
        ({"image": np.zeros((1, 8, 8), np.float32)}, "has rank 3"),
        ({"image": np.zeros((1, 1, 8, 7), np.float32)}, "axis 3 must be 8"),
        ({"image": np.zeros((0, 1, 8, 8), np.float32)}, "axis 0 has length 0"),
        ({"image": np.full((1, 1, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
    ],
)
def test_invalid_inputs_say_what_is_wrong(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_inputs(CLASSIFIER, inputs)


def test_rows_must_agree_across_inputs() -> None:
    inputs = {"latent": np.zeros((2, 16), np.float32), "label": np.zeros(3, np.int64)}
    with pytest.raises(InvalidInputError, match="3 rows, other inputs have 2"):
        validate_inputs(GENERATOR, inputs)


def test_generator_latents_follow_the_documented_recipe() -> None:
    tensors = generator_inputs(GENERATOR, {"seed": 42, "count": 3, "label": 7})
    expected = np.random.default_rng(42).standard_normal((3, 16), dtype=np.float32)
    np.testing.assert_array_equal(tensors["latent"], expected)
    np.testing.assert_array_equal(tensors["label"], np.array([7, 7, 7], np.int64))
    assert validate_inputs(GENERATOR, tensors) == 3


def test_generator_without_label_cycles_through_classes() -> None:
    tensors = prepare_inputs(GENERATOR, {}, {"seed": 0, "count": 12})
    np.testing.assert_array_equal(tensors["label"], np.arange(12) % 10)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"count": 1}, "parameters.seed: required"),
        ({"seed": 1, "count": 0}, "parameters.count: 0 is outside"),
        ({"seed": 1, "count": 1, "label": 10}, "parameters.label: 10 is outside 0..9"),
        ({"seed": "1", "count": 1}, "must be an integer"),
        ({"seed": True, "count": 1}, "must be an integer"),
    ],
)
def test_bad_generator_parameters(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        prepare_inputs(GENERATOR, {}, parameters)


def test_tensors_pass_through_for_other_tasks() -> None:
    image = np.zeros((1, 1, 8, 8), np.float32)
    assert prepare_inputs(CLASSIFIER, {"image": image}, {"seed": 1})["image"] is image


def test_variable_axes_are_bounded_by_metadata() -> None:
    """Issue 9 item 4: a dynamic non-batch axis is bounded (declared, or the default)."""
    from services.contract.metadata import DEFAULT_MAX_AXIS

    assert FORECASTER.input("history").max_shape == (-1, DEFAULT_MAX_AXIS)
    bounded = metadata(
        task="forecast",
        inputs=[{"name": "history", "datatype": "FP32", "shape": [-1, -1]}],
        outputs=[{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
        window=12,
        horizon=4,
        max_history=48,
    )
    assert validate_inputs(bounded, {"history": np.zeros((2, 48), np.float32)}) == 2
    with pytest.raises(InvalidInputError, match=r"axis 1 has length 49, at most 48 .*max_shape"):
        validate_inputs(bounded, {"history": np.zeros((1, 49), np.float32)})
    with pytest.raises(InvalidInputError, match="at most 4096"):
        validate_inputs(FORECASTER, {"history": np.zeros((1, DEFAULT_MAX_AXIS + 1), np.float32)})
    declared = metadata(
        task="forecast",
        inputs=[{"name": "history", "datatype": "FP32", "shape": [-1, -1], "max_shape": [-1, 100]}],
        outputs=[{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
        window=12,
        horizon=4,
    )
    assert declared.input("history").max_shape == (-1, 100)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"max_shape": [-1]}, "max_shape must be a list of 2 integers"),
        ({"max_shape": [-1, 0]}, "max_shape\\[1\\] must be >= 1"),
        ({"range": [5, 1]}, "range must be \\[low, high\\]"),
        ({"range": "0..9"}, "range must be"),
    ],
)
def test_bad_bounds_in_metadata_are_refused(spec: dict[str, Any], message: str) -> None:
    from services.contract.errors import ModelRepositoryError

    with pytest.raises(ModelRepositoryError, match=message):
        metadata(
            task="forecast",
            inputs=[{"name": "history", "datatype": "FP32", "shape": [-1, -1], **spec}],
            outputs=[{"name": "forecast", "datatype": "FP32", "shape": [-1, 4]}],
            window=12,
            horizon=4,
        )


def test_values_outside_the_declared_range_are_refused() -> None:
    """Issue 9 item 5: ``label: [999]`` for a conditional GAN is a client error, not an
    ONNX Runtime failure in a Gather node."""
    assert GENERATOR.input("label").value_range == (0.0, 9.0)
    latent = np.zeros((2, 16), np.float32)
    ok = {"latent": latent, "label": np.array([0, 9], np.int64)}
    assert validate_inputs(GENERATOR, ok) == 2
    with pytest.raises(InvalidInputError, match=r"values must lie in 0..9 .*got 3..999"):
        validate_inputs(GENERATOR, {"latent": latent, "label": np.array([3, 999], np.int64)})
    with pytest.raises(InvalidInputError, match="got -1..0"):
        validate_inputs(GENERATOR, {"latent": latent, "label": np.array([-1, 0], np.int64)})


def test_generate_count_defaults_to_one_on_both_sides() -> None:
    """Issue 9 item 14: the gateway and the worker share one parameter check."""
    inputs = generator_inputs(GENERATOR, {"seed": 3})
    assert inputs["latent"].shape == (1, 16)
    assert check_request(GENERATOR, {}, {"seed": 3}, max_rows=8) == 1
