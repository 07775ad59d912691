"""The worker's outbox with an injected completion call and clocks: no Redis, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from services.contract.codec import Reply
from services.contract.errors import ErrorCode
from services.contract.protocol import Outgoing
from services.runtime.outbox import DELIVERY_BACKOFF_S, STOP_DELIVERY_S, Answer, Outbox


class FakeRedis:
    """The injected completion call: raises ``error`` for the first ``failures`` calls
    and records what every call was given."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or RedisConnectionError("Connection refused")
        self.calls: list[list[tuple[str, str, bool]]] = []
        self.sizes: list[list[int]] = []
        self.last: list[Reply] = []

    async def complete(self, answers: Sequence[tuple[Outgoing, str]], sizes: Sequence[int]) -> int:
        self.calls.append([(o.reply.id, entry_id, o.reply.ok) for o, entry_id in answers])
        self.sizes.append(list(sizes))
        self.last = [outgoing.reply for outgoing, _ in answers]
        if self.failures:
            self.failures -= 1
            raise self.error
        return len(answers)


class Clocks:
    """Deadline clock (ms) and monotonic clock (s) that move only when ``sleep`` is called."""

    def __init__(self) -> None:
        self.now_ms = 1_000_000.0
        self.monotonic_s = 50.0
        self.pauses: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now_ms += seconds * 1000.0
        self.monotonic_s += seconds


def make_outbox(
    redis: FakeRedis, clocks: Clocks, *, stopping: bool = False
) -> tuple[Outbox, list[int]]:
    expired: list[int] = []
    outbox = Outbox(
        redis.complete,
        now_ms=lambda: clocks.now_ms,
        on_expired=lambda: expired.append(1),
        stopping=lambda: stopping,
        monotonic=lambda: clocks.monotonic_s,
        sleep=clocks.sleep,
    )
    return outbox, expired


def result(request_id: str, deadline_ms: float | None = None, size: int = 10) -> Answer:
    outputs = {"y": np.zeros((1, 2), np.float32)}
    return Answer(
        Outgoing("axon:r:gw", Reply.success(request_id, outputs)),
        f"{request_id}-0",
        deadline_ms,
        size,
    )


def error(request_id: str, deadline_ms: float | None = None) -> Answer:
    reply = Reply.failure(request_id, ErrorCode.INVALID_INPUT, "bad")
    return Answer(Outgoing("axon:r:gw", reply), f"{request_id}-0", deadline_ms, 3)


def test_flush_sends_everything_in_one_call_in_order() -> None:
    redis, clocks = FakeRedis(), Clocks()
    outbox, _ = make_outbox(redis, clocks)
    asyncio.run(outbox.flush())  # nothing kept: no call
    for answer in (result("a"), error("b"), result("c", size=7)):
        outbox.add(answer)
    assert len(outbox) == 3
    asyncio.run(outbox.flush())
    assert redis.calls == [[("a", "a-0", True), ("b", "b-0", False), ("c", "c-0", True)]]
    assert redis.sizes == [[10, 3, 7]]
    assert len(outbox) == 0


def test_a_failed_flush_keeps_the_answers_and_raises() -> None:
    redis, clocks = FakeRedis(failures=1), Clocks()
    outbox, _ = make_outbox(redis, clocks)
    outbox.add(result("a"))
    with pytest.raises(RedisConnectionError):
        asyncio.run(outbox.flush())
    outbox.add(result("b"))
    asyncio.run(outbox.flush())
    assert redis.calls[-1] == [("a", "a-0", True), ("b", "b-0", True)]
    assert len(outbox) == 0


