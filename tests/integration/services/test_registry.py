"""The gateway's registry against a real Redis: a model whose workers vanished keeps
taking requests for ``AXON_NO_WORKER_WAIT_MS``, then answers 503 (issue 9, item 13);
malformed heartbeats are skipped (item 2)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.contract import protocol
from services.contract.protocol import WorkerInfo
from services.gateway.errors import UnavailableError
from services.gateway.registry import Registry
from services.gateway.transport_redis import RedisTransport
from tests.support.redis import RedisServer


def test_no_worker_wait_then_503(redis_server: RedisServer, model_repo: Path) -> None:
    metadata = json.loads((model_repo / "digits-cnn" / "1" / "metadata.json").read_text())
    info = WorkerInfo("w1", "digits-cnn", 1, "CPUExecutionProvider", 8, metadata, {}, 0, 0)
    key = protocol.worker_key("digits-cnn", 1, "w1")
    now = [100.0]

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        registry = Registry(
            RedisTransport(redis, "t", block_s=1.0),
            refresh_ms=100,
            no_worker_wait_ms=15_000,
            clock=lambda: now[0],
        )
        registry.reachable = True
        await redis.set(key, info.to_json(), px=60_000)
        await redis.set(protocol.worker_key("digits-cnn", 1, "junk"), b"{not json", px=60_000)
        await registry.refresh()
        assert registry.ready("digits-cnn").ready  # the junk heartbeat is skipped
        await redis.delete(key)
        await registry.refresh()
        now[0] += 14.9  # gone for less than the wait: still taking requests
        mv = registry.ready("digits-cnn")
        assert not mv.ready and registry.recently_served(mv)
        now[0] += 0.2  # gone for longer: 503 at once
        with pytest.raises(UnavailableError, match="no live worker"):
            registry.ready("digits-cnn")
        await redis.delete(protocol.worker_key("digits-cnn", 1, "junk"))
        await redis.aclose()

    asyncio.run(scenario())


def test_a_model_never_served_is_503_at_once(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        registry = Registry(
            RedisTransport(redis, "t", block_s=1.0), refresh_ms=100, no_worker_wait_ms=15_000
        )
        registry.reachable = True
        registry.add_repository(model_repo)
        await registry.refresh()
        with pytest.raises(UnavailableError, match="no live worker"):
            registry.ready("sunspots-lstm")
        await redis.aclose()

    asyncio.run(scenario())
