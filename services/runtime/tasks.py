"""Request validation and task-specific input preparation (pure, no I/O).

``prepare_inputs`` turns a decoded request into the model's input tensors:

- every task accepts the model's input tensors directly (names, datatypes and shapes as
  metadata.json declares them);
- a generator also accepts an empty ``inputs`` with parameters ``seed`` (int >= 0),
  ``count`` (int >= 1, default 1) and optionally ``label`` (conditional models): latents are drawn
  as ``numpy.random.default_rng(seed).standard_normal((count, latent_size),
  dtype=numpy.float32)`` (docs/model-repository.md); without ``label`` a conditional
  model gets labels ``0, 1, …, num_classes-1, 0, …`` (row i has label i % num_classes).

``validate_inputs`` checks tensors against the metadata and returns the row count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.runtime.codec import DATATYPES, Scalar, datatype_of
from services.runtime.errors import InvalidInputError
from services.runtime.repository import ModelMetadata, TensorSpec

Tensors = dict[str, np.ndarray[Any, Any]]

MAX_GENERATE_COUNT = 4096
"""Upper bound on ``count`` for one generate request (memory safety)."""


def prepare_inputs(
    metadata: ModelMetadata,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Scalar],
) -> Tensors:
    """Model input tensors for a request; raises ``InvalidInputError`` saying what is wrong."""
    if metadata.task == "generate" and not inputs:
        return generator_inputs(metadata, parameters)
    return dict(inputs)


@dataclass(frozen=True)
class GenerateParameters:
    """The parameters of a generate request without tensors."""

    seed: int
    count: int
    label: int | None


def generate_parameters(
    metadata: ModelMetadata, parameters: Mapping[str, Scalar], *, max_count: int
) -> GenerateParameters:
    """``seed`` (required, 0..2**63-1), ``count`` (default 1, 1..``max_count``) and, for a
    conditional model only, ``label`` (0..num_classes-1). The one check of these
    parameters: the gateway (400) and the worker use it alike."""
    seed = _int_parameter(parameters, "seed", 0, 2**63 - 1, default=None)
    count = _int_parameter(parameters, "count", 1, max_count, default=1)
    label = None
    if parameters.get("label") is not None:
        if not metadata.conditional:
            raise InvalidInputError(
                f"parameters.label: model {metadata.name} is not conditional, leave it out"
            )
        label = _int_parameter(parameters, "label", 0, metadata.num_classes - 1, default=None)
    return GenerateParameters(seed=seed, count=count, label=label)


def generator_inputs(metadata: ModelMetadata, parameters: Mapping[str, Scalar]) -> Tensors:
    """Latents (and labels) for a generate request given ``seed``, ``count``, ``label``."""
    chosen = generate_parameters(metadata, parameters, max_count=MAX_GENERATE_COUNT)
    latent_size = metadata.latent_size
    assert latent_size is not None  # guaranteed by metadata validation for task generate
    rng = np.random.default_rng(chosen.seed)
    tensors: Tensors = {
        "latent": rng.standard_normal((chosen.count, latent_size), dtype=np.float32),
    }
    if metadata.conditional:
        if chosen.label is None:
            labels = np.arange(chosen.count, dtype=np.int64) % metadata.num_classes
        else:
            labels = np.full(chosen.count, chosen.label, dtype=np.int64)
        tensors["label"] = labels
    return tensors


def validate_inputs(metadata: ModelMetadata, inputs: Mapping[str, np.ndarray[Any, Any]]) -> int:
    """Check ``inputs`` against the model's declared inputs; returns the row count.

    Rules: exactly the declared names; the declared datatype; the declared rank; fixed
    axes equal; variable axes >= 1 and within the spec's ``max_shape`` (``check_shape``);
    the same number of rows (axis 0, >= 1) in every input; floating-point values finite;
    values within the spec's ``value_range`` when it declares one.
    """
    declared = {spec.name: spec for spec in metadata.inputs}
    missing = sorted(set(declared) - set(inputs))
    unknown = sorted(set(inputs) - set(declared))
    if missing:
        raise InvalidInputError(
            f"missing input(s) {missing}; model {metadata.name} needs {sorted(declared)}"
        )
    if unknown:
        raise InvalidInputError(
            f"unknown input(s) {unknown}; model {metadata.name} takes {sorted(declared)}"
        )
    rows: int | None = None
    for name, spec in declared.items():
        array = inputs[name]
        datatype = datatype_of(array) if array.dtype.kind in "biuf" else str(array.dtype)
        if datatype != spec.datatype:
            raise InvalidInputError(
                f"input {name!r}: datatype {datatype}, expected {spec.datatype}"
            )
        if array.ndim != len(spec.shape):
            raise InvalidInputError(
                f"input {name!r}: shape {list(array.shape)} has rank {array.ndim}, "
                f"expected {list(spec.shape)}"
            )
        check_shape(spec, array.shape)
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            raise InvalidInputError(
                f"input {name!r}: {array.shape[0]} rows, other inputs have {rows}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInputError(f"input {name!r}: contains NaN or infinite values")
        if spec.value_range is not None and array.size:
            low, high = spec.value_range
            if float(array.min()) < low or float(array.max()) > high:
                raise InvalidInputError(
                    f"input {name!r}: values must lie in {_number(low)}..{_number(high)} "
                    f"(model {metadata.name}'s declared range), got "
                    f"{_number(float(array.min()))}..{_number(float(array.max()))}"
                )
    assert rows is not None
    return rows


def check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    """Raise ``InvalidInputError`` unless ``shape`` (same rank as ``spec.shape``) has the
    fixed axes of the spec, every variable axis >= 1, and every variable axis but the
    batch axis within ``spec.max_shape`` (metadata.json ``max_shape``/``max_history``)."""
    name = spec.name
    for axis, (size, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want == -1 and size < 1:
            raise InvalidInputError(f"input {name!r}: axis {axis} has length {size}, needs >= 1")
        if want != -1 and size != want:
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)}, axis {axis} must be {want} "
                f"(expected {list(spec.shape)})"
            )
        if axis and want == -1 and spec.max_shape and size > spec.max_shape[axis] > 0:
            raise InvalidInputError(
                f"input {name!r}: axis {axis} has length {size}, at most "
                f"{spec.max_shape[axis]} (the model's max_shape in metadata.json; send a "
                "shorter tensor)"
            )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _int_parameter(
    parameters: Mapping[str, Scalar], name: str, low: int, high: int, *, default: int | None
) -> int:
    """An integer parameter in ``low..high``; ``default`` None = required."""
    value = parameters.get(name, default)
    if value is None:
        raise InvalidInputError(f"parameters.{name}: required, an integer {low}..{high}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"parameters.{name}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidInputError(f"parameters.{name}: {value} is outside {low}..{high}")
    return value


def input_dtype(metadata: ModelMetadata, name: str) -> np.dtype[Any]:
    """The numpy dtype of input ``name`` (for HTTP callers converting JSON numbers)."""
    return DATATYPES[metadata.input(name).datatype]
