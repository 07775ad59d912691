"""Run an exported model from the repository with ONNX Runtime (for augmentation and
scoring), so one family can use another family's *published* model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.errors import DataError


def resolve_version_dir(path: Path) -> Path:
    """``…/name/3`` stays; ``…/name`` becomes its highest version; else `DataError`."""
    if (path / "model.onnx").is_file() and (path / "metadata.json").is_file():
        return path
    if path.is_dir():
        found = sorted(
            (int(p.name), p)
            for p in path.iterdir()
            if p.name.isdigit() and (p / "model.onnx").is_file()
        )
        if found:
            return found[-1][1]
    raise DataError(f"model: {path} holds no model version (model.onnx + metadata.json)")


class OnnxModel:
    """A published model version: its metadata and a CPU ONNX Runtime session."""

    def __init__(self, path: Path) -> None:
        self.dir = resolve_version_dir(path)
        self.meta: dict[str, Any] = json.loads((self.dir / "metadata.json").read_text())
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.dir / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One output array for `feeds` (input name → array)."""
        result: np.ndarray = self.session.run([output], feeds)[0]
        return result


def generate(model: OnnxModel, labels: np.ndarray, seed: int) -> np.ndarray:
    """Images ``[N, C, H, W]`` from a generator for class ids `labels` ``[N]``
    (latents drawn as docs/model-repository.md says)."""
    meta = model.meta
    if meta.get("task") != "generate":
        raise DataError(f"model: {model.dir} is a {meta.get('task')!r} model, not a generator")
    z = np.random.default_rng(seed).standard_normal(
        (len(labels), int(meta["latent_size"])), dtype=np.float32
    )
    feeds = {"latent": z}
    if meta.get("conditional"):
        feeds["label"] = labels.astype(np.int64)
    return model.run("image", feeds)
