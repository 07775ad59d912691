"""A second version of a model family as its own Deployment (k8s/rollouts/, written by
scripts/k8s_rollout.py), and per-family configuration.

The rollouts are rendered the way they are applied: added to the resources of a serving
overlay. A copy of k8s/ gets one rollout per family (the shipped one and one generated
for each other family), every serving overlay includes them all, and the checks the
other modules run on the repository's overlays run again on that copy, unchanged. On top
of those: each version's objects select only that version's pods, the copy pins its
version in a ConfigMap of its own and scales on its own stream, adding a rollout leaves
every other object as it was, and a change to one family's settings rolls no other
family."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.contract import jobs, protocol
from services.runtime.settings import WorkerSettings
from tests.k8s import test_cluster_semantics_queue as queue
from tests.k8s import test_cluster_semantics_serving as serving
from tests.k8s import (
    test_config,
    test_images,
    test_policy,
    test_ports,
    test_render_and_schema,
)
from tests.k8s.manifests import (
    ROLLOUTS,
    ROOT,
    SERVING_OVERLAYS,
    Obj,
    build,
    find,
    k8s_tree,
    kustomizations,
    name,
    of_kind,
    pod_labels,
    pod_spec,
    render,
)
from tests.k8s.test_cluster_semantics_queue import Pod, admits, pod_of, selects
from tests.k8s.test_config import family, model_services, provided

REPO_K8S = ROOT / "k8s"
SCRIPT = ROOT / "scripts" / "k8s_rollout.py"
NAME = "app.kubernetes.io/name"
SHIPPED = [k for k in kustomizations() if k.startswith(f"{ROLLOUTS}/")]


def read_env(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    return dict(ln.split("=", 1) for ln in lines)


def pinned(k8s: Path, fam: str) -> tuple[str, int]:
    """The model and version base/{fam} serves."""
    env = read_env(k8s / "base" / fam / f"{fam}.env")
    return env[f"AXON_{fam.upper()}_MODEL"], int(env[f"AXON_{fam.upper()}_MODEL_VERSION"])


FAMILIES = sorted(
    p.parent.name for p in (REPO_K8S / "base").glob("*/*.env") if p.stem == p.parent.name
)


def parse_rollout(relative: str) -> tuple[str, int]:
    match = re.fullmatch(rf"{ROLLOUTS}/(\w+)-v(\d+)", relative)
    assert match, f"k8s/{relative}: name it {{family}}-v{{version}}"
    return match[1], int(match[2])


def script(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def include(overlay: Path, rollouts: list[str]) -> None:
    """Add ``rollouts`` (relative to k8s/) to the resources of ``overlay``."""
    path = overlay / "kustomization.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["resources"] += [f"../../{r}" for r in rollouts]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def rolled_tree(root: Path) -> list[str]:
    """Copy k8s/ to ``root``, write a rollout of every family there (its pinned version
    + 1, the shipped ones as they are) and add them all to every serving overlay."""
    shutil.copytree(REPO_K8S, root)
    rollouts = set(SHIPPED)
    for fam in FAMILIES:
        if not any(parse_rollout(r)[0] == fam for r in SHIPPED):
            version = pinned(root, fam)[1] + 1
            script(fam, str(version), "--k8s", str(root))
            rollouts.add(f"{ROLLOUTS}/{fam}-v{version}")
    for overlay in SERVING_OVERLAYS:
        if not builds_on_a_serving_overlay(root, overlay):  # else it has them through it
            include(root / overlay, sorted(rollouts))
    return sorted(rollouts)


def builds_on_a_serving_overlay(root: Path, overlay: str) -> bool:
    """``overlay`` lists another serving overlay among its resources (overlays/scale-to-zero
    is overlays/cpu plus a component)."""
    doc = yaml.safe_load((root / overlay / "kustomization.yaml").read_text())
    others = {(root / o).resolve() for o in SERVING_OVERLAYS if o != overlay}
    return any((root / overlay / r).resolve() in others for r in doc.get("resources", []))


@pytest.fixture(scope="module")
def rolled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """While active, ``render("overlays/cpu")`` etc. render the copy with the rollouts."""
    root = tmp_path_factory.mktemp("rolled") / "k8s"
    rollouts = rolled_tree(root)
    with k8s_tree(root):
        yield rollouts


def second_versions(objs: tuple[Obj, ...], rollouts: list[str]) -> Iterator[tuple[str, int, Obj]]:
    """(family, version, Deployment) of each rollout in ``objs``."""
    for relative in rollouts:
        fam, version = parse_rollout(relative)
        yield fam, version, find(objs, "Deployment", f"axon-{fam}-v{version}")


def settings_of(objs: tuple[Obj, ...], deployment: Obj) -> WorkerSettings:
    (c,) = [c for c in model_services(objs) if c.workload is deployment]
    env = {k: v.strip("<>") for k, v in provided(c, objs).items()}
    return WorkerSettings.from_env(env, family(c))


# --- the shipped rollouts ----------------------------------------------------------------


def test_a_rollout_is_shipped_and_checked() -> None:
    assert SHIPPED, "no k8s/rollouts/*: the checks below would prove nothing"
    for relative in SHIPPED:
        fam, _ = parse_rollout(relative)
        assert fam in FAMILIES, relative


@pytest.mark.parametrize("relative", SHIPPED)
def test_shipped_rollouts_are_what_the_script_writes(relative: str) -> None:
    """Nothing in a rollout is written by hand: regenerate it when the base, the KEDA
    component or the stream key changes (`make k8s-rollout FAMILY=… VERSION=…`)."""
    fam, version = parse_rollout(relative)
    shipped = (REPO_K8S / relative / "kustomization.yaml").read_text()
    assert shipped == script(fam, str(version), "--print"), (
        f"k8s/{relative} is stale: make k8s-rollout FAMILY={fam} VERSION={version}"
    )
    assert sorted(p.name for p in (REPO_K8S / relative).iterdir()) == ["kustomization.yaml"]


@pytest.mark.parametrize("relative", SHIPPED)
def test_a_rollout_renders_one_version_of_one_family(relative: str) -> None:
    fam, version = parse_rollout(relative)
    app = f"axon-{fam}-v{version}"
    objs = render(relative)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "ScaledObject", "Service"
    ], kinds  # fmt: skip
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            assert re.fullmatch(
                rf"axon-{fam}-config-v{version}-[a-z0-9]{{10}}", obj["metadata"]["name"]
            )
        else:
            assert obj["metadata"]["name"] == app, name(obj)
        # `kubectl delete … -l app.kubernetes.io/name=…` removes exactly these.
        assert obj["metadata"]["labels"][NAME] == app, name(obj)
    (configmap,) = of_kind(objs, "ConfigMap")
    assert configmap["data"][f"AXON_{fam.upper()}_MODEL_VERSION"] == str(version)


def test_the_script_refuses_what_would_not_work(tmp_path: Path) -> None:
    for args in (["nosuchfamily", "2"], ["classifier", str(pinned(REPO_K8S, "classifier")[1])]):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--print"], capture_output=True, text=True
        )
        assert proc.returncode != 0 and proc.stderr.strip(), args
    # A ScaledObject without its job-lane trigger: the copy would not see v2's jobs.
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO_K8S, k8s)
    path = k8s / "components" / "keda" / "scaledobjects.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["spec"]["triggers"] = [
            t for t in doc["spec"]["triggers"] if ":qj:" not in t["metadata"]["stream"]
        ]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "classifier", "2", "--k8s", str(k8s), "--print"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "axon:qj:" in proc.stderr, proc.stderr


# --- the overlays with every rollout added: the checks of the other modules -----------

OverlayCheck = Callable[[str], Any]
CHECKS: dict[str, OverlayCheck] = {
    "schema 1.30": lambda o: test_render_and_schema.test_every_object_validates(o, "1.30"),
    "schema latest": lambda o: test_render_and_schema.test_every_object_validates(
        o, test_render_and_schema.KUBERNETES_VERSIONS[-1]
    ),
    "requests and limits": test_policy.test_every_container_has_requests_and_limits,
    "probes": test_policy.test_long_running_containers_have_probes,
    "locked down": test_policy.test_every_container_is_locked_down,
    "images pinned": test_policy.test_every_image_is_pinned,
    "services select pods": test_policy.test_every_service_selects_pods_on_a_named_port,
    "PDB and autoscaler per Deployment": (
        test_policy.test_selectors_and_scale_targets_point_at_workloads
    ),
    "references exist": test_policy.test_referenced_configmaps_secrets_and_claims_exist,
    "network policies": test_policy.test_network_policies,
    "termination grace": test_policy.test_termination_grace_covers_a_drain,
    "configmap keys read": test_config.test_every_configmap_key_is_read_by_the_pods_that_get_it,
    "settings given": test_config.test_every_setting_the_code_reads_is_given,
    "settings build": test_config.test_settings_build_from_the_deployed_values,
    "redis urls": test_config.test_redis_urls_reach_the_redis_service_with_its_password,
    "own stream": test_config.test_keda_scales_each_service_on_its_own_stream,
    "stream length": queue.test_keda_scales_on_the_stream_length_of_each_model_version,
    "keda reaches redis": queue.test_redis_admits_the_keda_operator_of_either_install,
    "drain at the minimum": queue.test_a_drain_at_the_minimum_leaves_a_pod_and_is_not_blocked,
    "service drain": serving.test_model_service_drain_fits_bentoml_and_the_grace_period,
    "service ports admitted": test_ports.test_every_service_port_gets_through_the_network_policies,
    "probe ports": test_ports.test_probes_target_ports_the_container_declares,
    "real commands": test_images.test_manifest_containers_run_real_commands_from_our_images,
}  # fmt: skip


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_overlays_with_rollouts_pass_every_overlay_check(
    rolled: list[str], check: str, overlay: str
) -> None:
    CHECKS[check](overlay)


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_every_rollout_is_in_the_rendered_overlay(rolled: list[str], overlay: str) -> None:
    objs = render(overlay)
    found = list(second_versions(objs, rolled))
    assert {f for f, _, _ in found} == set(FAMILIES)
    assert len(of_kind(objs, "Deployment")) == 1 + 2 * len(FAMILIES)


# --- versions side by side ------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_each_version_pins_its_own_version_and_stream(rolled: list[str], overlay: str) -> None:
    objs = render(overlay)
    for fam, version, deployment in second_versions(objs, rolled):
        first = find(objs, "Deployment", f"axon-{fam}")
        model, v1 = pinned(REPO_K8S, fam)
        new, old = settings_of(objs, deployment), settings_of(objs, first)
        assert (new.model, new.model_version) == (model, version), name(deployment)
        assert (old.model, old.model_version) == (model, v1), name(first)
        # Each Deployment reads its own family ConfigMap, the shared one, and no other.
        refs = [
            [s["configMapRef"]["name"] for s in pod_spec(d)["containers"][0]["envFrom"]]  # type: ignore[index]
            for d in (first, deployment)
        ]
        assert refs[0][0] == refs[1][0] and refs[0][0].startswith("axon-config-"), refs
        assert refs[0][1].startswith(f"axon-{fam}-config-"), refs
        assert refs[1][1].startswith(f"axon-{fam}-config-v{version}-"), refs
        (scaled,) = [
            s
            for s in of_kind(objs, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        ]
        triggers = queue.version_triggers(objs, scaled)  # the copy's settings: version 2
        assert triggers.request["metadata"]["stream"] == protocol.stream_key(model, version)
        assert triggers.job["metadata"]["stream"] == jobs.job_stream_key(model, version)
    streams = [
        t["metadata"]["stream"]
        for s in of_kind(objs, "ScaledObject")
        for t in s["spec"]["triggers"]
    ]
    assert len(streams) == len(set(streams)), f"two ScaledObjects on one stream: {streams}"


def _selector(obj: Obj) -> dict[str, Any] | None:
    """The pod selector of a Deployment, StatefulSet, PodDisruptionBudget or Service."""
    if obj["kind"] == "Service":
        return {"matchLabels": obj["spec"]["selector"]}
    if obj["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget"):
        return obj["spec"]["selector"]  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_each_version_selects_only_its_own_pods(rolled: list[str], overlay: str) -> None:
    """v1's Deployment, PodDisruptionBudget and Service never select v2's pods, nor v2's
    v1's: each selector matches the pod template of exactly one workload, its own."""
    objs = render(overlay)
    workloads = [o for o in objs if pod_spec(o) is not None]
    for obj in objs:
        selector = _selector(obj)
        if selector is None:
            continue
        hits = [w["metadata"]["name"] for w in workloads if selects(selector, pod_labels(w))]
        expected = obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            assert hits == [expected], f"{name(obj)} selects the pods of {hits}"
        else:
            assert len(hits) == 1 and hits[0] == expected, f"{name(obj)} selects {hits}"
    for scaled in of_kind(objs, "ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] == scaled["metadata"]["name"]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_the_second_version_is_reached_and_reaches_redis(rolled: list[str], overlay: str) -> None:
    """The default-deny policies admit the copy as they admit v1: the gateway and
    Prometheus reach its http port, it reaches Redis; the PodMonitor scrapes it."""
    objs = render(overlay)
    policies = of_kind(objs, "NetworkPolicy")
    gateway = pod_of(find(objs, "Deployment", "axon-gateway"))
    redis = pod_of(find(objs, "StatefulSet", "axon-redis"))
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    (monitor,) = of_kind(objs, "PodMonitor")
    for _, _, deployment in second_versions(objs, rolled):
        pod = pod_of(deployment)
        http = pod.ports["http"]
        assert admits(policies, gateway, pod, http), name(deployment)
        assert admits(policies, prometheus, pod, http), name(deployment)
        assert admits(policies, pod, redis, redis.ports["redis"]), name(deployment)
        assert selects(monitor["spec"]["selector"], pod.labels), name(deployment)


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_adding_a_rollout_changes_no_other_object(rolled: list[str], overlay: str) -> None:
    """Applying the overlay with a rollout added creates the copy's objects and leaves
    every object of the overlay without it (v1's included) byte for byte as it was."""
    plain = {name(o): yaml.safe_dump(o) for o in build(REPO_K8S / overlay)}
    with_rollouts = {name(o): yaml.safe_dump(o) for o in render(overlay)}
    assert set(plain) <= set(with_rollouts)
    changed = [n for n in plain if plain[n] != with_rollouts[n]]
    assert not changed, f"a rollout changes {changed}"
    added = {n.split("/", 1)[1] for n in set(with_rollouts) - set(plain)}
    prefixes = [f"axon-{f}-v{v}" for f, v in map(parse_rollout, rolled)]
    prefixes += [f"axon-{f}-config-v{v}-" for f, v in map(parse_rollout, rolled)]
    assert all(any(a.startswith(p) for p in prefixes) for a in added), added


# --- configuration per family -------------------------------------------------------------

SETTING_FILES = {
    **{f"base/{f}/{f}.env": {f"axon-{f}"} for f in FAMILIES},
    "base/gateway.env": {"axon-gateway"},
    # The settings every model service shares: a change rolls the three families.
    "base/axon.env": {f"axon-{f}" for f in FAMILIES},
}
"""Each settings file, and the workloads a change in it rolls (all others keep their
pod template)."""


def _workloads(objs: tuple[Obj, ...]) -> dict[str, str]:
    return {o["metadata"]["name"]: yaml.safe_dump(o) for o in objs if pod_spec(o) is not None}


@pytest.mark.parametrize("file", sorted(SETTING_FILES))
def test_a_settings_change_rolls_only_the_workloads_that_read_it(tmp_path: Path, file: str) -> None:
    root = tmp_path / "k8s"
    shutil.copytree(REPO_K8S, root)
    env = read_env(root / file)
    assert env, file
    key = next(iter(env))
    for overlay in SERVING_OVERLAYS:
        before = _workloads(build(root / overlay))
        path = root / file
        path.write_text(re.sub(rf"(?m)^{key}=.*$", f"{key}={env[key]}-changed", path.read_text()))
        after = _workloads(build(root / overlay))
        path.write_text((REPO_K8S / file).read_text())
        assert set(before) == set(after)
        rolled_ = {w for w in before if before[w] != after[w]}
        assert rolled_ == SETTING_FILES[file], f"{overlay}: {file} ({key}) rolls {sorted(rolled_)}"


def test_every_settings_file_is_listed() -> None:
    found = {p.relative_to(REPO_K8S).as_posix() for p in (REPO_K8S / "base").rglob("*.env")}
    assert found == set(SETTING_FILES)
