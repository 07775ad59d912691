"""A worker survives every class of Redis error (issue 9, item 1) and comes up when Redis
starts after it (item 3): real redis-server processes, a real model, the real loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import prometheus_client
import pytest
from redis.asyncio import Redis

from services.contract import protocol
from services.runtime.metrics import WorkerMetrics, prometheus_backend
from services.runtime.redis_server import RedisServer, free_port
from services.runtime.worker import Worker, load_model
from tests.support.redis import wait_for_async
from tests.support.workers import Client, running_worker, worker_settings


def image(rows: int = 1) -> np.ndarray:
    return np.full((rows, 1, 8, 8), 3.0, np.float32)


async def heartbeat_count(redis: Redis[bytes], model: str) -> int:
    return len(await protocol.live_workers(redis, model))


def test_worker_survives_oom_and_readonly_blips(model_repo: Path) -> None:
    """``maxmemory`` exhausted (every write answered OOM), then the server turned into a
    read-only replica (READONLY), each for longer than the heartbeat TTL: afterwards the
    same worker, without a restart, heart-beats again and answers requests."""

    async def scenario(server: RedisServer) -> None:
        redis: Redis[bytes] = Redis.from_url(server.url)
        admin: Redis[bytes] = Redis.from_url(server.url)
        settings = worker_settings(server.url, model_repo, "digits-cnn")
        client = Client(redis, "digits-cnn")
        async with running_worker(settings) as worker:
            first = await client.send({"image": image()})
            assert (await client.replies(1))[0].id == first
            for fault, undo in (
                (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0")),
                (("REPLICAOF", "127.0.0.1", str(free_port())), ("REPLICAOF", "NO", "ONE")),
            ):
                await admin.execute_command(*fault)
                # Longer than the heartbeat TTL (1 s): the key expires, writes fail.
                await asyncio.sleep(1.6)
                assert await heartbeat_count(admin, "digits-cnn") == 0
                await admin.execute_command(*undo)

                async def registered() -> bool:
                    return await heartbeat_count(admin, "digits-cnn") == 1

                await wait_for_async(registered, timeout_s=10, what="the heartbeat back")
                sent = await client.send({"image": image(2)})
                reply = (await client.replies(1))[0]
                assert reply.id == sent and reply.ok
                assert worker.alive and worker.ready
        await redis.aclose()
        await admin.aclose()

    with RedisServer() as server:
        asyncio.run(scenario(server))


def test_worker_started_before_redis_registers_when_it_comes(model_repo: Path) -> None:
    """A worker whose Redis is not there yet retries (with a backoff) instead of dying,
    registers as soon as Redis listens, and serves."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def scenario() -> None:
        settings = worker_settings(url, model_repo, "digits-cnn")
        redis: Redis[bytes] = Redis.from_url(url)
        metrics = WorkerMetrics.create(prometheus_backend(prometheus_client.CollectorRegistry()))
        worker = Worker(redis, load_model(settings), settings, metrics=metrics)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(1.5)  # several failed attempts
        assert not task.done() and not worker.ready and worker.alive
        with RedisServer(port=port) as server:
            started = time.monotonic()
            await asyncio.wait_for(worker.wait_registered(), timeout=15)
            # The backoff is capped at 5 s: registration follows within one pause.
            assert time.monotonic() - started < 10
            client = Client(Redis.from_url(server.url), "digits-cnn")
            sent = await client.send({"image": image()})
            reply = (await client.replies(1))[0]
            assert reply.id == sent and reply.ok
            worker.stop()
            await asyncio.wait_for(task, timeout=30)
            await client.redis.aclose()
        await redis.aclose()

    asyncio.run(scenario())


def test_worker_stopped_before_redis_came_ends_cleanly(model_repo: Path) -> None:
    """``stop()`` while still waiting for Redis ends ``run`` without an error."""
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        settings = worker_settings(url, model_repo, "digits-cnn")
        redis: Redis[bytes] = Redis.from_url(url)
        worker = Worker(redis, load_model(settings), settings)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
        assert not worker.ready
        await redis.aclose()

    asyncio.run(scenario())


def test_running_worker_reports_itself_alive(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with running_worker(settings) as worker:
            assert worker.alive
            # A heartbeat task that ended (a bug) turns liveness red.
            assert worker._heartbeat_task is not None
            worker._heartbeat_task.cancel()
            await asyncio.sleep(0.05)
            assert not worker.alive

    asyncio.run(scenario())


def test_dead_workers_entries_are_taken_over_without_the_claim_timeout(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """Entries pending with a consumer whose heartbeat key is gone are claimed once
    they are a heartbeat TTL old, long before the (10 min) claim timeout; entries of a
    consumer that still heart-beats are left alone."""
    stream = protocol.stream_key("digits-cnn", 1)

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        await redis.delete(stream)
        await protocol.ensure_group(redis, stream)
        client = Client(redis, "digits-cnn")
        dead = await client.send({"image": image()})
        await protocol.read_entries(redis, stream, "dead-worker", count=1, block_ms=None)
        live = await client.send({"image": image()})
        await protocol.read_entries(redis, stream, "busy-worker", count=1, block_ms=None)
        await redis.set(protocol.worker_key("digits-cnn", 1, "busy-worker"), b"{}", px=60_000)
        settings = worker_settings(
            redis_server.url, model_repo, "digits-cnn", claim_timeout_ms="600000",
            claim_interval_ms="100",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            (reply,) = await client.replies(1, timeout_s=15)
            await asyncio.sleep(1.5)
            stats = worker.stats
        assert reply.id == dead and reply.ok
        assert stats.redeliveries == 1
        summary = await redis.xpending_range(stream, protocol.GROUP, "-", "+", 10)
        assert [(r["consumer"], r["times_delivered"]) for r in summary] == [(b"busy-worker", 1)], (
            "the live consumer's entry was taken"
        )
        assert live not in {r.id for r in await client.replies(0)}
        await redis.delete(stream, protocol.worker_key("digits-cnn", 1, "busy-worker"))
        await redis.aclose()

    asyncio.run(scenario())


def test_a_slow_gpu_probe_never_delays_the_heartbeat(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-smi can take seconds on a loaded node (its timeout is 5 s), longer than the
    heartbeat TTL: sampled off the heartbeat's path, it never lets the key expire."""
    probes: list[float] = []

    def slow_probe(device_id: int = 0) -> int:
        probes.append(time.monotonic())
        time.sleep(1.5)  # > the 1 s TTL of these settings
        return 1 << 20

    monkeypatch.setattr("services.runtime.worker.gpu_memory_used_bytes", slow_probe)

    async def scenario(server: RedisServer) -> None:
        admin: Redis[bytes] = Redis.from_url(server.url)
        settings = worker_settings(server.url, model_repo, "digits-cnn")
        async with running_worker(settings) as worker:
            worker.session.provider = "CUDAExecutionProvider"  # as on a GPU node
            seen = []
            for _ in range(30):  # 3 s: two slow probes, fifteen heartbeat periods
                seen.append(await heartbeat_count(admin, "digits-cnn"))
                await asyncio.sleep(0.1)
            assert seen == [1] * 30
            assert 1 <= len(probes) <= 3  # one probe at a time, not one per heartbeat
        await admin.aclose()

    with RedisServer() as server:
        asyncio.run(scenario(server))
