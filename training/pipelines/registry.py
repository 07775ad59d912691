"""The model families by their CLI name, and the checkpoint → repository export step."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from training.config import CommonConfig, from_dict
from training.errors import ConfigError
from training.pipelines import classify, forecast, generate
from training.pipelines.common import load_checkpoint, publish

FAMILIES: dict[str, ModuleType] = {
    "classifier": classify,
    "forecaster": forecast,
    "gan": generate,
}
_BY_CONFIG = {mod.CONFIG.__name__: mod for mod in FAMILIES.values()}


def family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ConfigError(f"family: unknown {name!r}; valid families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def export_checkpoint(
    path: Path, models_dir: Path, version: int | None = None, name: str | None = None
) -> Path:
    """Export a ``final.pt`` checkpoint into ``models_dir``; returns the version folder."""
    ckpt: dict[str, Any] = load_checkpoint(path)
    mod = _BY_CONFIG.get(ckpt["family"])
    if mod is None:
        raise ConfigError(f"checkpoint: {path} holds an unknown family {ckpt['family']!r}")
    cfg: CommonConfig = from_dict(mod.CONFIG, ckpt["config"])
    if name is not None:
        cfg = from_dict(mod.CONFIG, {**ckpt["config"], "name": name})
    if "meta" not in ckpt["extras"]:
        raise ConfigError(
            f"checkpoint: {path} is an intermediate checkpoint (best.pt/last.pt) without the "
            "evaluation results; export the final.pt that `axon train` writes"
        )
    state = ckpt["state_dict"]
    return publish(
        cfg,
        lambda: mod.export_plan(cfg, state, ckpt["extras"]),
        ckpt["extras"],
        models_dir,
        version,
        path.parent / "report",
    )
