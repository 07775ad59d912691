"""What every family's pipeline shares: the final checkpoint and the export step.

A pipeline ends by writing ``<checkpoint_dir>/<name>/final.pt`` (config, weights and
`extras`: everything metadata.json needs besides the file itself). `publish` turns such
a checkpoint into a repository version; ``axon export`` calls the same function.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import CommonConfig, to_dict
from training.errors import ConfigError
from training.export import TensorSpec, export_onnx
from training.repository import write_version


@dataclass
class ExportPlan:
    """How to export one trained network: the wrapper module and its tensors."""

    module: nn.Module
    example: dict[str, torch.Tensor]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cases: list[dict[str, torch.Tensor]]
    legacy: bool = False


def run_dir(cfg: CommonConfig) -> Path:
    return Path(cfg.checkpoint_dir) / cfg.name


def report_dir(cfg: CommonConfig) -> Path:
    path = run_dir(cfg) / "report"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_final(
    cfg: CommonConfig, state_dict: Mapping[str, torch.Tensor], extras: dict[str, Any]
) -> Path:
    """Write the checkpoint `publish` and ``axon export`` start from. `extras` is made
    plain JSON data (NumPy scalars and arrays converted) so it loads with weights_only."""
    extras = json.loads(json.dumps(extras, default=_plain))
    path = run_dir(cfg) / "final.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "family": type(cfg).__name__,
            "config": to_dict(cfg),
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
            "extras": extras,
        },
        path,
    )
    return path


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by Axon (tensors and plain data only)."""
    if not path.is_file():
        raise ConfigError(f"checkpoint: {path} does not exist")
    try:
        data: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise ConfigError(f"checkpoint: {path} is not an Axon checkpoint: {exc}") from exc
    for key in ("family", "config", "state_dict", "extras"):
        if key not in data:
            raise ConfigError(f"checkpoint: {path} lacks {key!r}; was it written by Axon?")
    return data


def publish(
    cfg: CommonConfig,
    plan_for: Callable[[], ExportPlan],
    extras: Mapping[str, Any],
    models_dir: Path,
    version: int | None = None,
    report: Path | None = None,
) -> Path:
    """Export with the parity check and write ``models_dir/<name>/<version>``; the plots
    in `report` (default: the run's report folder) are copied along."""
    plan = plan_for()
    with tempfile.TemporaryDirectory(prefix="axon-export-") as tmp:
        result = export_onnx(
            plan.module,
            plan.example,
            plan.inputs,
            plan.outputs,
            Path(tmp) / "model.onnx",
            plan.cases,
            legacy=plan.legacy,
        )
        metadata = {
            **extras["meta"],
            "inputs": [s.to_json() for s in plan.inputs],
            "outputs": [s.to_json() for s in plan.outputs],
            "opset": result.opset,
            "training": to_dict(cfg),
            "parity": result.parity,
        }
        report = report or run_dir(cfg) / "report"
        return write_version(
            models_dir,
            cfg.name,
            result.path,
            metadata,
            report if report.is_dir() else None,
            version,
        )
