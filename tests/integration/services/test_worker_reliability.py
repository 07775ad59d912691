"""Deadlines, poison input, graceful shutdown, crash recovery and heartbeat expiry,
with real Redis, real models and (for the crash) a real worker process killed by SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis

from services.runtime import protocol
from services.runtime.errors import ErrorCode
from tests.support.onnx_models import write_poison_classifier
from tests.support.redis import RedisServer, wait_for_async
from tests.support.workers import FAST, Client, running_worker, worker_settings

pytestmark = pytest.mark.integration

STREAM = "axon:q:digits-cnn:1"


async def pending_count(redis: Redis[bytes], stream: str, consumer: str | None = None) -> int:
    summary = await redis.xpending(stream, protocol.GROUP)
    if consumer is None:
        return int(summary["pending"])
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"].decode() == consumer)


def image(rows: int = 1, value: float = 3.0) -> np.ndarray:
    return np.full((rows, 1, 8, 8), value, np.float32)


def test_expired_entry_is_never_computed(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        expired = await client.send({"image": image(5)}, deadline_ms=int(time.time() * 1000) - 1)
        live = await client.send({"image": image(2)})
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with running_worker(settings) as worker:
            replies = {r.id: r for r in await client.replies(2)}
            stats = worker.stats
        assert replies[live].ok
        late = replies[expired]
        assert not late.ok and late.error is not None
        assert late.error.code == ErrorCode.DEADLINE_EXCEEDED
        # Only the live request's 2 rows were computed; the 5 expired rows never were.
        assert (stats.inference_count, stats.expired) == (2, 1)
        assert await redis.xlen(STREAM) == 0 and await pending_count(redis, STREAM) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_poison_input_ends_in_the_dead_letter_stream(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    write_poison_classifier(tmp_path)
    stream = "axon:q:poison-cnn:1"

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "poison-cnn")
        good = [
            await client.send({"image": np.full((2, 1, 2, 2), i, np.float32)}) for i in range(4)
        ]
        poison_image = np.zeros((1, 1, 2, 2), np.float32)
        poison_image[0, 0, 0, 0] = 1000.0  # indexes past the model's 17-entry table
        poison = await client.send({"image": poison_image})
        settings = worker_settings(
            redis_server.url,
            tmp_path,
            "poison-cnn",
            max_deliveries="3",
            claim_timeout_ms="100",
            claim_interval_ms="50",
        )
        async with running_worker(settings) as worker:
            replies = {r.id: r for r in await client.replies(5)}
            stats = worker.stats
        assert all(replies[i].ok for i in good), "the poison request failed its batch-mates"
        failed = replies[poison]
        assert not failed.ok and failed.error is not None
        assert failed.error.code == ErrorCode.DEAD_LETTER
        assert "3 deliveries" in failed.error.message
        dead = await redis.xrange("axon:dlq:poison-cnn")
        assert len(dead) == 1
        fields = dead[0][1]
        assert fields[b"id"].decode() == poison
        assert fields[b"deliveries"] == b"4" and b"max 3" in fields[b"reason"]
        assert fields[b"stream"].decode() == stream
        assert (stats.redeliveries, stats.dead_letters) == (3, 1)
        assert await redis.xlen(stream) == 0 and await pending_count(redis, stream) == 0
        assert await client.pending_replies() == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_graceful_stop_drains_what_was_read(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        # A batch that would wait a minute to fill: the worker holds what it read.
        settings = worker_settings(
            redis_server.url,
            model_repo,
            "digits-cnn",
            max_batch_rows="1000",
            max_queue_delay_ms="60000",
        )
        async with running_worker(settings) as worker:
            ids = [await client.send({"image": image(1, float(i))}) for i in range(10)]

            async def all_read() -> bool:
                return await pending_count(redis, STREAM, settings.instance) == 10

            await wait_for_async(all_read, what="the worker to read all 10 entries")
            assert await client.pending_replies() == 0
            assert worker.stats.execution_count == 0
        # Leaving the context stopped the worker gracefully.
        replies = await client.replies(10)
        assert sorted(r.id for r in replies) == sorted(ids) and all(r.ok for r in replies)
        assert await pending_count(redis, STREAM) == 0 and await redis.xlen(STREAM) == 0
        assert await protocol.live_workers(redis, "digits-cnn", 1) == []
        await redis.aclose()

    asyncio.run(scenario())


def start_worker_process(
    redis_url: str, model_repo: Path, instance: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **FAST,
        "AXON_REDIS_URL": redis_url,
        "AXON_MODELS_DIR": str(model_repo),
        "AXON_MODEL": "digits-cnn",
        "AXON_INSTANCE": instance,
        "AXON_MAX_BATCH_ROWS": "1000",
        "AXON_MAX_QUEUE_DELAY_MS": "60000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.standalone"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_crashed_worker_entries_are_claimed_and_answered_once(
    redis_server: RedisServer, model_repo: Path
) -> None:
    process = start_worker_process(redis_server.url, model_repo, "doomed")
    try:

        async def scenario() -> None:
            redis: Redis[bytes] = Redis.from_url(redis_server.url)
            client = Client(redis, "digits-cnn")

            async def registered() -> bool:
                return [
                    w.instance for w in await protocol.live_workers(redis, "digits-cnn", 1)
                ] == ["doomed"]

            await wait_for_async(registered, what="the doomed worker's heartbeat")
            ids = [await client.send({"image": image(1 + i % 3, float(i))}) for i in range(12)]

            async def holding() -> bool:
                return await pending_count(redis, STREAM, "doomed") == 12

            await wait_for_async(holding, what="the doomed worker to hold all 12 entries")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert await client.pending_replies() == 0

            settings = worker_settings(
                redis_server.url,
                model_repo,
                "digits-cnn",
                claim_timeout_ms="300",
                claim_interval_ms="50",
            )
            async with running_worker(settings) as rescuer:
                replies = await client.replies(12)
                assert sorted(r.id for r in replies) == sorted(ids) and all(r.ok for r in replies)
                assert rescuer.stats.redeliveries == 12

                async def doomed_gone() -> bool:
                    live = await protocol.live_workers(redis, "digits-cnn", 1)
                    return [w.instance for w in live] == [settings.instance]

                # The killed worker's heartbeat expires (TTL 1 s); the rescuer stays live.
                await wait_for_async(doomed_gone, what="the killed worker's heartbeat to expire")
            assert await client.pending_replies() == 0, "an entry was answered twice"
            assert await pending_count(redis, STREAM) == 0 and await redis.xlen(STREAM) == 0
            await redis.aclose()

        asyncio.run(scenario())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
