"""``AXON_CAPTURE_MAX_AGE_S`` on real Redis: an append drops the captures older than the
limit before its newest one and sets the stream to expire that long after it; the memory
transport applies the same rule by ``at_ms``."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from services.contract import capture
from services.contract.capture import Captured
from services.gateway.transport_memory import MemoryTransport
from tests.support.redis import RedisServer

HOUR_S = 3600


def item(name: str, at_ms: int) -> Captured:
    return Captured(name, 1, "classify", b"body", b"reply", 1000, at_ms)


def test_an_append_trims_what_is_older_than_the_limit_and_sets_the_expiry(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        key = capture.capture_key("age-model")
        now_ms = int(time.time() * 1000)
        # Entries as older appends left them (XADD ids are Redis' clock in ms).
        await redis.xadd(key, item("two-hours", 0).fields(), id=f"{now_ms - 2 * HOUR_S * 1000}-0")  # type: ignore[arg-type]
        await redis.xadd(key, item("ten-minutes", 0).fields(), id=f"{now_ms - 600_000}-0")  # type: ignore[arg-type]
        await capture.append(
            redis, "age-model", [item("new", now_ms)], maxlen=1000, max_age_s=HOUR_S
        )
        kept = await capture.read_newest(redis, "age-model", 10)
        assert [c.request_id for c in kept] == ["ten-minutes", "new"]
        assert 0 < await redis.ttl(key) <= HOUR_S
        await redis.aclose()

    asyncio.run(scenario())


def test_the_memory_transport_applies_the_age_by_at_ms() -> None:
    async def scenario() -> None:
        transport = MemoryTransport("age")
        now_ms = int(time.time() * 1000)
        old = [item("two-hours", now_ms - 2 * HOUR_S * 1000), item("ten-minutes", now_ms - 600_000)]
        await transport.capture("m", old, maxlen=1000, max_age_s=4 * HOUR_S)
        await transport.capture("m", [item("new", now_ms)], maxlen=1000, max_age_s=HOUR_S)
        kept = await transport.read_captures("m", 10)
        assert [c.request_id for c in kept] == ["ten-minutes", "new"]

    asyncio.run(scenario())
