"""Run real workers in-process and talk to them the way the gateway does."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import prometheus_client
from redis.asyncio import Redis

from services.contract import protocol, redis_client
from services.contract.codec import Reply, Scalar, decode_reply, encode_request
from services.runtime.metrics import WorkerMetrics, prometheus_backend
from services.runtime.settings import WorkerSettings
from services.runtime.worker import Worker, load_model

FAST = {
    "AXON_READ_BLOCK_MS": "50",
    "AXON_HEARTBEAT_INTERVAL_MS": "200",
    "AXON_HEARTBEAT_TTL_MS": "1000",
    "AXON_WARMUP": "true",
}
"""Settings that keep tests responsive (short blocking reads and heartbeats)."""


def worker_settings(
    redis_url: str, models_dir: Path, model: str, **overrides: str
) -> WorkerSettings:
    """Settings for a test worker; ``overrides`` are AXON_* names without the prefix."""
    env = {
        "AXON_REDIS_URL": redis_url,
        "AXON_MODELS_DIR": str(models_dir),
        "AXON_MODEL": model,
        "AXON_INSTANCE": f"test-{uuid.uuid4().hex[:8]}",
        **FAST,
        **{f"AXON_{key.upper()}": value for key, value in overrides.items()},
    }
    return WorkerSettings.from_env(env)


async def enqueue(
    redis: Redis[bytes],
    model: str,
    version: int,
    *,
    request_id: str,
    reply_to: str,
    deadline_ms: int,
    body: bytes,
) -> str:
    """Queue one request as the gateway does (``protocol.enqueue_many``, no budget, no
    backlog limit); returns its stream entry id."""
    entry = protocol.NewEntry(request_id, reply_to, deadline_ms, body)
    (answer,) = await protocol.enqueue_many(
        redis, model, version, [entry], limit=2**62, maxlen=2**62
    )
    assert isinstance(answer, str), f"refused: {answer}"
    return answer


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings) -> AsyncIterator[Worker]:
    """A worker serving in a task of the current loop, on the client production builds
    (``redis_client.connect``: ``AXON_REDIS_FAST`` as ``settings`` say); stopped
    gracefully on exit."""
    redis: Redis[bytes] = redis_client.connect(
        settings.redis_url,
        mode=settings.redis_mode,
        socket_timeout_s=settings.read_block_ms / 1000 + 10.0,
        connect_timeout_s=10.0,
        fast=settings.redis_fast,
    )
    metrics = WorkerMetrics.create(prometheus_backend(prometheus_client.CollectorRegistry()))
    worker = Worker(redis, load_model(settings), settings, metrics=metrics)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.wait_registered(), timeout=30)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
        await redis.aclose()


class Client:
    """The gateway's side of the protocol: enqueue requests, collect replies by id."""

    def __init__(self, redis: Redis[bytes], model: str, version: int = 1) -> None:
        self.redis = redis
        self.model = model
        self.version = version
        self.reply_to = protocol.reply_key(f"test-gw-{uuid.uuid4().hex[:8]}", model, version)

    async def send(
        self,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        parameters: Mapping[str, Scalar] | None = None,
        *,
        deadline_ms: int | None = None,
        request_id: str | None = None,
    ) -> str:
        request_id = request_id or uuid.uuid4().hex
        deadline = deadline_ms if deadline_ms is not None else int(time.time() * 1000) + 120_000
        await enqueue(
            self.redis,
            self.model,
            self.version,
            request_id=request_id,
            reply_to=self.reply_to,
            deadline_ms=deadline,
            body=encode_request(inputs, parameters),
        )
        return request_id

    async def replies(self, count: int, timeout_s: float = 30.0) -> list[Reply]:
        """Exactly the next ``count`` replies (fails if they do not come in time)."""
        replies: list[Reply] = []
        deadline = time.monotonic() + timeout_s
        while len(replies) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(replies)} of {count} replies")
            payloads = await protocol.pop_replies(
                self.redis, self.reply_to, timeout_s=min(left, 1.0)
            )
            replies.extend(decode_reply(p) for p in payloads)
        return replies

    async def pending_replies(self) -> int:
        return int(await self.redis.llen(self.reply_to))
