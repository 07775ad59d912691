"""What the cluster does with the queue path's manifests, evaluated with the rules of the
software that reads them (written out here, each with its source) rather than by their
spelling: which number KEDA scales on, what the NetworkPolicies admit, what a node drain
leaves running, whether Redis fits its fork and its AOF, how Redis gets its password,
and whether the training Jobs can coexist. Each test fails if its issue comes back."""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from services.contract import jobs, protocol
from services.contract.codec import Reply
from services.runtime.redis_server import RedisServer, find_redis_server, free_port
from services.runtime.settings import WorkerSettings
from tests.k8s.manifests import (
    SERVING_OVERLAYS,
    Container,
    Obj,
    containers,
    find,
    kustomizations,
    name,
    of_kind,
    pod_labels,
    pod_spec,
    render,
)
from tests.k8s.test_config import family, gateway_hold, model_services, provided
from tests.k8s.test_policy import EXTERNAL_SECRETS

TRAINING = [k for k in kustomizations() if k.startswith("training/")]


# --- KEDA's redis-streams scaler ------------------------------------------------------


def keda_mode(meta: Mapping[str, str]) -> str:
    """The count KEDA's redis-streams scaler scales on, chosen as KEDA does it
    (kedacore/keda pkg/scalers/redis_streams_scaler.go, parseRedisStreamsMetadata in
    v2.11.0, redisStreamsMetadata.Validate since v2.16): with a ``consumerGroup``,
    ``lagCount`` selects XINFO GROUPS lag and its absence XPENDING; without one, XLEN
    (``streamLength``, since v2.11.0)."""
    if meta.get("consumerGroup"):
        return "lag" if "lagCount" in meta else "xpending"
    return "xlen"


async def keda_reading(meta: Mapping[str, str], redis: Redis[bytes]) -> int:
    """The number KEDA reads for a trigger with ``meta``. XINFO GROUPS answers a nil lag
    when it cannot be determined; KEDA's go-redis client turns that into 0 (older
    releases) or -1 (redis/go-redis command.go, XInfoGroupsCmd.readReply)."""
    stream, mode = meta["stream"], keda_mode(meta)
    if mode == "xlen":
        return int(await redis.xlen(stream))
    if mode == "xpending":
        return int((await redis.xpending(stream, meta["consumerGroup"]))["pending"])
    group = next(g for g in await redis.xinfo_groups(stream) if g["name"] == b"workers")
    return int(group["lag"]) if group["lag"] is not None else 0


