"""Fixtures shared by every tier.

`model_repo`: a real model repository (digits-cnn/1, sunspots-lstm/1, digits-gan/1)
built once per test session by the real training pipelines with tiny settings
(`python -m training models --quick`). Set AXON_TEST_MODELS to reuse a repository
built earlier (it is checked, not trusted blindly: each version must have its files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEFAULT_MODELS = ("digits-cnn", "sunspots-lstm", "digits-gan")


def _complete(repo: Path) -> bool:
    return all(
        (repo / m / "1" / f).is_file()
        for m in DEFAULT_MODELS
        for f in ("model.onnx", "metadata.json")
    )


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a model repository with the three default models (tiny, quick training)."""
    reuse = os.environ.get("AXON_TEST_MODELS")
    if reuse and _complete(Path(reuse)):
        return Path(reuse)
    root = tmp_path_factory.mktemp("models")
    repo = root / "repo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "models",
            "--quick",
            "--models-dir",
            str(repo),
            "--checkpoint-dir",
            str(root / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"building test models failed:\n{proc.stdout}\n{proc.stderr}"
    assert _complete(repo), f"model repository incomplete after build: {proc.stdout}"
    return repo