def test_deliver_retries_a_redis_error_with_the_backoff_until_it_succeeds() -> None:
    redis, clocks = FakeRedis(failures=6, error=ResponseError("OOM command not allowed")), Clocks()
    outbox, expired = make_outbox(redis, clocks)
    outbox.add(result("a"))
    outbox.add(error("b"))
    asyncio.run(outbox.deliver())
    first, longest = DELIVERY_BACKOFF_S
    assert clocks.pauses == [first, first * 2, first * 4, first * 8, first * 16, longest]
    assert len(redis.calls) == 7 and redis.calls[-1] == [("a", "a-0", True), ("b", "b-0", False)]
    assert len(outbox) == 0 and expired == []


def test_deliver_raises_other_errors_at_once_and_keeps_the_answers() -> None:
    redis, clocks = FakeRedis(failures=1, error=KeyError("a bug")), Clocks()
    outbox, _ = make_outbox(redis, clocks)
    outbox.add(result("a"))
    with pytest.raises(KeyError):
        asyncio.run(outbox.deliver())
    assert clocks.pauses == [] and len(outbox) == 1


def test_results_kept_past_their_deadline_are_sent_as_deadline_exceeded() -> None:
    redis, clocks = FakeRedis(failures=3), Clocks()
    outbox, expired = make_outbox(redis, clocks)
    soon = clocks.now_ms + 100.0  # passes during the outage (pauses 50 + 100 + 200 ms)
    late = clocks.now_ms + 60_000.0
    outbox.add(result("soon", deadline_ms=soon))
    outbox.add(result("late", deadline_ms=late))
    outbox.add(result("none"))
    outbox.add(error("err", deadline_ms=soon))  # already an error: sent as it is
    asyncio.run(outbox.deliver())
    assert redis.calls[0] == [
        ("soon", "soon-0", True),
        ("late", "late-0", True),
        ("none", "none-0", True),
        ("err", "err-0", False),
    ]
    assert redis.calls[-1] == [
        ("soon", "soon-0", False),
        ("late", "late-0", True),
        ("none", "none-0", True),
        ("err", "err-0", False),
    ]
    assert redis.last[0].error is not None
    assert redis.last[0].error.code == ErrorCode.DEADLINE_EXCEEDED
    assert "Redis was unavailable" in redis.last[0].error.message
    assert redis.last[3].error is not None and redis.last[3].error.code == ErrorCode.INVALID_INPUT
    assert expired == [1]


def test_a_result_whose_deadline_passed_before_any_failure_is_still_sent() -> None:
    """Expiry applies only to answers kept over a failure: a batch computed on time is
    answered with its results even if its deadline passed during the run."""
    redis, clocks = FakeRedis(), Clocks()
    outbox, expired = make_outbox(redis, clocks)
    outbox.add(result("a", deadline_ms=clocks.now_ms - 1.0))
    asyncio.run(outbox.deliver())
    assert redis.calls == [[("a", "a-0", True)]] and expired == []


def test_after_stop_delivery_gives_up_after_stop_delivery_s() -> None:
    redis, clocks = FakeRedis(failures=10_000), Clocks()
    outbox, _ = make_outbox(redis, clocks, stopping=True)
    outbox.add(result("a"))
    asyncio.run(outbox.deliver())
    assert len(outbox) == 0  # dropped: the entry stays pending in Redis
    assert sum(clocks.pauses) == pytest.approx(STOP_DELIVERY_S, abs=DELIVERY_BACKOFF_S[1])
    assert sum(clocks.pauses) >= STOP_DELIVERY_S
    # The give-up time holds over later calls: the next failure gives up at once.
    outbox.add(result("b"))
    pauses = len(clocks.pauses)
    asyncio.run(outbox.deliver())
    assert len(clocks.pauses) == pauses and len(outbox) == 0


def test_without_stop_delivery_never_gives_up() -> None:
    redis, clocks = FakeRedis(failures=200), Clocks()
    outbox, _ = make_outbox(redis, clocks)
    outbox.add(result("a"))
    asyncio.run(outbox.deliver())
    assert sum(clocks.pauses) > 10 * STOP_DELIVERY_S
    assert redis.calls[-1] == [("a", "a-0", True)] and len(outbox) == 0
