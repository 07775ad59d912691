"""Policy checks on the rendered manifests: resources, probes, security, wiring between
objects, graceful termination, and the GPU/CPU overlay differences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.base import DRAIN_TIMEOUT_S
from tests.k8s.manifests import (
    LONG_RUNNING_KINDS,
    ROOT,
    SERVING_OVERLAYS,
    Container,
    containers,
    find,
    is_part,
    kustomizations,
    name,
    of_kind,
    pod_labels,
    pod_spec,
    render,
)

ALL = kustomizations()
TRAINING = [k for k in ALL if k.startswith("training/")]
EXTERNAL_SECRETS = {"overlays/gpu": {"axon-secrets"}}
"""Secrets an overlay expects to exist already (docs/deployment.md says how to make them)."""


def all_containers(relative: str) -> list[Container]:
    return list(containers(render(relative)))


@pytest.mark.parametrize("relative", ALL)
def test_every_container_has_requests_and_limits(relative: str) -> None:
    for c in all_containers(relative):
        resources = c.spec.get("resources", {})
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                assert res in resources.get(kind, {}), f"{c.where}: no {kind}.{res}"


@pytest.mark.parametrize("relative", ALL)
def test_long_running_containers_have_probes(relative: str) -> None:
    for c in all_containers(relative):
        if c.init or c.workload["kind"] not in LONG_RUNNING_KINDS:
            continue
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in c.spec, f"{c.where}: no {probe}"


@pytest.mark.parametrize("relative", ALL)
def test_every_container_is_locked_down(relative: str) -> None:
    for c in all_containers(relative):
        sc = c.spec.get("securityContext", {})
        pod_sc = c.pod.get("securityContext", {})
        where = c.where
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, f"{where}: runAsUser 0"
        assert c.pod.get("automountServiceAccountToken") is False, f"{where}: SA token"


@pytest.mark.parametrize("relative", ALL)
def test_every_image_is_pinned(relative: str) -> None:
    if is_part(relative):
        return  # image names are placeholders until an overlay sets them
    for c in all_containers(relative):
        image = c.spec["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{c.where}: image {image} needs an exact tag"


@pytest.mark.parametrize("relative", SERVING_OVERLAYS)
def test_every_service_selects_pods_on_a_named_port(relative: str) -> None:
    objs = render(relative)
    workloads = [o for o in objs if pod_spec(o) is not None]
    for svc in of_kind(objs, "Service"):
        selector = svc["spec"]["selector"]
        matches = [w for w in workloads if selector.items() <= pod_labels(w).items()]
        assert matches, f"{name(svc)} selects no pods ({selector})"
        for port in svc["spec"]["ports"]:
            for w in matches:
                spec = pod_spec(w)
                assert spec is not None
                names = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{name(svc)} → {name(w)}: {port}"


@pytest.mark.parametrize("relative", SERVING_OVERLAYS)
def test_selectors_and_scale_targets_point_at_workloads(relative: str) -> None:
    objs = render(relative)
    workloads = [o for o in objs if pod_spec(o) is not None]
    deployments = {d["metadata"]["name"] for d in of_kind(objs, "Deployment")}
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        labels = pdb["spec"]["selector"]["matchLabels"]
        assert any(labels.items() <= pod_labels(w).items() for w in workloads), name(pdb)
    for deployment in of_kind(objs, "Deployment"):
        assert "replicas" not in deployment["spec"], f"{name(deployment)}: autoscaled"
        pdbs = [
            p
            for p in of_kind(objs, "PodDisruptionBudget")
            if p["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()
        ]
        assert pdbs, f"{name(deployment)} has no PodDisruptionBudget"
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(objs, "ScaledObject")}
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")}
    assert scaled <= deployments and not scaled & hpas  # KEDA makes its own HPA
    assert scaled | hpas == deployments, "every Deployment is autoscaled"
    for monitor in [*of_kind(objs, "PodMonitor"), *of_kind(objs, "ServiceMonitor")]:
        labels = monitor["spec"]["selector"]["matchLabels"]
        pool = of_kind(objs, "Service") if monitor["kind"] == "ServiceMonitor" else workloads
        hits = [
            o
            for o in pool
            if labels.items()
            <= (
                o["metadata"].get("labels", {}) if o["kind"] == "Service" else pod_labels(o)
            ).items()
        ]
        assert hits, f"{name(monitor)} selects nothing"


@pytest.mark.parametrize("relative", ALL)
def test_referenced_configmaps_secrets_and_claims_exist(relative: str) -> None:
    objs = render(relative)
    serving = render("overlays/cpu") if relative.startswith("training/") else objs
    # A piece of a deployment (base's family folders, a rollout) may refer to base's
    # ConfigMaps and claim; the overlay that includes it gives them their hashed names.
    around = render("base") if is_part(relative) and relative != "training/base" else ()
    configmaps = {o["metadata"]["name"] for o in of_kind(objs, "ConfigMap")}
    configmaps |= {  # unhashed: the including overlay renames the reference
        re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"]) for o in of_kind(around, "ConfigMap")
    }
    secrets = {o["metadata"]["name"] for o in of_kind(objs, "Secret")}
    secrets |= EXTERNAL_SECRETS.get(relative, set())
    claims = {o["metadata"]["name"] for o in of_kind(serving + around, "PersistentVolumeClaim")}
    for c in containers(objs):
        for source in c.spec.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps, c.where
        for env in c.spec.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None and not is_part(relative):
                assert ref["name"] in secrets, f"{c.where}: Secret {ref['name']}"
        for volume in c.pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, c.where


def test_external_secret_creation_is_documented() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for secret in EXTERNAL_SECRETS["overlays/gpu"]:
        assert f"create secret generic {secret}" in doc


@pytest.mark.parametrize("relative", SERVING_OVERLAYS)
def test_network_policies(relative: str) -> None:
    objs = render(relative)
    policies = of_kind(objs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny, "no default-deny ingress policy"
    open_to_all = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                open_to_all.append(policy["spec"]["podSelector"]["matchLabels"])
    assert open_to_all == [{"app.kubernetes.io/name": "axon-gateway"}], open_to_all
    redis = next(
        p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get(
            "app.kubernetes.io/name") == "axon-redis"
    )  # fmt: skip
    sources = [src for rule in redis["spec"]["ingress"] for src in rule["from"]]
    in_namespace = [s for s in sources if "namespaceSelector" not in s]
    assert in_namespace == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "axon"}}}]
    outside = [s for s in sources if "namespaceSelector" in s]
    assert all("podSelector" in s for s in outside), "Redis only to named pods outside"
    for w in [o for o in objs if pod_spec(o) is not None]:
        assert pod_labels(w).get("app.kubernetes.io/part-of") == "axon", name(w)


def _prestop_seconds(c: Container) -> int:
    command = c.spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", c.where
    return int(command[1])


@pytest.mark.parametrize("relative", SERVING_OVERLAYS)
def test_termination_grace_covers_a_drain(relative: str) -> None:
    objs = render(relative)
    config = find(objs, "ConfigMap", "axon-gateway-config")["data"]
    for c in containers(objs):
        component = pod_labels(c.workload).get("app.kubernetes.io/component")
        grace = c.pod["terminationGracePeriodSeconds"]
        if component == "model-service":
            assert grace >= _prestop_seconds(c) + DRAIN_TIMEOUT_S + 5, c.where
        elif component == "gateway":
            deadline_s = int(config["AXON_TIMEOUT_MS"]) / 1000
            assert grace >= _prestop_seconds(c) + deadline_s + 2, c.where


def _probe_paths(c: Container) -> set[str]:
    return {
        c.spec[p]["httpGet"]["path"]
        for p in ("livenessProbe", "readinessProbe", "startupProbe")
        if "httpGet" in c.spec.get(p, {})
    }


def test_probe_paths_are_served_by_the_code() -> None:
    from services.gateway import oip

    gateway_routes = {getattr(r, "path", None) for r in oip.routes}
    import bentoml

    bentoml_src = "".join(
        p.read_text(errors="replace")
        for p in (Path(bentoml.__file__).parent / "_internal" / "server").rglob("*.py")
    )
    for overlay in SERVING_OVERLAYS:
        for c in containers(render(overlay)):
            component = pod_labels(c.workload).get("app.kubernetes.io/component")
            if component == "gateway":
                assert _probe_paths(c) <= gateway_routes, c.where
            elif component == "model-service":
                unknown = [p for p in _probe_paths(c) if f'"{p}"' not in bentoml_src]
                assert not unknown, f"{c.where}: BentoML serves no {unknown}"


def test_cpu_and_gpu_overlays_differ_where_they_should() -> None:
    for c in containers(render("overlays/cpu")):
        assert "nvidia.com/gpu" not in str(c.spec.get("resources")), c.where
    assert (
        find(render("overlays/cpu"), "ConfigMap", "axon-config")["data"]["AXON_PROVIDER"] == "cpu"
    )
    gpu = render("overlays/gpu")
    assert find(gpu, "ConfigMap", "axon-config")["data"]["AXON_PROVIDER"] == "cuda"
    services = [c for c in containers(gpu) if pod_labels(c.workload).get(
        "app.kubernetes.io/component") == "model-service"]  # fmt: skip
    assert len(services) == 3
    for c in services:
        resources = c.spec["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
        assert re.search(r"axon-service-gpu:", c.spec["image"]), c.where
        assert c.pod["nodeSelector"] and any(
            t["key"] == "nvidia.com/gpu" for t in c.pod["tolerations"]
        ), c.where
    others = [c for c in containers(gpu) if c not in services]
    assert others and all("nvidia.com/gpu" not in str(c.spec["resources"]) for c in others)
    claim = find(gpu, "PersistentVolumeClaim", "axon-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("relative", TRAINING)
def test_training_jobs_write_the_model_volume(relative: str) -> None:
    objs = render(relative)
    jobs = of_kind(objs, "Job")
    assert jobs
    for c in containers(objs):
        mounts = {m["mountPath"]: m for m in c.spec["volumeMounts"]}
        assert "/models" in mounts and not mounts["/models"].get("readOnly", False), c.where
        assert "/models" in c.argv, f"{c.where}: writes elsewhere than the volume"
        assert c.pod["restartPolicy"] == "Never"


def _gpus(c: Container) -> int:
    return int(c.spec["resources"]["limits"].get("nvidia.com/gpu", 0))


def test_torchrun_starts_one_process_per_gpu() -> None:
    for c in containers(render("training/ddp")):
        assert c.argv[0] == "torchrun"
        nproc = next(a.split("=", 1)[1] for a in c.argv if a.startswith("--nproc-per-node="))
        assert int(nproc) == _gpus(c) >= 2, c.where
        mounts = {m["mountPath"] for m in c.spec["volumeMounts"]}
        assert "/dev/shm" in mounts, "NCCL needs a shared-memory volume"
