"""ReplyListener readiness: healthy once Redis answers, not once the first pop returns."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.contract.codec import Reply, encode_reply
from services.gateway.listener import ReplyListener


class BlockingRedis:
    """Answers INFO; the blocking pop waits until the test releases it."""

    def __init__(self) -> None:
        self.popping = asyncio.Event()
        self.release = asyncio.Event()
        self.payloads: list[bytes] = []

    async def info(self, section: str) -> dict[str, Any]:
        return {"redis_version": "7.2.4"}

    async def execute_command(self, *args: Any) -> Any:
        assert args[0] == "BLMPOP"
        self.popping.set()
        await self.release.wait()
        self.release.clear()
        payloads, self.payloads = self.payloads, []
        return [args[3], payloads] if payloads else None


def test_healthy_while_the_first_blocking_pop_is_still_waiting() -> None:
    async def scenario() -> None:
        redis = BlockingRedis()
        listener = ReplyListener(redis, "axon:r:test", block_s=3600.0)
        assert not listener.healthy
        task = asyncio.create_task(listener.run())
        await redis.popping.wait()
        assert listener.healthy  # the pop has not returned (block_s is an hour)
        future = listener.expect("r1")
        redis.payloads = [encode_reply(Reply.failure("r1", "internal", "x"))]
        redis.release.set()
        reply = await future
        assert reply.id == "r1" and listener.healthy
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


class FailingRedis:
    async def info(self, section: str) -> dict[str, Any]:
        raise ConnectionError("refused")


def test_not_healthy_while_redis_is_unreachable() -> None:
    async def scenario() -> None:
        redis = FailingRedis()
        errors: list[None] = []
        seen = asyncio.Event()

        def on_error() -> None:
            errors.append(None)
            seen.set()

        listener = ReplyListener(redis, "axon:r:test", block_s=1.0, on_redis_error=on_error)
        task = asyncio.create_task(listener.run())
        await seen.wait()
        assert not listener.healthy
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
