"""Send one validated request through Redis and wait for its reply (or its deadline)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from services.gateway.errors import (
    BacklogFullError,
    DeadlineError,
    UnavailableError,
    WorkerReplyError,
)
from services.gateway.listener import ReplyListener
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import ModelVersion, Registry
from services.gateway.settings import GatewaySettings
from services.runtime import protocol
from services.runtime.codec import Scalar, encode_request
from services.runtime.protocol import RedisClient


@dataclass
class Dispatcher:
    """Backlog check → XADD → await the listener's future, bounded by the deadline."""

    redis: RedisClient
    listener: ReplyListener
    settings: GatewaySettings
    metrics: GatewayMetrics
    registry: Registry

    def __post_init__(self) -> None:
        self._counter = itertools.count(1)

    async def infer(
        self,
        mv: ModelVersion,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        parameters: Mapping[str, Scalar],
        *,
        request_id: str,
        timeout_ms: int,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The reply's output tensors; raises a ``GatewayError`` for every failure."""
        arrived = time.time()
        deadline_ms = int(arrived * 1000) + timeout_ms
        limit = self.settings.backlog_limit_for(mv.name)
        body = encode_request(inputs, {k: v for k, v in parameters.items() if k != "timeout_ms"})
        entry_id = f"{next(self._counter)}:{request_id}"
        try:
            waiting = await protocol.backlog(self.redis, mv.name, mv.version)
            if waiting >= limit:
                raise BacklogFullError(
                    f"model {mv.name!r} version {mv.version} has {waiting} requests queued "
                    f"(limit {limit}); retry after {self.settings.retry_after_s}s",
                    self.settings.retry_after_s,
                )
            future = self.listener.expect(entry_id)
            await protocol.enqueue(
                self.redis,
                mv.name,
                mv.version,
                request_id=entry_id,
                reply_to=self.listener.reply_to,
                deadline_ms=deadline_ms,
                body=body,
                maxlen=max(limit * 4, 1000),
            )
        except (RedisError, OSError):
            self.listener.forget(entry_id)
            self.registry.mark_down()
            raise UnavailableError("Redis is unreachable; try again shortly") from None
        inflight = self.metrics.inflight.labels(mv.name)
        inflight.inc()
        try:
            left = deadline_ms / 1000 - time.time()
            reply = await asyncio.wait_for(future, timeout=max(left, 0.0))
        except TimeoutError:
            raise DeadlineError(
                f"no reply within the deadline of {timeout_ms} ms (model {mv.name!r}); "
                "a worker never computes a request past its deadline"
            ) from None
        finally:
            inflight.dec()
            self.listener.forget(entry_id)
        self.metrics.queue_wait.labels(mv.name).observe(time.time() - arrived)
        if not reply.ok:
            error = reply.error
            code, message = (error.code, error.message) if error else ("internal", "unknown")
            raise WorkerReplyError(code, message)
        return reply.outputs or {}