def redis_triggers(objs: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    scaled_objects = of_kind(objs, "ScaledObject")
    assert scaled_objects, "no ScaledObjects"
    for scaled in scaled_objects:
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["type"] == "redis-streams", f"{name(scaled)}: {trigger['type']}"
            yield scaled, trigger


def scale_target_settings(objs: tuple[Obj, ...], scaled: Obj) -> WorkerSettings:
    target = scaled["spec"]["scaleTargetRef"]["name"]
    (c,) = [c for c in model_services(objs) if c.workload["metadata"]["name"] == target]
    env = {k: v.strip("<>") for k, v in provided(c, objs).items()}
    return WorkerSettings.from_env(env, family(c))


@dataclass(frozen=True)
class VersionTriggers:
    """A ScaledObject's triggers on the two streams of its target's model version."""

    request: Obj
    """On the request stream (``protocol.stream_key``)."""
    job: Obj
    """On the job lane (``jobs.job_stream_key``: async jobs and shadow copies)."""

    @property
    def both(self) -> tuple[Obj, Obj]:
        return self.request, self.job


def version_triggers(objs: tuple[Obj, ...], scaled: Obj) -> VersionTriggers:
    """The triggers of ``scaled``: exactly one on the request stream and one on the job
    stream of the model version its target's workers read (their settings, as the code
    builds them), and no other. Either missing leaves that lane's backlog unseen: at
    zero (components/scale-to-zero) nothing would wake the service for it."""
    settings = scale_target_settings(objs, scaled)
    assert settings.model_version is not None, name(scaled)
    assert settings.partitions == 1, f"{name(scaled)}: partitions need a trigger each"
    model, version = settings.model, settings.model_version
    wanted = [protocol.stream_key(model, version), jobs.job_stream_key(model, version)]
    triggers = scaled["spec"]["triggers"]
    streams = [t["metadata"].get("stream") for t in triggers]
    assert sorted(map(str, streams)) == sorted(wanted), (
        f"{name(scaled)}: triggers on {streams}, wanted one on each of {wanted}"
    )
    return VersionTriggers(*(triggers[streams.index(stream)] for stream in wanted))


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_keda_scales_on_the_stream_length_of_each_model_version(overlay: str) -> None:
    objs = render(overlay)
    for scaled, trigger in redis_triggers(objs):
        meta = trigger["metadata"]
        assert keda_mode(meta) == "xlen", f"{name(scaled)}: scales on {keda_mode(meta)}"
        assert not {"lagCount", "pendingEntriesCount", "consumerGroup"} & set(meta), meta
        assert int(meta["streamLength"]) >= 1, f"{name(scaled)}: streamLength target"
    streams: list[str] = []
    for scaled in of_kind(objs, "ScaledObject"):
        requests, job_lane = version_triggers(objs, scaled).both
        # One Redis for both lanes (one slot): the same address, database and password.
        for key in ("address", "databaseIndex"):
            assert requests["metadata"][key] == job_lane["metadata"][key], (name(scaled), key)
        assert requests["authenticationRef"] == job_lane["authenticationRef"], name(scaled)
        streams += [requests["metadata"]["stream"], job_lane["metadata"]["stream"]]
    assert len(streams) == len(set(streams)), f"two ScaledObjects on one stream: {streams}"


def test_stream_length_is_the_outstanding_work_and_lag_is_not() -> None:
    """With the workers' own protocol calls: one worker holds a batch, another answers
    its batch (XACK + XDEL). XLEN, what the rendered triggers read, is queued + in
    flight; the group lag, what lagCount read, comes back nil, so KEDA saw no work."""
    objs = render("overlays/cpu")
    trigger = version_triggers(objs, of_kind(objs, "ScaledObject")[0]).request
    stream = trigger["metadata"]["stream"]
    model, version, _ = protocol.parse_stream_key(stream)

    async def scenario(url: str) -> None:
        redis: Redis[bytes] = Redis.from_url(url)
        await protocol.ensure_group(redis, stream)
        queued = [protocol.NewEntry(f"r{i}", "axon:r:gw", 0, b"x") for i in range(8)]
        await protocol.enqueue_many(redis, model, version, queued, limit=100, maxlen=1000)
        await protocol.read_entries(redis, stream, "worker-a", count=2, block_ms=None)
        answered = await protocol.read_entries(redis, stream, "worker-b", count=2, block_ms=None)
        replies = [
            (protocol.Outgoing("axon:r:gw", Reply.failure(e.request_id or "", "internal", "")), e)
            for e in answered
        ]
        answers = [(reply, e.entry_id) for reply, e in replies]
        assert await protocol.complete(redis, stream, answers, reply_ttl_s=60) == 2
        outstanding = len(queued) - len(answered)  # 4 never read + 2 held by worker-a
        assert await keda_reading(trigger["metadata"], redis) == outstanding
        assert await protocol.backlog(redis, model, version) == outstanding
        if int((await redis.info("server"))["redis_version"].split(".")[0]) >= 7:
            lag_trigger = {"stream": stream, "consumerGroup": "workers", "lagCount": "128"}
            assert await keda_reading(lag_trigger, redis) <= 0 < outstanding
        await redis.aclose()

    with RedisServer() as server:
        asyncio.run(scenario(server.url))


def test_keda_reads_the_redis_password_through_a_trigger_authentication() -> None:
    for overlay in SERVING_OVERLAYS:
        objs = render(overlay)
        (redis,) = containers((find(objs, "StatefulSet", "axon-redis"),))
        secret_names = {s["metadata"]["name"] for s in of_kind(objs, "Secret")}
        secret_names |= EXTERNAL_SECRETS.get(overlay, set())
        for scaled, trigger in redis_triggers(objs):
            where = f"{overlay} {name(scaled)}"
            meta = trigger["metadata"]
            assert not {"password", "passwordFromEnv"} & set(meta), f"{where}: {meta}"
            ref = trigger["authenticationRef"]
            assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication", where
            auth = find(objs, "TriggerAuthentication", ref["name"])
            assert auth["metadata"]["namespace"] == scaled["metadata"]["namespace"], where
            (password,) = [
                r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "password"
            ]
            assert (password["name"], password["key"]) == secret_ref(redis, "REDIS_PASSWORD")
            assert password["name"] in secret_names, f"{where}: no Secret {password['name']}"


def secret_ref(c: Container, env_name: str) -> tuple[str, str]:
    ref = c.env()[env_name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# --- NetworkPolicy (networking.k8s.io/v1), as the API reference defines it -------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    """Named container ports (what a NetworkPolicy's named port resolves to)."""

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def pod_of(workload: Obj) -> Pod:
    spec = pod_spec(workload)
    assert spec is not None
    ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
    return Pod(workload["metadata"]["namespace"], pod_labels(workload), ports)


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Obj, policy_namespace: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled here"
    ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_selector is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selects(ns_selector, source.namespace_labels)
    return in_namespace and (pod_selector is None or selects(pod_selector, source.labels))


def _port_matches(entry: Obj, target: Pod, port: int, protocol_: str) -> bool:
    if entry.get("protocol", "TCP") != protocol_:
        return False
    if "port" not in entry:
        return True
    if isinstance(entry["port"], str):
        return target.ports.get(entry["port"]) == port
    return bool(entry["port"] <= port <= entry.get("endPort", entry["port"]))


def admits(
    policies: list[Obj], source: Pod, target: Pod, port: int, protocol_: str = "TCP"
) -> bool:
    """Whether ingress from ``source`` to ``target`` on ``port`` is allowed: a pod no
    Ingress policy selects is open; a selected one admits what any rule of any policy
    selecting it admits (a rule without ``from`` / ``ports`` admits all of them)."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    return any(
        (not rule.get("from") or any(
            _peer_matches(peer, p["metadata"]["namespace"], source) for peer in rule["from"]))
        and (not rule.get("ports") or any(
            _port_matches(entry, target, port, protocol_) for entry in rule["ports"]))
        for p in selecting
        for rule in p["spec"].get("ingress", [])
    )  # fmt: skip


KEDA_NAMESPACE = "keda"
KEDA_OPERATOR_PODS = {
    # kedacore/keda config/manager/manager.yaml (v2.11.0 … v2.20.2), spec.template:
    "release YAML": {"app": "keda-operator", "name": "keda-operator"},
    # kedacore/charts keda/templates/manager/deployment.yaml + _helpers.tpl (2.20.2):
    "Helm chart": {
        "app": "keda-operator",
        "name": "keda-operator",
        "app.kubernetes.io/name": "keda-operator",
        "app.kubernetes.io/component": "operator",
        "app.kubernetes.io/part-of": "keda-operator",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/instance": "keda",
    },
}
"""The KEDA operator pod's labels as each install method sets them."""


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_redis_admits_the_keda_operator_of_either_install(overlay: str) -> None:
    objs = render(overlay)
    policies = of_kind(objs, "NetworkPolicy")
    redis = pod_of(find(objs, "StatefulSet", "axon-redis"))
    for scaled, trigger in redis_triggers(objs):
        port = int(trigger["metadata"]["address"].rpartition(":")[2])
        for install, labels in KEDA_OPERATOR_PODS.items():
            operator = Pod(KEDA_NAMESPACE, labels)
            assert admits(policies, operator, redis, port), f"{name(scaled)}: {install}"
        # Only the operator: not KEDA's other pods, not an `app: keda-operator` elsewhere.
        apiserver = Pod(KEDA_NAMESPACE, {"app": "keda-operator-metrics-apiserver"})
        assert not admits(policies, apiserver, redis, port)
        assert not admits(policies, Pod("default", KEDA_OPERATOR_PODS["Helm chart"]), redis, port)


# --- torchrun across nodes ------------------------------------------------------------

MULTINODE = "training/ddp-multinode"


def _option(argv: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
    return value


def test_multinode_ddp_pods_reach_each_other_on_what_torchrun_uses_and_nothing_else() -> None:
    objs = render(MULTINODE)
    (job,) = of_kind(objs, "Job")
    (train,) = containers((job,))
    argv, pod = train.argv, pod_of(job)
    nnodes = int(_option(argv, "--nnodes"))
    assert int(_option(argv, "--nproc-per-node")) == int(
        train.spec["resources"]["limits"]["nvidia.com/gpu"]
    )
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert spec["completions"] == nnodes >= 2, "one pod per node, all running at once"
    assert _option(argv, "--rdzv-backend") == "c10d"
    # The endpoint is pod 0 by name (an Indexed Job's pod i is hostname JOB-i), which
    # the headless Service named by `subdomain` resolves.
    host, _, rdzv_port = _option(argv, "--rdzv-endpoint").rpartition(":")
    subdomain, namespace = train.pod["subdomain"], pod.namespace
    assert host == f"{job['metadata']['name']}-0.{subdomain}.{namespace}.svc.cluster.local"
    service = find(objs, "Service", subdomain)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["namespace"] == namespace
    assert selects({"matchLabels": service["spec"]["selector"]}, pod.labels)
    # Every other listener takes an ephemeral port; the sysctl pins their range.
    (port_range,) = [
        s["value"]
        for s in train.pod["securityContext"]["sysctls"]
        if s["name"] == "net.ipv4.ip_local_port_range"
    ]
    low, high = (int(v) for v in port_range.split())
    # With the serving stack's default-deny in place (both apply to namespace axon):
    policies = of_kind(render("overlays/gpu"), "NetworkPolicy") + of_kind(objs, "NetworkPolicy")
    peer = Pod(namespace, pod.labels)
    for port in (int(rdzv_port), low, (low + high) // 2, high):
        assert admits(policies, peer, pod, port), f"training pod to training pod on {port}"
    for port in (22, 3000, 6379, 8000, low - 1, high + 1):
        if port != int(rdzv_port):
            assert not admits(policies, peer, pod, port), f"port {port} admitted"
    assert not admits(policies, peer, pod, int(rdzv_port), "UDP")
    for other in (
        Pod(namespace, {"app.kubernetes.io/part-of": "axon"}),
        Pod("default", pod.labels),
    ):
        assert not admits(policies, other, pod, int(rdzv_port)), other
    # The training policies select only training pods: serving pods keep their rules.
    for overlay in SERVING_OVERLAYS:
        for workload in [o for o in render(overlay) if pod_spec(o) is not None]:
            serving = pod_of(workload)
            for policy in of_kind(objs, "NetworkPolicy"):
                assert not selects(policy["spec"]["podSelector"], serving.labels), name(workload)


def test_training_variants_have_jobs_of_their_own() -> None:
    """A Job's pod template is immutable: two variants sharing a Job name cannot both be
    applied (the second `kubectl apply` fails, or replaces the first's Job)."""
    owners: dict[str, list[str]] = {}
    for relative in TRAINING:
        for job in of_kind(render(relative), "Job"):
            owners.setdefault(job["metadata"]["name"], []).append(relative)
    shared = {job: where for job, where in owners.items() if len(where) > 1}
    assert not shared, f"Job names used by more than one training variant: {shared}"


# --- node drains: PodDisruptionBudgets against the autoscalers' minimum ------------------

DRAIN_EXCEPTIONS = {
    (overlay, "axon-gateway"): "a one-node laptop cluster: draining its node stops "
    "every pod whatever the budget; overlays/cpu sets the gateway's minimum to 1"
    for overlay in ("overlays/cpu", "overlays/scale-to-zero")  # the latter is cpu + a component
}


def _scaled_value(value: int | str, total: int) -> int:
    """An IntOrString against ``total``, rounded up as the disruption controller does
    (k8s.io/apimachinery intstr.GetScaledValueFromIntOrPercent, roundUp=true)."""
    if isinstance(value, str):
        return math.ceil(int(value.rstrip("%")) * total / 100)
    return value


def desired_healthy(pdb: Obj, expected: int) -> int:
    """PodDisruptionBudget status.desiredHealthy for ``expected`` pods (the disruption
    controller: minAvailable, or expected − maxUnavailable)."""
    spec = pdb["spec"]
    if "minAvailable" in spec:
        return _scaled_value(spec["minAvailable"], expected)
    return max(expected - _scaled_value(spec["maxUnavailable"], expected), 0)


def autoscaled_minimums(objs: tuple[Obj, ...]) -> dict[str, int]:
    """Deployment name → the fewest replicas its autoscaler leaves (KEDA's default
    minReplicaCount is 0, an HPA's minReplicas 1)."""
    minimums = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"].get("minReplicaCount", 0)
        for s in of_kind(objs, "ScaledObject")
    }
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        minimums[hpa["spec"]["scaleTargetRef"]["name"]] = hpa["spec"].get("minReplicas", 1)
    return minimums


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_a_drain_at_the_minimum_leaves_a_pod_and_is_not_blocked(overlay: str) -> None:
    objs = render(overlay)
    minimums = autoscaled_minimums(objs)
    assert {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(objs, "ScaledObject")}
    for deployment in of_kind(objs, "Deployment"):
        target = deployment["metadata"]["name"]
        if (overlay, target) in DRAIN_EXCEPTIONS:
            continue
        labels = pod_labels(deployment)
        pdbs = [
            p
            for p in of_kind(objs, "PodDisruptionBudget")
            if selects(p["spec"]["selector"], labels)
        ]
        assert len(pdbs) == 1, f"{target}: {len(pdbs)} PodDisruptionBudgets"
        lowest = minimums[target]
        if lowest == 0:
            # Scales to zero (components/scale-to-zero): at its usual one pod a drain may
            # evict it and must not be blocked; the gateway holds the requests until the
            # replacement pod (the Deployment still wants one) is up.
            (scaled,) = [s for s in of_kind(objs, "ScaledObject")
                         if s["spec"]["scaleTargetRef"]["name"] == target]  # fmt: skip
            settings = scale_target_settings(objs, scaled)
            assert gateway_hold(objs).holds(settings.model, settings.model_version or 0), target
            assert desired_healthy(pdbs[0], 1) == 0, f"{target}: a drain at 1 pod is blocked"
            continue
        healthy = desired_healthy(pdbs[0], lowest)
        assert healthy >= 1, f"{target}: at {lowest} replicas a drain may evict every pod"
        assert healthy <= lowest - 1, f"{target}: at {lowest} replicas a drain is blocked"


# --- Redis: sizes and start-up ---------------------------------------------------------

_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1024**2, "g": 10**9}
_REDIS_UNITS["gb"] = 1024**3
_K8S_UNITS = {"": 1, "k": 1000, "M": 10**6, "G": 10**9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def redis_bytes(value: str) -> int:
    """A redis.conf memory size (redis.conf: 1k = 1000 bytes, 1kb = 1024 bytes, …)."""
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", value).groups()  # type: ignore[union-attr]
    return int(number) * _REDIS_UNITS[unit.lower()]


def quantity_bytes(value: str) -> int:
    """A Kubernetes memory/storage quantity in bytes (the units used here)."""
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    return int(number) * _K8S_UNITS[unit]


def redis_options(args: list[str]) -> dict[str, str]:
    """``--name value`` pairs of redis-server's command line (the last one wins)."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    return {k.removeprefix("--"): v for k, v in zip(args[::2], args[1::2], strict=True)}


def redis_container(objs: tuple[Obj, ...]) -> Container:
    (c,) = containers((find(objs, "StatefulSet", "axon-redis"),))
    return c


FORK_FACTOR = 2.5
"""Memory limit ≥ 2.5 × maxmemory: a rewrite's fork may copy up to the whole dataset
(Redis administration docs: "up to 2 times the memory normally used"), plus a half for
allocator fragmentation and client buffers, which maxmemory does not bound."""


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_redis_memory_and_volume_fit_an_aof_rewrite(overlay: str) -> None:
    objs = render(overlay)
    c = redis_container(objs)
    options = redis_options(c.spec["args"])
    maxmemory = redis_bytes(options["maxmemory"])
    assert maxmemory > 0, "maxmemory 0 is no limit: the container limit would OOM-kill"
    assert options["maxmemory-policy"] == "noeviction", "evicting would drop streams"
    limit = quantity_bytes(c.spec["resources"]["limits"]["memory"])
    assert limit >= FORK_FACTOR * maxmemory, f"{overlay}: limit {limit} for {maxmemory}"
    assert options["appendonly"] == "yes"
    percentage = int(options.get("auto-aof-rewrite-percentage", "100"))
    min_size = redis_bytes(options.get("auto-aof-rewrite-min-size", "64mb"))
    assert percentage > 0, "no automatic rewrite: the AOF would grow until the disk fills"
    # On disk at once during a rewrite (Redis 7 multi-part AOF): the old base + incr
    # files, which reach (1 + percentage/100) x base before a rewrite starts, and the
    # new base (~ the dataset, at most maxmemory).
    old_aof = max(min_size, (1 + percentage / 100) * maxmemory)
    statefulset = find(objs, "StatefulSet", "axon-redis")
    mounts = {m["name"]: m["mountPath"] for m in c.spec["volumeMounts"]}
    (claim,) = [
        t for t in statefulset["spec"]["volumeClaimTemplates"]
        if mounts.get(t["metadata"]["name"]) == options["dir"]
    ]  # fmt: skip
    volume = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    assert volume >= old_aof + maxmemory, f"{overlay}: {volume} B for AOF of {maxmemory} B"


def _kubelet_argv(c: Container, env: Mapping[str, str]) -> list[str]:
    """The argv the kubelet execs: ``$(VAR)`` references expanded from the container's
    environment (Kubernetes "Define a command": only the $(VAR) form)."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in c.argv]


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_redis_requires_the_password_which_is_not_on_its_command_line(
    overlay: str, tmp_path: Path
) -> None:
    """The rendered command, run here as the kubelet would: sh, then redis-server."""
    c = redis_container(render(overlay))
    password = "pw" + secrets.token_hex(12)
    env = {
        k: password if "secretKeyRef" in str(v.get("valueFrom")) else v.get("value", "")
        for k, v in c.env().items()
    }
    assert secret_ref(c, "REDISCLI_AUTH") == secret_ref(c, "REDIS_PASSWORD"), "probe password"
    argv = _kubelet_argv(c, env)
    assert not any(password in a for a in argv), "the password is on the command line"
    options = redis_options(c.spec["args"])
    argv = [tmp_path.as_posix() if a == options["dir"] else a for a in argv]
    port = free_port()
    argv += ["--port", str(port), "--bind", "127.0.0.1"]
    path = f"{Path(find_redis_server()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = subprocess.Popen(
        argv, env={**env, "PATH": path}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = redis_sync.Redis(port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.ping()
                break
            except redis_sync.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.05)
        with pytest.raises(redis_sync.AuthenticationError):
            redis_sync.Redis(port=port, socket_timeout=2).ping()
        config = client.config_get("*")
        assert int(config["maxmemory"]) == redis_bytes(options["maxmemory"])
        assert config["appendonly"] == "yes" and config["dir"] == tmp_path.as_posix()
        # exec: redis-server itself is the container's process and gets its SIGTERM.
        assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "redis-server"
        assert password.encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
