"""overlays/scale-to-zero (components/scale-to-zero): the model services scale 0 <-> N on
their stream's length, the gateway holds requests for them meanwhile, knows their
models with no worker (the model volume), and gives a request a deadline that covers a
cold start. What KEDA would read is computed with its own rule (``keda_mode``) against a
real Redis holding an entry queued before any worker existed."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract import protocol
from services.gateway.settings import GatewaySettings
from services.runtime.redis_server import RedisServer
from tests.k8s.manifests import Obj, find, of_kind, render
from tests.k8s.test_cluster_semantics_queue import (
    keda_mode,
    keda_reading,
    redis_triggers,
    scale_target_settings,
)
from tests.k8s.test_config import _settings_env, gateway, gateway_hold, model_services

OVERLAY = "overlays/scale-to-zero"

COLD_START_S = 60
"""What a deadline must leave for a pod to start once KEDA has seen the entry: scheduling,
the image pull (none when the node has it) and the model service's own start (process,
model load, first batch; measured in docs/deployment.md, "Scale to zero": seconds)."""


def keda_active(meta: dict[str, str], reading: int) -> bool:
    """Whether KEDA scales the target from zero: the reading above ``activationLagCount``
    (default 0), in every mode (kedacore/keda pkg/scalers/redis_streams_scaler.go,
    GetMetricsAndActivity)."""
    return reading > int(meta.get("activationLagCount", "0"))


def scaled_objects() -> list[tuple[Obj, Obj]]:
    return list(redis_triggers(render(OVERLAY)))


def test_every_model_service_scales_to_zero_on_its_own_stream_length() -> None:
    objs = render(OVERLAY)
    pairs = scaled_objects()
    assert {s["spec"]["scaleTargetRef"]["name"] for s, _ in pairs} == {
        c.workload["metadata"]["name"] for c in model_services(objs)
    }
    hold = gateway_hold(objs)
    for scaled, trigger in pairs:
        spec, meta = scaled["spec"], trigger["metadata"]
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1, spec
        assert spec["cooldownPeriod"] >= 60, "a model would go to zero between two requests"
        assert keda_mode(meta) == "xlen", meta  # the only count that exists at zero
        settings = scale_target_settings(objs, scaled)
        assert settings.model_version is not None
        assert meta["stream"] == protocol.stream_key(settings.model, settings.model_version)
        assert hold.holds(settings.model, settings.model_version), meta["stream"]


def test_the_other_overlays_keep_their_minimum_and_answer_503() -> None:
    for overlay in ("overlays/cpu", "overlays/gpu"):
        objs = render(overlay)
        assert not gateway_hold(objs), overlay
        assert all(s["spec"]["minReplicaCount"] >= 1 for s in of_kind(objs, "ScaledObject"))


def test_the_gateway_knows_every_model_from_the_model_volume() -> None:
    objs = render(OVERLAY)
    gw = gateway(objs)
    settings = GatewaySettings.from_env(_settings_env(gw, objs))
    assert settings.models_dir is not None
    (mount,) = [m for m in gw.spec["volumeMounts"] if m["mountPath"] == str(settings.models_dir)]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in gw.pod["volumes"] if v["name"] == mount["name"]]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for c in model_services(objs)
        for v in c.pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {volume["persistentVolumeClaim"]["claimName"]}  # the models they load
    find(objs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_the_default_deadline_covers_keda_polling_and_a_cold_start() -> None:
    objs = render(OVERLAY)
    settings = GatewaySettings.from_env(_settings_env(gateway(objs), objs))
    for scaled, _ in scaled_objects():
        model = scale_target_settings(objs, scaled).model
        needed_ms = (scaled["spec"]["pollingInterval"] + COLD_START_S) * 1000
        assert settings.timeout_for(model) >= needed_ms, (model, settings.timeout_for(model))


@pytest.mark.parametrize("mode", ["xlen", "xpending"])
def test_one_entry_queued_before_any_worker_wakes_the_service_only_by_length(mode: str) -> None:
    """As the rendered trigger (XLEN): an empty stream reads 0 (stays at zero), one held
    entry reads 1 (scales up). As a pendingEntriesCount trigger would: no group → error;
    a group left by workers that have gone → 0, never active."""
    (_, trigger), *_ = scaled_objects()
    meta = dict(trigger["metadata"])
    stream = meta["stream"]
    model, version, _ = protocol.parse_stream_key(stream)
    if mode == "xpending":
        meta["consumerGroup"] = protocol.GROUP
        meta["pendingEntriesCount"] = meta.pop("streamLength")
    assert keda_mode(meta) == mode

    async def scenario(url: str) -> None:
        redis: Redis[bytes] = Redis.from_url(url)
        entry = protocol.NewEntry("r1", "axon:r:gw", 0, b"x", budget_ms=60_000)
        if mode == "xlen":
            assert not keda_active(meta, await keda_reading(meta, redis))
            await protocol.enqueue_many(redis, model, version, [entry], limit=10, maxlen=100)
            assert keda_active(meta, await keda_reading(meta, redis))
        else:
            await protocol.enqueue_many(redis, model, version, [entry], limit=10, maxlen=100)
            with pytest.raises(ResponseError, match="NOGROUP"):
                await keda_reading(meta, redis)
            await protocol.ensure_group(redis, stream)
            assert not keda_active(meta, await keda_reading(meta, redis))
        await redis.aclose()

    with RedisServer() as server:
        asyncio.run(scenario(server.url))
