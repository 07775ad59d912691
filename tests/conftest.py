"""Fixtures shared by every tier.

`model_repo`: a real model repository (digits-cnn/1, sunspots-lstm/1, digits-gan/1)
built once per test session by the real training pipelines with tiny settings
(`python -m training models --quick`). Set AXON_TEST_MODELS to reuse a repository
built earlier (it is checked, not trusted blindly: each version must have its files).

Tiers are folders: `pytest_collection_modifyitems` marks each test with the tier of its
top folder under tests/ (tests/unit → `unit`, …, tests/k8s → `k8s`), so `-m unit` and
`pytest tests/unit` select the same tests. Test files set no tier marker of their own;
one that disagrees with its folder, or a test outside every tier folder, stops the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEFAULT_MODELS = ("digits-cnn", "sunspots-lstm", "digits-gan")

# The gateway serves gRPC on a fixed default port (8001, Triton's); tests bind only free
# ports, so every gateway a test starts has no gRPC server unless the test gives it a
# port (`--grpc-port`, AXON_GRPC_PORT in the child's environment).
os.environ["AXON_GRPC_PORT"] = "0"

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "chaos", "load", "security", "k8s")
"""Each is a folder of tests/ and a marker in pyproject.toml, with the same name."""


def tier_of(path: Path) -> str | None:
    """The tier a test file belongs to: its top folder under tests/ (None outside one)."""
    try:
        top = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return top if top in TIERS else None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its folder's tier; refuse hand-set tier markers that disagree."""
    problems = []
    for item in items:
        tier = tier_of(item.path)
        own = sorted({m.name for m in item.iter_markers() if m.name in TIERS} - {tier})
        if tier is None:
            problems.append(
                f"{item.nodeid}: outside every tier folder (tests/{{{','.join(TIERS)}}})"
            )
        elif own:
            problems.append(
                f"{item.nodeid}: marked {', '.join(own)} but lives in tests/{tier}/; the folder "
                "sets the tier: remove the marker or move the test"
            )
        else:
            item.add_marker(tier)
    if problems:
        raise pytest.UsageError("test tiers come from folders:\n  " + "\n  ".join(problems))


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
