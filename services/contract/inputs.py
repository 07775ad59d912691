"""The input rules: what a request must be for a model, checked against its metadata.

The one validator of the system. The gateway applies it before anything is queued (a
violation is a 400 naming the field); the worker applies the same function to every
entry it reads, so an entry written to Redis by anything else meets the same rules.

A request is either the model's input tensors (names, datatypes and shapes as
metadata.json declares them) or, for a generator only, no tensors and the parameters
``seed`` (int 0..2**63-1, required), ``count`` (int >= 1, default 1) and, for a
conditional model, ``label`` (0..num_classes-1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.contract.codec import Scalar, datatype_of
from services.contract.errors import InvalidInputError
from services.contract.metadata import ModelMetadata, TensorSpec

MAX_GENERATE_COUNT = 4096
"""Upper bound on ``count`` for one generate request (memory safety)."""


@dataclass(frozen=True)
class GenerateParameters:
    """The parameters of a generate request without tensors."""

    seed: int
    count: int
    label: int | None


def check_request(
    metadata: ModelMetadata,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Scalar],
    *,
    max_rows: int | None = None,
) -> int:
    """Check one request (tensors, or a generator's parameters when it has none) and
    return its row count; at most ``max_rows`` rows when given (``AXON_MAX_ROWS``).
    Raises ``InvalidInputError`` saying which field is wrong and why."""
    if metadata.task == "generate" and not inputs:
        limit = MAX_GENERATE_COUNT if max_rows is None else min(max_rows, MAX_GENERATE_COUNT)
        return generate_parameters(metadata, parameters, max_count=limit).count
    rows = validate_inputs(metadata, inputs)
    if max_rows is not None and rows > max_rows:
        raise InvalidInputError(
            f"inputs: {rows} rows, at most {max_rows} per request (AXON_MAX_ROWS)"
        )
    return rows


def generate_parameters(
    metadata: ModelMetadata, parameters: Mapping[str, Scalar], *, max_count: int
) -> GenerateParameters:
    """``seed`` (required, 0..2**63-1), ``count`` (default 1, 1..``max_count``) and, for a
    conditional model only, ``label`` (0..num_classes-1)."""
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
    if missing or unknown:
        wrong = [f"unknown input(s) {unknown}"] if unknown else []
        wrong += [f"missing input(s) {missing}"] if missing else []
        raise InvalidInputError(
            f"inputs: {', '.join(wrong)}; model {metadata.name} takes {sorted(declared)}"
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
    batch axis within ``spec.max_shape`` (metadata.json ``max_shape``/``max_history``).
    Cheap: the gateway calls it on a JSON ``shape`` before converting any data."""
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
