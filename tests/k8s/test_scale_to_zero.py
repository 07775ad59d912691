"""overlays/scale-to-zero (components/scale-to-zero): the model services scale 0 <-> N on
the length of their version's two streams (requests and the job lane), the gateway holds
requests for them meanwhile, knows their models with no worker (the model volume), and
gives a request a deadline that covers a cold start. What KEDA would read is computed
with its own rule (``keda_mode``) against a real Redis holding an entry queued before
any worker existed: a request, or an async job alone."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract import jobs, protocol
from services.contract.codec import Reply
from services.contract.jobs import NewJob
from services.gateway.jobs import JobId, JobMeta
from services.gateway.settings import GatewaySettings
from services.runtime.redis_server import RedisServer
from tests.k8s.manifests import Obj, find, name, of_kind, render
from tests.k8s.test_cluster_semantics_queue import (
    VersionTriggers,
    keda_mode,
    keda_reading,
    redis_triggers,
    scale_target_settings,
    version_triggers,
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
    for scaled in of_kind(objs, "ScaledObject"):
        spec = scaled["spec"]
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1, spec
        assert spec["cooldownPeriod"] >= 60, "a model would go to zero between two requests"
        # Both lanes wake it: a held request and a queued job (or shadow copy).
        for trigger in version_triggers(objs, scaled).both:
            meta = trigger["metadata"]
            assert keda_mode(meta) == "xlen", meta  # the only count that exists at zero
            assert int(meta.get("activationLagCount", "0")) == 0, meta  # one entry wakes it
        settings = scale_target_settings(objs, scaled)
        assert settings.model_version is not None
        assert hold.holds(settings.model, settings.model_version), name(scaled)


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
    objs = render(OVERLAY)
    meta = dict(version_triggers(objs, of_kind(objs, "ScaledObject")[0]).request["metadata"])
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


def test_one_job_alone_wakes_the_service_and_its_answer_lets_it_go_back_to_zero() -> None:
    """An async job (``Prefer: respond-async``) submitted to a model version at zero,
    queued as the gateway queues it (``jobs.enqueue_job`` with the rendered gateway's
    job limits) and no request: the job trigger reads 1 and activates the scaler while
    the request trigger reads 0. Once a worker has read and answered it
    (``jobs.read_lanes``, ``jobs.complete_jobs``: XACK + XDEL) both read 0 again, so
    after the cooldown KEDA takes the service back to zero."""
    objs = render(OVERLAY)
    gw = GatewaySettings.from_env(_settings_env(gateway(objs), objs))
    for scaled in of_kind(objs, "ScaledObject"):
        triggers = version_triggers(objs, scaled)
        settings = scale_target_settings(objs, scaled)
        assert settings.model_version is not None
        with RedisServer() as server:
            asyncio.run(
                _one_job_alone(server.url, gw, triggers, settings.model, settings.model_version)
            )


async def _one_job_alone(
    url: str, gw: GatewaySettings, triggers: VersionTriggers, model: str, version: int
) -> None:
    redis: Redis[bytes] = Redis.from_url(url)
    request_meta, job_meta = triggers.request["metadata"], triggers.job["metadata"]
    where = job_meta["stream"]

    async def readings() -> tuple[int, int]:
        return await keda_reading(request_meta, redis), await keda_reading(job_meta, redis)

    assert await readings() == (0, 0), where
    # As services/gateway/job_endpoints.py submit() queues it.
    key = JobId.new(model, version).store_key(b"")
    now_ms = int(time.time() * 1000)
    meta = JobMeta("infer", {}, model, version, now_ms)
    entry = protocol.NewEntry(
        "req-1", key, now_ms + gw.job_timeout_ms, b"x", budget_ms=gw.job_timeout_ms
    )
    limit = gw.job_backlog_limit
    answer = await jobs.enqueue_job(
        redis, model, version, NewJob(key, meta.encode(), gw.job_ttl_s, entry),
        limit=limit, maxlen=max(limit * 4, 1000), byte_limit=gw.job_backlog_bytes,
    )  # fmt: skip
    assert isinstance(answer, str), answer
    assert await readings() == (0, 1), where
    assert not keda_active(request_meta, 0) and keda_active(job_meta, 1), where
    # The first worker: its groups (at id 0), one read of both lanes, the answer.
    request_stream = protocol.stream_key(model, version)
    job_stream = jobs.job_stream_key(model, version)
    for stream in (request_stream, job_stream):
        await protocol.ensure_group(redis, stream)
    lanes = await jobs.read_lanes(
        redis, [request_stream, job_stream], "worker-a", count=8, block_ms=None
    )
    assert list(lanes) == [job_stream], lanes
    (read,) = lanes[job_stream]
    assert read.reply_to == key
    assert await readings() == (0, 1), where  # read, not answered: still outstanding
    reply = protocol.Outgoing(key, Reply.failure(read.request_id or "", "internal", ""))
    done = await jobs.complete_jobs(
        redis, model, version, [(reply, read.entry_id)], [len(read.body or b"")]
    )
    assert done == 1
    assert await readings() == (0, 0), where
    record = await jobs.get_job(redis, key)
    assert record is not None and record.reply is not None
    await redis.aclose()
