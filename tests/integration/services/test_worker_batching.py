"""Batching through real Redis with real exported models: many requests, few runs,
rows split back to the right request, mixed sizes, per-request errors isolated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from services.contract import protocol
from services.contract.codec import Reply
from services.contract.errors import ErrorCode
from services.runtime.prepare import generator_inputs
from services.runtime.repository import ModelRepository
from services.runtime.session import SessionOptions, create_session
from tests.support.redis import RedisServer
from tests.support.workers import Client, running_worker, worker_settings


def by_id(replies: list[Reply]) -> dict[str, Reply]:
    ids = [r.id for r in replies]
    assert len(ids) == len(set(ids)), "a request was answered twice"
    return {r.id: r for r in replies}


def direct_session(model_repo: Path, model: str):  # type: ignore[no-untyped-def]
    return create_session(ModelRepository(model_repo).load(model), SessionOptions(provider="cpu"))


def test_many_classifier_requests_share_few_runs(
    redis_server: RedisServer, model_repo: Path
) -> None:
    reference = direct_session(model_repo, "digits-cnn")
    rng = np.random.default_rng(3)
    images = [rng.uniform(0, 16, (1 + i % 4, 1, 8, 8)).astype(np.float32) for i in range(40)]

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        # Everything is queued before the worker starts, so batches fill from the backlog.
        ids = [await client.send({"image": x}) for x in images]
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn", max_batch_rows="64")
        async with running_worker(settings) as worker:
            replies = by_id(await client.replies(len(ids)))
            stats = worker.stats
        total_rows = sum(x.shape[0] for x in images)
        assert stats.inference_count == total_rows == 100
        assert stats.execution_count <= 3, f"{stats.execution_count} runs for 40 requests"
        for request_id, image in zip(ids, images, strict=True):
            reply = replies[request_id]
            assert reply.ok and reply.outputs is not None
            expected = reference.run({"image": image})
            assert reply.outputs["probabilities"].shape == (image.shape[0], 10)
            np.testing.assert_allclose(
                reply.outputs["probabilities"], expected["probabilities"], atol=1e-5
            )
            np.testing.assert_allclose(reply.outputs["logits"], expected["logits"], atol=1e-4)
        assert await redis.xlen(protocol.stream_key("digits-cnn", 1)) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_forecaster_mixed_lengths_and_a_bad_request(
    redis_server: RedisServer, model_repo: Path
) -> None:
    reference = direct_session(model_repo, "sunspots-lstm")
    horizon = reference.metadata.horizon
    rng = np.random.default_rng(5)
    histories = [
        rng.uniform(0, 200, (1 + i % 2, 12 if i % 3 else 20)).astype(np.float32) for i in range(18)
    ]

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "sunspots-lstm")
        ids = [await client.send({"history": h}) for h in histories]
        bad_id = await client.send({"history": np.zeros((1, 12), np.float64)})
        settings = worker_settings(redis_server.url, model_repo, "sunspots-lstm")
        async with running_worker(settings) as worker:
            replies = by_id(await client.replies(len(ids) + 1))
            runs = worker.stats.execution_count
        # Two history lengths -> two shape groups -> two runs for the whole backlog.
        assert runs == 2
        bad = replies.pop(bad_id)
        assert not bad.ok and bad.error is not None
        assert bad.error.code == ErrorCode.INVALID_INPUT
        assert "datatype FP64, expected FP32" in bad.error.message
        for request_id, history in zip(ids, histories, strict=True):
            reply = replies[request_id]
            assert reply.ok and reply.outputs is not None
            assert reply.outputs["forecast"].shape == (history.shape[0], horizon)
            expected = reference.run({"history": history})["forecast"]
            np.testing.assert_allclose(reply.outputs["forecast"], expected, rtol=1e-4, atol=1e-3)
        await redis.aclose()

    asyncio.run(scenario())


def test_generator_seed_gives_the_same_images(redis_server: RedisServer, model_repo: Path) -> None:
    reference = direct_session(model_repo, "digits-gan")
    metadata = reference.metadata

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-gan")
        first = await client.send({}, {"seed": 11, "count": 3, "label": 4})
        second = await client.send({}, {"seed": 11, "count": 3, "label": 4})
        other = await client.send({}, {"seed": 12, "count": 2})
        settings = worker_settings(redis_server.url, model_repo, "digits-gan")
        async with running_worker(settings) as worker:
            replies = by_id(await client.replies(3))
            assert worker.stats.execution_count == 1
        expected = reference.run(generator_inputs(metadata, {"seed": 11, "count": 3, "label": 4}))
        a, b, c = (replies[i].outputs for i in (first, second, other))
        assert a is not None and b is not None and c is not None
        image = metadata.raw["image"]
        assert a["image"].shape == (3, image["channels"], image["height"], image["width"])
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["image"], expected["image"], atol=1e-5)
        assert c["image"].shape[0] == 2 and not np.allclose(c["image"][0], a["image"][0])
        await redis.aclose()

    asyncio.run(scenario())


def test_a_filling_batch_waits_for_the_queue_delay_and_takes_what_arrives(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """With ``max_queue_delay_ms`` set, a lone request waits (on the worker's own timer)
    for its batch to fill; one sent meanwhile joins it: one run, both answered after the
    delay."""
    delay_ms = 1500

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        settings = worker_settings(
            redis_server.url, model_repo, "digits-cnn", max_queue_delay_ms=str(delay_ms)
        )
        async with running_worker(settings) as worker:
            runs = worker.stats.execution_count
            started = time.monotonic()
            first = await client.send({"image": np.zeros((1, 1, 8, 8), np.float32)})
            await asyncio.sleep(0.2)
            second = await client.send({"image": np.ones((2, 1, 8, 8), np.float32)})
            replies = by_id(await client.replies(2))
            waited_s = time.monotonic() - started
            assert worker.stats.execution_count - runs == 1
        assert replies[first].ok and replies[second].ok
        # (50 ms of slack: the worker's clock follows Redis' TIME, re-measured each heartbeat)
        assert delay_ms / 1000 - 0.05 <= waited_s < delay_ms / 1000 + 5.0
        await redis.aclose()

    asyncio.run(scenario())
