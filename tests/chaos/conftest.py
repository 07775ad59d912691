"""Chaos fixtures: a repository holding the deliberately slow ``chaos-cnn`` model, and a
``procs`` owner that kills every process a scenario started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Procs
from tests.chaos.slow_model import write_slow_classifier


@pytest.fixture(scope="session")
def chaos_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chaos-models")
    write_slow_classifier(root)
    return root


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    owner = Procs(tmp_path)
    try:
        yield owner
    finally:
        owner.close()
