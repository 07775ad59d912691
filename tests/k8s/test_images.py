"""Dockerfiles without a Docker engine: multi-stage, non-root, pinned bases, COPY
sources that exist and pass .dockerignore, entrypoints that are real commands, no
torch in serving images; and every Axon container in the manifests runs a real command
from an image one of these Dockerfiles builds."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.k8s.code_facts import command_problems
from tests.k8s.manifests import (
    DOCKER,
    ROOT,
    containers,
    copy_sources,
    dockerignore_patterns,
    dockerignored,
    kustomizations,
    parse_dockerfile,
    render,
)

DOCKERFILES = sorted(p.name for p in DOCKER.glob("Dockerfile.*"))
SERVING = ("Dockerfile.gateway", "Dockerfile.service", "Dockerfile.service-gpu")
IMAGES = {
    "axon-gateway": "Dockerfile.gateway",
    "axon-service": "Dockerfile.service",
    "axon-service-gpu": "Dockerfile.service-gpu",
    "axon-train": "Dockerfile.train",
    "axon-train-gpu": "Dockerfile.train",
}
"""Image name (last path part, no tag) → the Dockerfile that builds it."""


def test_the_four_images_exist() -> None:
    assert set(DOCKERFILES) == {*SERVING, "Dockerfile.train"}


@pytest.mark.parametrize("file", DOCKERFILES)
def test_multi_stage_non_root_pinned(file: str) -> None:
    df = parse_dockerfile(DOCKER / file)
    assert len(df.stages) >= 2, "build and runtime stages"
    user = df.last("USER")
    assert user is not None and user.split(":")[0] not in ("0", "root"), f"{file}: USER {user}"
    assert user.split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    for stage in df.stages:
        if stage.base in {s.alias for s in df.stages}:
            continue
        image = df.resolve(stage.base)
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and re.search(r"\d+\.\d+\.\d+", tag), f"{file}: {image} needs an exact tag"
        assert "latest" not in tag


@pytest.mark.parametrize("file", DOCKERFILES)
def test_copy_sources_exist_and_reach_the_build_context(file: str) -> None:
    df = parse_dockerfile(DOCKER / file)
    patterns = dockerignore_patterns()
    sources = list(copy_sources(df))
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{file}: COPY {source}: no such path"
        assert not dockerignored(source, patterns), f"{file}: {source} is in .dockerignore"


def test_dockerignore_matching_can_fail() -> None:
    patterns = dockerignore_patterns()
    assert dockerignored(".venv", patterns) and dockerignored("exported_models/x", patterns)
    assert dockerignored("services/__pycache__/a.pyc", patterns)
    assert not dockerignored("services/base.py", patterns)


@pytest.mark.parametrize("file", DOCKERFILES)
def test_entrypoint_is_a_real_command(file: str) -> None:
    df = parse_dockerfile(DOCKER / file)
    assert df.exec_form("ENTRYPOINT"), f"{file}: ENTRYPOINT in exec form"
    assert not command_problems(df.command()), command_problems(df.command())


@pytest.mark.parametrize("file", SERVING)
def test_serving_images_carry_no_torch(file: str) -> None:
    text = (DOCKER / file).read_text()
    runs = " ".join(v for s in parse_dockerfile(DOCKER / file).stages for k, v in s.instructions
                    if k == "RUN")  # fmt: skip
    assert "torch" not in runs and "[train]" not in runs
    assert "COPY training" not in text
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies if d.startswith("torch")]


def test_command_check_can_fail() -> None:
    assert command_problems(["python", "-m", "services.nothing_here"])
    assert command_problems(["bentoml", "serve", "services.base:Missing"])
    assert command_problems(["python", "-m", "training", "train", "no-such-family"])
    assert command_problems(["not-a-program"])
    assert command_problems(["python", "-m", "services.gateway", "--grpc-prot", "8001"])
    assert not command_problems(["python", "-m", "services.gateway", "--port", "8000"])
    assert not command_problems(["python", "-m", "services.gateway", "--grpc-port=8001"])


@pytest.mark.parametrize("relative", kustomizations())
def test_manifest_containers_run_real_commands_from_our_images(relative: str) -> None:
    for c in containers(render(relative)):
        image = c.spec["image"].rsplit("/", 1)[-1].partition(":")[0]
        if not image.startswith("axon-"):
            continue  # third-party image (redis)
        assert image in IMAGES, f"{c.where}: no Dockerfile builds {image}"
        df = parse_dockerfile(DOCKER / IMAGES[image])
        argv = c.argv or df.command()
        assert not command_problems(argv), (c.where, command_problems(argv))
        user = df.last("USER")
        assert user is not None
        assert str(c.pod["securityContext"]["runAsUser"]) == user.split(":")[0], c.where
        if relative.startswith("training"):
            continue
        declared = {p["containerPort"] for p in c.spec.get("ports", [])}
        for flag, port in re.findall(r"(--(?:[a-z]+-)?port)[= ](\d+)", " ".join(argv)):
            assert int(port) in declared, f"{c.where}: {flag} {port}, declares {declared}"
