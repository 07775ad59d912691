"""The retry policy and loops (services/client/retry.py) on a fake clock: no real
sleep anywhere."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from services.client.retry import NO_RETRY, RetryPolicy, acall, call, parse_retry_after


@dataclass
class FakeTime:
    """A clock that only ``sleep`` (and each request's ``cost_s``) moves."""

    now: float = 100.0
    cost_s: float = 0.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Server:
    """Answers (status, Retry-After) in turn, the last one forever; counts the tries."""

    def __init__(self, time: FakeTime, *answers: tuple[int, str | None]) -> None:
        self.time, self.answers, self.tries = time, list(answers), 0

    def send(self) -> tuple[int, str | None]:
        self.time.now += self.time.cost_s
        self.tries += 1
        return self.answers[min(self.tries, len(self.answers)) - 1]

    async def asend(self) -> tuple[int, str | None]:
        return self.send()


def run(policy: RetryPolicy, time: FakeTime, *answers: tuple[int, str | None]) -> tuple[int, int]:
    """(final status, tries) of ``call`` against ``answers``."""
    server = Server(time, *answers)
    status, _ = call(
        server.send, lambda r: r, policy, clock=time.clock, sleep=time.sleep, random=lambda: 0.5
    )
    return status, server.tries


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 1.5 ", 1.5), ("0", 0.0), (None, None), ("-1", None), ("soon", None),
     ("inf", None), ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)  # fmt: skip
def test_retry_after_is_read_as_seconds_only(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_is_honoured_then_success_is_returned() -> None:
    time = FakeTime()
    assert run(RetryPolicy(), time, (429, "2"), (503, "1"), (200, None)) == (200, 3)
    assert time.slept == [2.0, 1.0]


@pytest.mark.parametrize("status", [400, 401, 404, 405, 408, 413, 500, 504])
def test_other_statuses_are_final_at_once(status: int) -> None:
    time = FakeTime()
    assert run(RetryPolicy(), time, (status, "1"), (200, None)) == (status, 1)
    assert time.slept == []


def test_attempts_bound_the_tries_and_the_last_answer_stands() -> None:
    time = FakeTime()
    assert run(RetryPolicy(attempts=3), time, (429, "1")) == (429, 3)
    assert time.slept == [1.0, 1.0]
    assert run(NO_RETRY, FakeTime(), (429, "1")) == (429, 1)


def test_no_wait_may_end_past_the_total_time() -> None:
    time = FakeTime(cost_s=0.5)  # each try takes 0.5 s
    # 0.5 + 4 = 4.5 ≤ 10; 4.5 + 0.5 + 4 = 9 ≤ 10; 9 + 0.5 + 4 > 10: give up after 3 tries.
    assert run(RetryPolicy(attempts=10, total_s=10), time, (429, "4")) == (429, 3)
    assert time.slept == [4.0, 4.0]
    # A Retry-After longer than the whole budget: the 429 is the answer at once.
    assert run(RetryPolicy(total_s=10), FakeTime(), (429, "60")) == (429, 1)


def test_backoff_doubles_up_to_its_cap_with_jitter_when_no_retry_after() -> None:
    policy = RetryPolicy(attempts=10, total_s=1000, backoff_s=1, backoff_max_s=4)
    waits = [policy.wait_s(attempt, 503, None, 0, jitter=0.999999) for attempt in range(1, 6)]
    assert waits == pytest.approx([1, 2, 4, 4, 4], rel=1e-5)
    assert policy.wait_s(1, 503, None, 0, jitter=0.0) == 0.5  # at least half the step
    assert policy.wait_s(2, 429, "garbage", 0, jitter=0.0) == 1.0  # unreadable: backoff
    time = FakeTime()
    assert run(policy, time, (503, None), (503, None), (200, None)) == (200, 3)
    assert time.slept == [0.75, 1.5]  # random() = 0.5 → 75 % of each step


def test_policies_that_would_retry_a_client_error_are_refused() -> None:
    with pytest.raises(ValueError, match="4xx other than 429"):
        RetryPolicy(statuses=frozenset({429, 400}))
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="total_s"):
        RetryPolicy(total_s=-1)


def test_the_async_loop_follows_the_same_policy() -> None:
    time = FakeTime()
    server = Server(time, (429, "3"), (429, "3"), (200, None))
    answer = asyncio.run(
        acall(
            server.asend, lambda r: r, RetryPolicy(), clock=time.clock, sleep=time.asleep,
            random=lambda: 0.5,
        )
    )  # fmt: skip
    assert (answer, server.tries, time.slept) == ((200, None), 3, [3.0, 3.0])
