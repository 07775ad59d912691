"""docker/bentos/*.bentofile.yaml: each builds a Bento with the real `bentoml build`
(offline: packages are not locked), for the service it names, with the serving
dependencies of pyproject.toml and none of the training code."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.k8s.code_facts import service_class
from tests.k8s.manifests import DOCKER, ROOT

BENTOFILES = sorted(p.name for p in (DOCKER / "bentos").glob("*.bentofile.yaml"))


def serving_packages() -> set[str]:
    """pyproject's dependencies, with the CPU build of ONNX Runtime for every platform."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d.split(";")[0].strip() for d in deps if not d.startswith("onnxruntime-gpu")}


def test_one_bento_per_family() -> None:
    families = {f.split(".")[0] for f in BENTOFILES}
    assert families == {"classifier", "forecaster", "generator"}


@pytest.mark.parametrize("file", BENTOFILES)
def test_bentofile_matches_the_code(file: str) -> None:
    spec = yaml.safe_load((DOCKER / "bentos" / file).read_text())
    assert service_class(spec["service"]).family == file.split(".")[0]
    assert set(spec["python"]["packages"]) == serving_packages()
    assert not any("torch" in p for p in spec["python"]["packages"])


@pytest.mark.parametrize("file", BENTOFILES)
def test_bentoml_build(file: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = Path(sys.executable).with_name("bentoml")
    proc = subprocess.run(
        [str(bentoml), "build", "-f", str(DOCKER / "bentos" / file), str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    family = file.split(".")[0]
    (bento,) = [p for p in (tmp_path / "bentos" / f"axon-{family}").iterdir() if p.is_dir()]
    built = yaml.safe_load((bento / "bento.yaml").read_text())
    assert built["service"] == yaml.safe_load((DOCKER / "bentos" / file).read_text())["service"]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert serving_packages() <= set(requirements)
    assert (bento / "src" / "services" / "base.py").is_file()
    assert not (bento / "src" / "training").exists() and not (bento / "src" / "tests").exists()
