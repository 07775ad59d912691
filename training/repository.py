"""Writes model versions into the repository (layout: docs/model-repository.md).

A version is written into a hidden temporary folder and renamed into place, so a
reader never sees a half-written version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.errors import ConfigError

SCHEMA_VERSION = 1
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
REQUIRED_KEYS = (
    "schema_version",
    "name",
    "version",
    "task",
    "architecture",
    "inputs",
    "outputs",
    "opset",
    "training",
    "dataset",
    "metrics",
    "parity",
    "sha256",
    "created_at",
    "framework",
)
TASK_KEYS = {
    "classify": ("labels", "image"),
    "forecast": ("window", "horizon"),
    "generate": ("latent_size", "conditional", "num_classes", "image"),
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions(models_dir: Path, name: str) -> list[int]:
    """The integer versions present for `name`, ascending."""
    root = models_dir / name
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


def next_version(models_dir: Path, name: str) -> int:
    present = versions(models_dir, name)
    return present[-1] + 1 if present else 1


def framework_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def check_metadata(meta: Mapping[str, Any]) -> None:
    """Raise `ValueError` naming the first missing or malformed key."""
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(f"metadata.json: missing key {key!r}")
    task = meta["task"]
    if task not in TASK_KEYS:
        raise ValueError(f"metadata.json: task {task!r} is not one of {sorted(TASK_KEYS)}")
    for key in TASK_KEYS[task]:
        if key not in meta:
            raise ValueError(f"metadata.json: task {task!r} needs key {key!r}")
    for group in ("inputs", "outputs"):
        for t in meta[group]:
            if set(t) != {"name", "datatype", "shape"}:
                raise ValueError(f"metadata.json: {group} entry {t} needs name, datatype, shape")
            if not all(isinstance(d, int) and (d == -1 or d > 0) for d in t["shape"]):
                raise ValueError(f"metadata.json: {group} {t['name']!r} has a bad shape")
    if not re.fullmatch(r"[0-9a-f]{64}", str(meta["sha256"])):
        raise ValueError("metadata.json: sha256 must be 64 hex digits")


def write_version(
    models_dir: Path,
    name: str,
    onnx_file: Path,
    metadata: Mapping[str, Any],
    report_dir: Path | None,
    version: int | None = None,
) -> Path:
    """Copy `onnx_file` and the report into ``models_dir/name/version`` with metadata.json.

    `metadata` holds everything but name, version, sha256, created_at, framework and
    schema_version, which are filled in here. Returns the version folder. An explicit
    `version` that already exists is refused.
    """
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"name: {name!r} is not a valid model name (lowercase, digits, '-')")
    version = version or next_version(models_dir, name)
    final = models_dir / name / str(version)
    if final.exists():
        raise ConfigError(f"version: {final} already exists; pick another version or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shutil.copyfile(onnx_file, tmp / "model.onnx")
        if report_dir is not None and report_dir.is_dir():
            shutil.copytree(report_dir, tmp / "report")
        meta = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            **metadata,
            "sha256": sha256_file(tmp / "model.onnx"),
            "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "framework": framework_versions(),
        }
        check_metadata(meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
