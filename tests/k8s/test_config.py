"""The ConfigMaps and the environment of each container against what the code reads:
every key of a ConfigMap a container gets is read by that container's code (the
gateway's, the model services' shared one, one family's own), every setting the code
reads is given to the pods that read it, the values parse, and the KEDA triggers and
Redis URLs point at the streams and the Redis the code uses."""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.contract import jobs, protocol
from services.gateway.hold import HoldPolicy
from services.gateway.settings import GatewaySettings
from services.runtime.settings import WorkerSettings
from tests.k8s.code_facts import cli_flags, gateway_names, service_class, worker_names
from tests.k8s.manifests import (
    SERVING_OVERLAYS,
    Container,
    Obj,
    containers,
    find,
    of_kind,
    pod_labels,
    render,
)

PER_PROCESS = {
    "AXON_INSTANCE": "default hostname-pid is unique per worker process; one value per "
    "pod would be shared by BentoML's worker processes",
    "AXON_GATEWAY_INSTANCE": "default hostname-pid-random names each gateway process's "
    "reply list; it must not be shared",
}
"""Settings the code reads that the deployment deliberately leaves to their defaults."""

COMMAND_LINE = {"AXON_GRPC_PORT": "--grpc-port"}
"""Gateway settings its Deployment gives as a command-line option instead (the option
wins over the variable): ports sit in the command, beside containerPort and the probes."""


def component(c: Container) -> str | None:
    return pod_labels(c.workload).get("app.kubernetes.io/component")


def family(c: Container) -> str:
    return str(service_class(c.spec["args"][0]).family)


def model_services(objs: tuple[Obj, ...]) -> list[Container]:
    found = [c for c in containers(objs) if component(c) == "model-service"]
    assert found, "no model-service containers"
    return found


def gateway(objs: tuple[Obj, ...]) -> Container:
    (found,) = [c for c in containers(objs) if component(c) == "gateway"]
    return found


def gateway_hold(objs: tuple[Obj, ...]) -> HoldPolicy:
    """The model versions the deployed gateway holds requests for with no worker
    (``AXON_HOLD_WITHOUT_WORKERS`` as the gateway's container gets it)."""
    return GatewaySettings.from_env(_settings_env(gateway(objs), objs)).hold_without_workers


