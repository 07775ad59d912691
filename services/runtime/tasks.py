"""Request validation and task-specific input preparation (pure, no I/O).

``prepare_inputs`` turns a decoded request into the model's input tensors:

- every task accepts the model's input tensors directly (names, datatypes and shapes as
  metadata.json declares them);
- a generator also accepts an empty ``inputs`` with parameters ``seed`` (int >= 0),
  ``count`` (int >= 1) and optionally ``label`` (conditional models): latents are drawn
  as ``numpy.random.default_rng(seed).standard_normal((count, latent_size),
  dtype=numpy.float32)`` (docs/model-repository.md); without ``label`` a conditional
  model gets labels ``0, 1, …, num_classes-1, 0, …`` (row i has label i % num_classes).

``validate_inputs`` checks tensors against the metadata and returns the row count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from services.runtime.codec import DATATYPES, Scalar, datatype_of
from services.runtime.errors import InvalidInputError
from services.runtime.repository import ModelMetadata

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


def generator_inputs(metadata: ModelMetadata, parameters: Mapping[str, Scalar]) -> Tensors:
    """Latents (and labels) for a generate request given ``seed``, ``count``, ``label``."""
    seed = _int_parameter(parameters, "seed", minimum=0, maximum=2**63 - 1)
    count = _int_parameter(parameters, "count", minimum=1, maximum=MAX_GENERATE_COUNT)
    latent_size = metadata.latent_size
    assert latent_size is not None  # guaranteed by metadata validation for task generate
    rng = np.random.default_rng(seed)
    tensors: Tensors = {
        "latent": rng.standard_normal((count, latent_size), dtype=np.float32),
    }
    if metadata.conditional:
        if parameters.get("label") is None:
            labels = np.arange(count, dtype=np.int64) % metadata.num_classes
        else:
            label = _int_parameter(parameters, "label", minimum=0, maximum=metadata.num_classes - 1)
            labels = np.full(count, label, dtype=np.int64)
        tensors["label"] = labels
    elif parameters.get("label") is not None:
        raise InvalidInputError(
            f"parameter 'label': model {metadata.name} is not conditional, leave it out"
        )
    return tensors


def validate_inputs(metadata: ModelMetadata, inputs: Mapping[str, np.ndarray[Any, Any]]) -> int:
    """Check ``inputs`` against the model's declared inputs; returns the row count.

    Rules: exactly the declared names; the declared datatype; the declared rank; fixed
    axes equal; variable axes >= 1; the same number of rows (axis 0, >= 1) in every
    input; floating-point values finite.
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
        for axis, (size, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want == -1 and size < 1:
                raise InvalidInputError(
                    f"input {name!r}: axis {axis} has length {size}, needs >= 1"
                )
            if want != -1 and size != want:
                raise InvalidInputError(
                    f"input {name!r}: shape {list(array.shape)}, axis {axis} must be {want} "
                    f"(expected {list(spec.shape)})"
                )
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            raise InvalidInputError(
                f"input {name!r}: {array.shape[0]} rows, other inputs have {rows}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInputError(f"input {name!r}: contains NaN or infinite values")
    assert rows is not None
    return rows


def _int_parameter(parameters: Mapping[str, Scalar], name: str, minimum: int, maximum: int) -> int:
    value = parameters.get(name)
    if value is None:
        raise InvalidInputError(f"parameter {name!r}: required (an integer {minimum}..{maximum})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"parameter {name!r}: must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidInputError(f"parameter {name!r}: {value} is outside {minimum}..{maximum}")
    return value


def input_dtype(metadata: ModelMetadata, name: str) -> np.dtype[Any]:
    """The numpy dtype of input ``name`` (for HTTP callers converting JSON numbers)."""
    return DATATYPES[metadata.input(name).datatype]
