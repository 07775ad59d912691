"""Model metadata, the contract between training, workers and the gateway: the parsed,
validated ``metadata.json`` (schema_version 1, docs/model-repository.md) and its tensor
specs. Pure: no file or ONNX access (``services.runtime.repository`` reads the files).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.contract.codec import DATATYPES
from services.contract.errors import ModelRepositoryError

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION = re.compile(r"^[1-9][0-9]*$")
TASKS = ("classify", "forecast", "generate")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

REQUIRED_TENSORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "classify": (("image",), ("logits", "probabilities")),
    "forecast": (("history",), ("forecast",)),
    "generate": (("latent",), ("image",)),
}
"""Per task: the input and output names the metadata must declare."""


DEFAULT_MAX_AXIS = 4096
"""Longest a variable non-batch axis may be when metadata.json declares no bound for it
(a request can otherwise make a worker allocate whatever its body encodes)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: OIP datatype and shape (-1 = variable; axis 0 = batch).

    ``max_shape`` bounds each variable axis but the batch axis (same rank; the batch
    axis is bounded by the gateway's ``AXON_MAX_ROWS``): from the spec's ``max_shape``
    in metadata.json, else ``DEFAULT_MAX_AXIS``. ``value_range`` is the inclusive range
    of values a model accepts (e.g. the class ids of a label input), or None for any.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    max_shape: tuple[int, ...] = ()
    value_range: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed, validated ``metadata.json``; ``raw`` is the whole document as read."""

    name: str
    version: int
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    raw: Mapping[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.raw.get("labels", []))

    @property
    def window(self) -> int | None:
        value = self.raw.get("window")
        return int(value) if value is not None else None

    @property
    def horizon(self) -> int | None:
        value = self.raw.get("horizon")
        return int(value) if value is not None else None

    @property
    def latent_size(self) -> int | None:
        value = self.raw.get("latent_size")
        return int(value) if value is not None else None

    @property
    def conditional(self) -> bool:
        return bool(self.raw.get("conditional", False))

    @property
    def num_classes(self) -> int:
        return int(self.raw.get("num_classes", 0))

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)


def parse_metadata(document: object, source: Path) -> ModelMetadata:
    """Validate a metadata.json document (schema_version 1); ``source`` names it in errors."""

    def fail(problem: str) -> ModelRepositoryError:
        return ModelRepositoryError(f"{source}: {problem}")

    if not isinstance(document, dict):
        raise fail("top level must be a JSON object")
    if document.get("schema_version") != 1:
        raise fail(f"schema_version must be 1, got {document.get('schema_version')!r}")
    name = document.get("name")
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise fail(f"name {name!r} must match {MODEL_NAME.pattern}")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise fail(f"version {version!r} must be a positive integer")
    task = document.get("task")
    if task not in TASKS:
        raise fail(f"task {task!r} must be one of {', '.join(TASKS)}")
    sha = document.get("sha256")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise fail("sha256 must be 64 lowercase hex digits")
    inputs = _specs(document.get("inputs"), "inputs", fail)
    outputs = _specs(document.get("outputs"), "outputs", fail)
    needed_in, needed_out = REQUIRED_TENSORS[task]
    for needed, specs, where in ((needed_in, inputs, "inputs"), (needed_out, outputs, "outputs")):
        names = {spec.name for spec in specs}
        for tensor in needed:
            if tensor not in names:
                raise fail(f"{where} must declare {tensor!r} for task {task!r}")
    _check_task_fields(task, document, inputs, outputs, fail)
    inputs = _task_bounds(task, document, inputs, fail)
    return ModelMetadata(
        name=name,
        version=version,
        task=task,
        inputs=inputs,
        outputs=outputs,
        sha256=sha,
        raw=document,
    )


def _specs(value: object, where: str, fail: Any) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise fail(f"{where} must be a non-empty list of tensor specs")
    specs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(f"{where}[{index}] must be an object with name, datatype, shape")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not name:
            raise fail(f"{where}[{index}].name must be a non-empty string")
        if datatype not in DATATYPES:
            raise fail(f"{where}[{index}] ({name}): datatype {datatype!r} is not supported")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and (d == -1 or d > 0) for d in shape)
        ):
            raise fail(f"{where}[{index}] ({name}): shape must list dimensions > 0 or -1")
        if shape[0] != -1:
            raise fail(f"{where}[{index}] ({name}): the first axis is the batch axis, must be -1")
        specs.append(
            TensorSpec(
                name=name,
                datatype=datatype,
                shape=tuple(shape),
                max_shape=_max_shape(
                    item.get("max_shape"), shape, f"{where}[{index}] ({name})", fail
                ),
                value_range=_value_range(item.get("range"), f"{where}[{index}] ({name})", fail),
            )
        )
    if len({spec.name for spec in specs}) != len(specs):
        raise fail(f"{where}: tensor names must be unique")
    return tuple(specs)


def _max_shape(value: object, shape: list[int], where: str, fail: Any) -> tuple[int, ...]:
    """The declared ``max_shape`` (validated against ``shape``), else the default bound."""
    if value is None:
        return tuple(-1 if axis == 0 else d if d != -1 else DEFAULT_MAX_AXIS
                     for axis, d in enumerate(shape))  # fmt: skip
    if (
        not isinstance(value, list)
        or len(value) != len(shape)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    ):
        raise fail(f"{where}: max_shape must be a list of {len(shape)} integers")
    bounds = []
    for axis, (size, bound) in enumerate(zip(shape, value, strict=True)):
        if size != -1:
            bounds.append(size)
        elif axis == 0 or bound == -1:  # the batch axis; or "unbounded" = the default
            bounds.append(DEFAULT_MAX_AXIS if axis else -1)
        elif bound < 1:
            raise fail(f"{where}: max_shape[{axis}] must be >= 1 (or -1), got {bound}")
        else:
            bounds.append(bound)
    return tuple(bounds)


def _value_range(value: object, where: str, fail: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or value[0] > value[1]
    ):
        raise fail(f"{where}: range must be [low, high] with low <= high")
    return float(value[0]), float(value[1])


def _bound_variable_axes(spec: TensorSpec, limit: int) -> TensorSpec:
    """``spec`` with every variable axis but the batch axis bounded at ``limit``."""
    bounds = tuple(
        limit if axis and size == -1 else bound
        for axis, (size, bound) in enumerate(zip(spec.shape, spec.max_shape, strict=True))
    )
    return replace(spec, max_shape=bounds)


def _task_bounds(
    task: str, document: dict[str, Any], inputs: tuple[TensorSpec, ...], fail: Any
) -> tuple[TensorSpec, ...]:
    """Bounds implied by task fields: a forecaster's ``max_history`` bounds the time axis
    of ``history`` (over its ``max_shape``); a conditional generator's ``label`` takes
    ``0..num_classes-1`` unless its spec declares a ``range``."""
    if task == "forecast" and "max_history" in document:
        limit = document["max_history"]
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise fail(f"max_history must be a positive integer, got {limit!r}")
        inputs = tuple(
            _bound_variable_axes(spec, limit) if spec.name == "history" else spec for spec in inputs
        )
    if task == "generate" and document.get("conditional"):
        classes = float(int(document["num_classes"]) - 1)
        inputs = tuple(
            replace(spec, value_range=(0.0, classes))
            if spec.name == "label" and spec.value_range is None
            else spec
            for spec in inputs
        )
    return inputs


def _check_task_fields(
    task: str,
    document: dict[str, Any],
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    fail: Any,
) -> None:
    def positive(key: str) -> int:
        value = document.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail(f"{key} must be a positive integer for task {task!r}, got {value!r}")
        return value

    if task == "classify":
        labels = document.get("labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
        ):
            raise fail("labels must be a non-empty list of strings for task 'classify'")
        probabilities = next(spec for spec in outputs if spec.name == "probabilities")
        if probabilities.shape[-1] not in (-1, len(labels)):
            raise fail(
                f"outputs 'probabilities' has {probabilities.shape[-1]} classes, "
                f"labels has {len(labels)}"
            )
    elif task == "forecast":
        positive("window")
        horizon = positive("horizon")
        forecast = next(spec for spec in outputs if spec.name == "forecast")
        if forecast.shape[-1] not in (-1, horizon):
            raise fail(f"outputs 'forecast' has {forecast.shape[-1]} steps, horizon is {horizon}")
    else:
        latent_size = positive("latent_size")
        latent = next(spec for spec in inputs if spec.name == "latent")
        if latent.shape != (-1, latent_size):
            raise fail(
                f"inputs 'latent' shape must be [-1, {latent_size}], got {list(latent.shape)}"
            )
        conditional = document.get("conditional", False)
        if not isinstance(conditional, bool):
            raise fail("conditional must be true or false")
        if conditional:
            num_classes = positive("num_classes")
            del num_classes
            if "label" not in {spec.name for spec in inputs}:
                raise fail("inputs must declare 'label' for a conditional generator")
