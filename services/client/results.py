"""Typed answers of the gateway's JSON endpoints, each read from its JSON (pure).

A field the gateway always sends is read with ``[]``: its absence is a
``ResponseFormatError`` (through ``parse``), not a silent default.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .codec import ResponseFormatError

T = TypeVar("T")


def parse(what: str, doc: object, build: Callable[[Mapping[str, Any]], T]) -> T:
    """``build(doc)``; a body of the wrong shape → ``ResponseFormatError`` naming ``what``."""
    if not isinstance(doc, Mapping):
        raise ResponseFormatError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    try:
        return build(doc)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, ResponseFormatError):
            raise
        problem = f"{type(exc).__name__}: {exc}"
        raise ResponseFormatError(f"{what}: unexpected body ({problem})") from None


@dataclass(frozen=True)
class ServerMetadata:
    """``GET /v2``."""

    name: str
    version: str
    extensions: tuple[str, ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerMetadata:
        return cls(str(doc["name"]), str(doc["version"]), tuple(doc.get("extensions", ())))


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model: name, OIP datatype, shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TensorSpec:
        return cls(str(doc["name"]), str(doc["datatype"]), tuple(int(d) for d in doc["shape"]))


@dataclass(frozen=True)
class ModelMetadata:
    """``GET /v2/models/{m}[/versions/{v}]``; ``parameters`` holds the task, labels,
    image, window, horizon … as the model's metadata.json says."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str | None:
        task = self.parameters.get("task")
        return task if isinstance(task, str) else None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelMetadata:
        return cls(
            name=str(doc["name"]),
            versions=tuple(str(v) for v in doc.get("versions", ())),
            platform=str(doc.get("platform", "")),
            inputs=tuple(TensorSpec.from_json(t) for t in doc["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in doc["outputs"]),
            parameters=dict(doc.get("parameters") or {}),
        )


@dataclass(frozen=True)
class VersionStatus:
    version: int
    ready: bool
    workers: int


@dataclass(frozen=True)
class ModelSummary:
    """One model of ``GET /v1/models``."""

    name: str
    task: str
    versions: tuple[VersionStatus, ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelSummary:
        versions = tuple(
            VersionStatus(int(v["version"]), bool(v["ready"]), int(v["workers"]))
            for v in doc["versions"]
        )
        return cls(str(doc["name"]), str(doc["task"]), versions)


def model_list(doc: Mapping[str, Any]) -> list[ModelSummary]:
    return [ModelSummary.from_json(m) for m in doc["models"]]


def model_stats(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Triton's statistics extension: one dict per model version (``name``,
    ``version``, ``inference_count``, ``execution_count``, ``inference_stats``, and
    Axon's ``axon`` {workers, expired, redeliveries, dead_letters})."""
    return [dict(entry) for entry in doc["model_stats"]]


@dataclass(frozen=True)
class Score:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the best class, and the ``top_k`` best (best first)."""

    label: str
    index: int
    probability: float
    top_k: tuple[Score, ...]


@dataclass(frozen=True)
class ClassifyResult:
    """``POST /v1/models/{m}/classify``: one prediction per image, in order."""

    model: str
    version: int
    predictions: tuple[Prediction, ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClassifyResult:
        predictions = []
        for p in doc["predictions"]:
            top = tuple(
                Score(str(s["label"]), int(s["index"]), float(s["probability"])) for s in p["top_k"]
            )
            predictions.append(
                Prediction(str(p["label"]), int(p["index"]), float(p["probability"]), top)
            )
        return cls(str(doc["model"]), int(doc["version"]), tuple(predictions))


@dataclass(frozen=True)
class ForecastResult:
    """``POST /v1/models/{m}/forecast``: ``forecasts`` is [series, horizon] (one row
    per history sent; a single history gives one row)."""

    model: str
    version: int
    horizon: int
    window: int | None
    forecasts: np.ndarray[Any, Any]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ForecastResult:
        window = doc.get("window")
        forecasts = np.asarray(doc["forecasts"], dtype=np.float32)
        if forecasts.ndim != 2:
            raise ResponseFormatError(f"forecast: forecasts of shape {forecasts.shape}, not 2-D")
        return cls(
            model=str(doc["model"]),
            version=int(doc["version"]),
            horizon=int(doc["horizon"]),
            window=None if window is None else int(window),
            forecasts=forecasts,
        )


@dataclass(frozen=True)
class GenerateResult:
    """``POST /v1/models/{m}/generate``: PNG files (``format="png"``, in ``pngs``) or
    pixel arrays [count, C, H, W] (``format="array"``, in ``images``); ``seed`` is the
    one used (the gateway picks one when none was given), so a result can be made again."""

    model: str
    version: int
    seed: int
    label: int | None
    format: str
    pngs: tuple[bytes, ...] = ()
    images: np.ndarray[Any, Any] | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GenerateResult:
        label, fmt = doc.get("label"), str(doc["format"])
        pngs: tuple[bytes, ...] = ()
        images = None
        if fmt == "png":
            pngs = tuple(base64.b64decode(image, validate=True) for image in doc["images"])
        else:
            images = np.asarray(doc["images"], dtype=np.float32)
        return cls(
            model=str(doc["model"]),
            version=int(doc["version"]),
            seed=int(doc["seed"]),
            label=None if label is None else int(label),
            format=fmt,
            pngs=pngs,
            images=images,
        )