def provided(c: Container, objs: tuple[Obj, ...]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (secrets as placeholders)."""
    env: dict[str, str] = {}
    for source in c.spec.get("envFrom", []):
        env.update(find(objs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for item in c.spec.get("env", []):
        value = item.get("value")
        if value is None:
            value = _placeholder(item["valueFrom"]) if "valueFrom" in item else ""
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    return env


def _placeholder(source: dict[str, Any]) -> str:
    """A stand-in for a value Kubernetes fills in (a Secret's key…): one token that
    names its source, so list settings (keys) get one distinct value each."""
    ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
    if ref:
        return f"<{ref['name']}-{ref['key']}-value>"
    return f"<{'-'.join(sorted(source))}-value>"


def all_families() -> list[str]:
    return sorted({family(c) for c in model_services(render("overlays/cpu"))})


def names_read() -> set[str]:
    return gateway_names().union(*(worker_names(f) for f in all_families()))


@functools.cache
def _names_read(fam: str | None) -> frozenset[str]:
    return frozenset(gateway_names() if fam is None else worker_names(fam))


def names_read_by(c: Container) -> frozenset[str]:
    """The AXON_* names the code running in ``c`` reads."""
    if component(c) == "gateway":
        return _names_read(None)
    assert component(c) == "model-service", f"{c.where}: which code runs here?"
    return _names_read(family(c))


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_every_configmap_key_is_read_by_the_pods_that_get_it(overlay: str) -> None:
    """Each container gets only ConfigMaps whose every key its own code reads, so a
    change to a ConfigMap rolls only Deployments that read the change: the gateway's
    settings are not in the model services' ConfigMaps, nor one family's in another's."""
    objs = render(overlay)
    given: set[str] = set()
    for c in containers(objs):
        for source in c.spec.get("envFrom", []):
            configmap = source["configMapRef"]["name"]
            given.add(configmap)
            keys = set(find(objs, "ConfigMap", configmap).get("data", {}))
            unread = keys - names_read_by(c)
            assert not unread, f"{c.where}: ConfigMap {configmap} keys it never reads: {unread}"
    settings = {
        o["metadata"]["name"]
        for o in of_kind(objs, "ConfigMap")
        if any(k.startswith("AXON_") for k in o.get("data", {}))
    }
    assert settings and settings <= given, f"settings no container gets: {settings - given}"


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_every_setting_the_code_reads_is_given(overlay: str) -> None:
    objs = render(overlay)
    for c in model_services(objs):
        given = set(provided(c, objs))
        fam = family(c)
        prefix = f"AXON_{fam.upper()}_"
        for wanted in worker_names(fam) - set(PER_PROCESS):
            if wanted.startswith(prefix):
                continue  # a per-family override: optional
            override = prefix + wanted.removeprefix("AXON_")
            assert wanted in given or override in given, f"{c.where}: {wanted} not set"
    gw = gateway(objs)
    on_command_line = {k for k, flag in COMMAND_LINE.items() if _has_option(gw.argv, flag)}
    missing = gateway_names() - set(PER_PROCESS) - set(provided(gw, objs)) - on_command_line
    assert not missing, f"{gw.where}: not set: {sorted(missing)}"


def _has_option(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_command_line_settings_are_not_also_in_the_environment(overlay: str) -> None:
    """A variable the command line overrides would be a value nobody reads."""
    objs = render(overlay)
    gw = gateway(objs)
    flags = cli_flags("services.gateway") or set()
    for variable, flag in COMMAND_LINE.items():
        assert variable in gateway_names() and flag in flags, (variable, flag)
        if _has_option(gw.argv, flag):
            assert variable not in provided(gw, objs), f"{gw.where}: {flag} overrides {variable}"


def test_the_name_scan_sees_real_reads() -> None:
    """The scan must find names that are certainly read, or the tests above prove nothing."""
    assert {"AXON_REDIS_URL", "AXON_MAX_BATCH_ROWS", "AXON_CLASSIFIER_MAX_BATCH_ROWS"} <= (
        worker_names("classifier")
    )
    assert {"AXON_TIMEOUT_MS", "AXON_API_KEYS", "AXON_LOG_LEVEL"} <= gateway_names()
    assert "AXON_NOT_A_SETTING" not in names_read()


def _settings_env(c: Container, objs: tuple[Obj, ...]) -> dict[str, str]:
    env = provided(c, objs)
    return {k: v.replace("<", "").replace(">", "") for k, v in env.items()}


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_settings_build_from_the_deployed_values(overlay: str) -> None:
    objs = render(overlay)
    for c in model_services(objs):
        settings = WorkerSettings.from_env(_settings_env(c, objs), family(c))
        assert settings.model_version is not None, f"{c.where}: pin the version (KEDA)"
        assert str(settings.models_dir) == next(
            m["mountPath"] for m in c.spec["volumeMounts"] if m["name"] == "models"
        )
    GatewaySettings.from_env(_settings_env(gateway(objs), objs))


def _redis(objs: tuple[Obj, ...]) -> tuple[Obj, Obj]:
    return find(objs, "Service", "axon-redis"), find(objs, "StatefulSet", "axon-redis")


def _secret_key(c: Container, env_name: str) -> tuple[str, str]:
    ref = c.env()[env_name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_redis_urls_reach_the_redis_service_with_its_password(overlay: str) -> None:
    objs = render(overlay)
    service, statefulset = _redis(objs)
    (redis,) = containers((statefulset,))
    password_ref = _secret_key(redis, "REDIS_PASSWORD")
    assert "requirepass $REDIS_PASSWORD" in redis.argv[2], "Redis must require the password"
    for c in [*model_services(objs), gateway(objs)]:
        names = [e["name"] for e in c.spec["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("AXON_REDIS_URL"), c.where
        url = urlsplit(c.env()["AXON_REDIS_URL"]["value"])
        assert (
            url.password == "$(REDIS_PASSWORD)" and _secret_key(c, "REDIS_PASSWORD") == password_ref
        )
        assert url.hostname == service["metadata"]["name"], c.where
        assert url.port in {p["port"] for p in service["spec"]["ports"]}, c.where


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_keda_scales_each_service_on_its_own_stream(overlay: str) -> None:
    objs = render(overlay)
    service, _ = _redis(objs)
    namespace = service["metadata"]["namespace"]
    for c in model_services(objs):
        settings = WorkerSettings.from_env(_settings_env(c, objs), family(c))
        deployment = c.workload["metadata"]["name"]
        (scaled,) = [
            s
            for s in of_kind(objs, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == deployment
        ]
        assert settings.model_version is not None
        # One trigger on each of the version's streams: requests, and the job lane
        # (async jobs, shadow copies), which KEDA would otherwise never see.
        model, version = settings.model, settings.model_version
        wanted = [protocol.stream_key(model, version), jobs.job_stream_key(model, version)]
        triggers = scaled["spec"]["triggers"]
        streams = sorted(t["metadata"]["stream"] for t in triggers)
        assert streams == sorted(wanted), f"{deployment}: triggers on {streams}"
        for trigger in triggers:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            host, _, port = meta["address"].partition(":")
            assert host == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
            assert int(port) in {p["port"] for p in service["spec"]["ports"]}
            assert meta["databaseIndex"] == urlsplit(settings.redis_url).path.strip("/")
        # At zero only if the gateway holds its requests: else they get 503 and the
        # stream never fills to wake it (components/scale-to-zero).
        minimum = scaled["spec"]["minReplicaCount"]
        assert minimum >= 1 or (
            minimum == 0 and gateway_hold(objs).holds(settings.model, settings.model_version)
        ), f"{deployment}: minReplicaCount {minimum}, and the gateway does not hold its version"
