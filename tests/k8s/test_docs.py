"""docs/deployment.md names only paths that exist: kustomizations it applies,
Dockerfiles and bentofiles it builds, and the Job names it waits for."""

from __future__ import annotations

import re

from tests.k8s.manifests import K8S, ROOT, kustomizations, of_kind, render

DOC = (ROOT / "docs" / "deployment.md").read_text()


def test_applied_kustomizations_exist() -> None:
    applied = re.findall(r"kubectl apply -k (k8s/[\w/{},-]+)", DOC)
    assert applied
    known = set(kustomizations())
    for path in applied:
        relative = path.removeprefix("k8s/")
        assert relative in known, f"docs apply {path}, which is not a kustomization"


def test_built_files_exist() -> None:
    files = re.findall(r"(?:docker build|bentoml build) -f (\S+)", DOC)
    assert len(files) >= 5
    for file in files:
        assert (ROOT / file).is_file(), f"docs build {file}, which does not exist"


def test_awaited_jobs_exist() -> None:
    waited = set(re.findall(r"wait --for=condition=complete job/([\w-]+)", DOC))
    assert waited
    jobs = {
        j["metadata"]["name"]
        for k in kustomizations()
        if k.startswith("training/")
        for j in of_kind(render(k), "Job")
    }
    assert waited <= jobs


def test_every_kustomization_is_documented() -> None:
    readme = (K8S / "README.md").read_text()
    for relative in kustomizations():
        top = relative.split("/")[0]
        assert f"`{top}/" in readme, f"k8s/README.md does not mention {top}/"
