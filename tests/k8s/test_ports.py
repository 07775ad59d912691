"""Ports across the manifests and the code: what the gateway listens on (its command
line, else AXON_GRPC_PORT, else the code's default) is what its container declares, its
Service exposes (gRPC as HTTP/2 cleartext), the NetworkPolicies admit, and the probes
target; and every Service port of every overlay gets through the NetworkPolicies."""

from __future__ import annotations

import json

import pytest

from services.gateway.settings import GatewaySettings
from tests.k8s.manifests import (
    LONG_RUNNING_KINDS,
    ROOT,
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
from tests.k8s.test_config import gateway, provided

GRPC_DEFAULT = GatewaySettings.grpc_port
"""The code's default gRPC port (8001, Triton's): clients assume it, so the Service keeps it."""
H2C = "kubernetes.io/h2c"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def option(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``), None if absent."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def listens_on(gw: Container, objs: tuple[Obj, ...]) -> dict[str, int]:
    """The gateway's ports as ``python -m services.gateway`` picks them (__main__.py): the
    option, else (gRPC) AXON_GRPC_PORT, else the default. Both must be set explicitly."""
    http = option(gw.argv, "--port")
    grpc = option(gw.argv, "--grpc-port") or provided(gw, objs).get("AXON_GRPC_PORT") or None
    assert http is not None, f"{gw.where}: give --port"
    assert grpc is not None, f"{gw.where}: give --grpc-port or AXON_GRPC_PORT"
    return {"http": int(http), "grpc": int(grpc)}


def declared(c: Container) -> dict[str, Obj]:
    return {p["name"]: p for p in c.spec.get("ports", []) if "name" in p}


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_declares_the_ports_it_listens_on(overlay: str) -> None:
    objs = render(overlay)
    gw = gateway(objs)
    ports = declared(gw)
    for port_name, number in listens_on(gw, objs).items():
        assert port_name in ports, f"{gw.where}: no containerPort named {port_name}"
        assert ports[port_name]["containerPort"] == number, (gw.where, port_name)
        assert ports[port_name].get("protocol", "TCP") == "TCP", (gw.where, port_name)
    assert ports["grpc"]["containerPort"] == GRPC_DEFAULT == 8001


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_service_exposes_grpc_as_h2c(overlay: str) -> None:
    objs = render(overlay)
    ports = {p["name"]: p for p in find(objs, "Service", "axon-gateway")["spec"]["ports"]}
    grpc = ports["grpc"]
    assert grpc["targetPort"] == "grpc"
    assert grpc["port"] == GRPC_DEFAULT, "gRPC clients default to 8001"
    assert grpc.get("protocol", "TCP") == "TCP"
    assert grpc.get("appProtocol") == H2C, "ingress controllers / meshes must speak HTTP/2"
    assert ports["http"].get("appProtocol") != H2C, "the http port serves HTTP/1.1 clients"


def _admitting_rules(objs: tuple[Obj, ...], workload: Obj, port: Obj) -> list[Obj]:
    """Ingress rules of the NetworkPolicies selecting ``workload``'s pods that admit the
    container port ``port`` (by name or number; a rule without ports admits every port)."""
    labels = pod_labels(workload)
    rules = []
    for policy in of_kind(objs, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector.items() <= labels.items():
            continue
        for rule in policy["spec"].get("ingress", []):
            allowed = rule.get("ports")
            if allowed is None or any(
                p.get("port") in (port.get("name"), port["containerPort"])
                and p.get("protocol", "TCP") == port.get("protocol", "TCP")
                for p in allowed
            ):
                rules.append(rule)
    return rules


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_every_service_port_gets_through_the_network_policies(overlay: str) -> None:
    """Ingress is denied by default: a Service port no policy admits is an outage."""
    objs = render(overlay)
    workloads = [o for o in objs if pod_spec(o) is not None]
    for svc in of_kind(objs, "Service"):
        selector = svc["spec"]["selector"]
        for w in [w for w in workloads if selector.items() <= pod_labels(w).items()]:
            ports = {
                key: p
                for c in containers((w,))
                for p in c.spec.get("ports", [])
                for key in (p.get("name"), p["containerPort"])
            }
            for port in svc["spec"]["ports"]:
                target = ports[port["targetPort"]]
                assert _admitting_rules(objs, w, target), f"{name(svc)} {port['name']} blocked"


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_grpc_is_admitted_wherever_http_is(overlay: str) -> None:
    objs = render(overlay)
    gw = gateway(objs)
    ports = declared(gw)

    def sources(port_name: str) -> set[str]:
        rules = _admitting_rules(objs, gw.workload, ports[port_name])
        return {json.dumps(rule.get("from", "anywhere"), sort_keys=True) for rule in rules}

    assert sources("http"), "the gateway admits no HTTP clients"
    assert sources("grpc") == sources("http")


def _probe_port(probe: Obj) -> tuple[str, str | int] | None:
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if handler in probe:
            return handler, probe[handler]["port"]
    return None  # exec


@pytest.mark.parametrize("relative", kustomizations())
def test_probes_target_ports_the_container_declares(relative: str) -> None:
    for c in containers(render(relative)):
        if c.init or c.workload["kind"] not in LONG_RUNNING_KINDS:
            continue
        names = set(declared(c))
        numbers = {p["containerPort"] for p in c.spec.get("ports", [])}
        for kind in PROBES:
            found = _probe_port(c.spec.get(kind, {}))
            if found is None:
                continue
            handler, port = found
            if handler == "grpc":  # Kubernetes' gRPC probe takes a number, never a name
                assert isinstance(port, int), f"{c.where} {kind}: grpc.port must be a number"
            assert port in names | numbers, f"{c.where} {kind}: port {port} is not declared"


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_gateway_probes_stay_on_http(overlay: str) -> None:
    """Why none is on gRPC: docs/deployment.md, "Ports and probes" (the same state as
    /healthz/ready, health RPCs share the RPC cap, a startup probe would wait for Redis)."""
    gw = gateway(render(overlay))
    probes = {kind: gw.spec[kind] for kind in PROBES}
    for kind, probe in probes.items():
        assert "grpc" not in probe, f"{gw.where} {kind}: read docs/deployment.md first"
        assert probe["httpGet"]["port"] == "http", (gw.where, kind)
    assert probes["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    for kind in ("startupProbe", "livenessProbe"):
        assert probes[kind]["httpGet"]["path"] in ("/v2/health/live", "/healthz/live"), kind


def test_ports_are_documented() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    section = doc.split("## Ports and probes", 1)[1].split("\n## ", 1)[0]
    objs = render(SERVING_OVERLAYS[0])
    gw = gateway(objs)
    for port in gw.spec["ports"]:
        assert f"`{port['name']}`" in section and str(port["containerPort"]) in section, port
    for port in find(objs, "Service", "axon-gateway")["spec"]["ports"]:
        assert str(port["port"]) in section, port
    assert H2C in section
