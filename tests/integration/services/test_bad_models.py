"""Bad models are refused at start with a message that names the file and the problem:
in-process (``load_model``) and for a real worker process (non-zero exit)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.contract.errors import AxonError, ModelLoadError, ModelRepositoryError
from services.runtime.worker import load_model
from tests.support.redis import RedisServer
from tests.support.workers import worker_settings


def copy_model(model_repo: Path, tmp_path: Path, model: str = "digits-cnn") -> Path:
    shutil.copytree(model_repo / model / "1", tmp_path / model / "1")
    return tmp_path / model / "1"


def rewrite_metadata(folder: Path, **changes: object) -> None:
    path = folder / "metadata.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def wrong_sha(folder: Path) -> tuple[str, str]:
    rewrite_metadata(folder, sha256="0" * 64)
    return "model.onnx", "sha256 mismatch"


def missing_metadata(folder: Path) -> tuple[str, str]:
    (folder / "metadata.json").unlink()
    return "metadata.json", "missing"


def broken_onnx(folder: Path) -> tuple[str, str]:
    garbage = b"this is not an onnx protobuf" * 10
    (folder / "model.onnx").write_bytes(garbage)
    rewrite_metadata(folder, sha256=hashlib.sha256(garbage).hexdigest())
    return "model.onnx", "ONNX Runtime cannot load it"


def metadata_disagrees_with_graph(folder: Path) -> tuple[str, str]:
    document = json.loads((folder / "metadata.json").read_text())
    document["inputs"][0]["datatype"] = "FP64"
    rewrite_metadata(folder, inputs=document["inputs"])
    return "metadata.json", "is tensor(float) in the graph, metadata says FP64"


def unreadable_json(folder: Path) -> tuple[str, str]:
    (folder / "metadata.json").write_text("{not json")
    return "metadata.json", "not readable JSON"


BREAKAGES: list[Callable[[Path], tuple[str, str]]] = [
    wrong_sha,
    missing_metadata,
    broken_onnx,
    metadata_disagrees_with_graph,
    unreadable_json,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__)
def test_bad_model_is_refused_naming_the_file(
    breakage: Callable[[Path], tuple[str, str]], model_repo: Path, tmp_path: Path
) -> None:
    folder = copy_model(model_repo, tmp_path)
    filename, problem = breakage(folder)
    settings = worker_settings("redis://127.0.0.1:1/0", tmp_path, "digits-cnn")
    with pytest.raises((ModelRepositoryError, ModelLoadError)) as info:
        load_model(settings)
    assert str(folder / filename) in str(info.value)
    assert problem in str(info.value)


def test_unknown_version_is_refused(model_repo: Path, tmp_path: Path) -> None:
    copy_model(model_repo, tmp_path)
    settings = worker_settings("redis://127.0.0.1:1/0", tmp_path, "digits-cnn", model_version="7")
    with pytest.raises(AxonError, match="no such model version"):
        load_model(settings)


def test_latest_version_is_the_highest(model_repo: Path, tmp_path: Path) -> None:
    copy_model(model_repo, tmp_path)
    shutil.copytree(tmp_path / "digits-cnn" / "1", tmp_path / "digits-cnn" / "10")
    rewrite_metadata(tmp_path / "digits-cnn" / "10", version=10)
    shutil.copytree(tmp_path / "digits-cnn" / "1", tmp_path / "digits-cnn" / "9")
    rewrite_metadata(tmp_path / "digits-cnn" / "9", version=9)
    session = load_model(worker_settings("redis://127.0.0.1:1/0", tmp_path, "digits-cnn"))
    assert session.metadata.version == 10


def test_worker_process_exits_with_the_reason(
    redis_server: RedisServer, model_repo: Path, tmp_path: Path
) -> None:
    folder = copy_model(model_repo, tmp_path)
    wrong_sha(folder)
    env = {
        **os.environ,
        "AXON_REDIS_URL": redis_server.url,
        "AXON_MODELS_DIR": str(tmp_path),
        "AXON_MODEL": "digits-cnn",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.runtime.standalone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert f"{folder / 'model.onnx'}: sha256 mismatch" in proc.stderr
