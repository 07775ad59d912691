"""Every kustomization renders with kubectl, and every object it renders validates:
built-in kinds against the Kubernetes OpenAPI schemas shipped with kubernetes-validate
(strict: unknown fields are errors, as `kubectl apply` makes them), CRDs against the
schemas vendored in k8s/schemas/ (see the README there)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s.manifests import K8S, SERVING_OVERLAYS, Obj, kustomizations, name, render

KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
"""Oldest Kubernetes the manifests support, and the newest the validator knows."""

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}


def crd_schema(obj: Obj) -> dict[str, Any] | None:
    file = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if file is None:
        return None
    schema: dict[str, Any] = json.loads((K8S / "schemas" / file).read_text())
    return schema


def validate(obj: Obj, version: str) -> None:
    """Raise if ``obj`` is invalid; an unknown custom kind is an error, never a skip."""
    schema = crd_schema(obj)
    if schema is not None:
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise AssertionError(
            f"{name(obj)} ({obj['apiVersion']}): no schema; vendor one in k8s/schemas/"
        ) from None


def test_every_kustomization_is_found() -> None:
    found = kustomizations()
    for expected in ("base", *SERVING_OVERLAYS, "training/cpu", "training/gpu", "training/ddp"):
        assert expected in found


@pytest.mark.parametrize("relative", kustomizations())
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates(relative: str, version: str) -> None:
    objs = render(relative)
    assert objs, f"k8s/{relative} renders nothing"
    problems = []
    for obj in objs:
        try:
            validate(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            problems.append(f"{name(obj)}: {getattr(exc, 'message', exc)}")
    assert not problems, "\n".join(problems)


def test_serving_overlays_render_every_component() -> None:
    for overlay in SERVING_OVERLAYS:
        kinds = {o["kind"] for o in render(overlay)}
        assert {
            "Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ScaledObject", "PodMonitor", "ServiceMonitor", "PersistentVolumeClaim",
        } <= kinds, overlay  # fmt: skip


# The validators must be able to fail: broken copies of real objects are refused.


def _first(kind: str) -> Obj:
    return copy.deepcopy(next(o for o in render("overlays/cpu") if o["kind"] == kind))


def test_validator_refuses_a_wrong_type() -> None:
    deployment = _first("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[-1])


def test_validator_refuses_an_unknown_field() -> None:
    deployment = _first("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ScaledObject", ("spec", "maxReplicas"), 3),
        ("ScaledObject", ("spec", "minReplicaCount"), "1"),
        ("PodMonitor", ("spec", "podMetricsEndpoints"), [{"port": "http", "interval": "15"}]),
        ("ServiceMonitor", ("spec", "endpoint"), []),
    ],
)
def test_crd_schemas_refuse_mistakes(kind: str, path: tuple[str, ...], value: Any) -> None:
    obj = _first(kind)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(obj, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize(
    ("key", "value"),
    [("streamLength", 128), ("streamLenght", "128"), ("streamLength", "many")],
)
def test_redis_streams_trigger_metadata_is_checked(key: str, value: Any) -> None:
    obj = _first("ScaledObject")
    obj["spec"]["triggers"][0]["metadata"].pop("streamLength")
    obj["spec"]["triggers"][0]["metadata"][key] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(obj, KUBERNETES_VERSIONS[-1])
