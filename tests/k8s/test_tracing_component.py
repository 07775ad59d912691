"""components/tracing (rendered in overlays/cpu-tracing): every Axon process gets the
standard OTEL_* variables that turn its tracing on, their endpoint is the collector's
Service on the port that reaches its OTLP/HTTP receiver, and the collector's own
pipeline is complete and probed on its health port."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from services.contract.tracing import TracingConfig
from tests.k8s.manifests import containers, find, name, of_kind, pod_spec, render
from tests.k8s.test_config import provided

OVERLAY = "overlays/cpu-tracing"


def test_every_axon_process_exports_to_the_collector() -> None:
    objs = render(OVERLAY)
    service = find(objs, "Service", "axon-otel-collector")
    collector = find(objs, "Deployment", "axon-otel-collector")
    ports = {p["name"]: p["containerPort"] for c in pod_spec(collector)["containers"]  # type: ignore[index]
             for p in c["ports"]}  # fmt: skip
    traced = 0
    for c in containers(objs):
        component = c.workload["metadata"]["labels"].get("app.kubernetes.io/component")
        if c.init or component not in ("gateway", "model-service"):
            continue
        env = provided(c, objs)
        config = TracingConfig.from_env(env)
        assert config == TracingConfig(enabled=True), f"{c.where}: tracing is not on"
        url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert url.hostname == name(service).split("/")[-1], c.where
        port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
        assert ports[port["targetPort"]] == 4318, f"{c.where}: not the OTLP/HTTP receiver"
        traced += 1
    assert traced >= 4  # the gateway and the three model services


def test_the_collector_pipeline_is_complete_and_probed() -> None:
    objs = render(OVERLAY)
    config = yaml.safe_load(
        find(objs, "ConfigMap", "axon-otel-collector-config")["data"]["config.yaml"]
    )
    pipeline = config["service"]["pipelines"]["traces"]
    for part in ("receivers", "processors", "exporters"):
        assert pipeline[part] and set(pipeline[part]) <= set(config[part]), part
    collector = find(objs, "Deployment", "axon-otel-collector")
    spec = pod_spec(collector)
    assert spec is not None
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(f":{ports['otlp-grpc']}")
    assert receivers["http"]["endpoint"].endswith(f":{ports['otlp-http']}")
    health = config["extensions"]["health_check"]["endpoint"]
    assert (
        health.endswith(f":{ports['health']}") and "health_check" in config["service"]["extensions"]
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert container["args"] == ["--config=/conf/config.yaml"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/conf"
    # Reachable by Axon pods only, on the OTLP ports.
    (policy,) = [p for p in of_kind(objs, "NetworkPolicy") if "otel" in p["metadata"]["name"]]
    (rule,) = policy["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"otlp-grpc", "otlp-http"}
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "axon"}}}]
