"""The default model repository: digits-cnn, sunspots-lstm and digits-gan (version 1).

`QUICK` settings make tiny models in seconds for tests; their figures mean nothing.
The GAN comes last so it can be scored by the digits-cnn published just before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.config import apply_overrides
from training.pipelines.registry import export_checkpoint, family

DEFAULTS: tuple[tuple[str, str], ...] = (
    ("classifier", "digits-cnn"),
    ("forecaster", "sunspots-lstm"),
    ("gan", "digits-gan"),
)

QUICK: dict[str, dict[str, Any]] = {
    "classifier": {"epochs": 2, "conv_channels": (4, 8), "hidden": (16,)},
    "forecaster": {"epochs": 2, "hidden_size": 8, "layers": 1, "window": 12},
    "gan": {
        "epochs": 1,
        "gen_features": 8,
        "disc_features": 8,
        "latent_size": 8,
        "eval_samples": 100,
    },
}


def build_defaults(
    models_dir: Path,
    *,
    quick: bool = False,
    force: bool = False,
    checkpoint_dir: str = "runs",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train and export each default model whose folder ``models_dir/<name>/1`` is missing
    (all of them with `force`, as the next version). Returns the written version folders."""
    written: list[Path] = []
    for fam, name in DEFAULTS:
        if (models_dir / name / "1" / "model.onnx").is_file() and not force:
            log(f"{name}: present in {models_dir}, skipped")
            continue
        mod = family(fam)
        overrides: dict[str, Any] = {"name": name, "checkpoint_dir": checkpoint_dir}
        if quick:
            overrides |= QUICK[fam] | {"progress": False}
        cfg = apply_overrides(mod.CONFIG(), overrides, "defaults")
        start = time.perf_counter()
        ckpt = mod.train(cfg, models_dir)
        path = export_checkpoint(ckpt, models_dir)
        log(f"{name}: wrote {path} in {time.perf_counter() - start:.1f} s")
        written.append(path)
    return written
