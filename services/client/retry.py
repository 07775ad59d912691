"""When to send a request again, pure: the policy decides from the answer's status,
its ``Retry-After`` and the time spent; the loops (``call``, ``acall``) take the clock,
the sleep and the random source as parameters, so tests run them on a fake clock.

Retried: 429 (the model's backlog is full: nothing was queued) and 503 (no live worker,
Redis unreachable, or the gateway's bytes in flight full). Both are safe to send again:
an inference changes nothing. Every other status is final, 4xx above all (the request
itself is wrong; sending it again cannot help).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries in all, and no wait that would end more than
    ``total_s`` after the first try began. The wait is the answer's ``Retry-After``
    (seconds) when it has one, else ``backoff_s`` doubling per try up to
    ``backoff_max_s``, with jitter: a uniform share of 50–100 % of it, so that clients
    refused together do not come back together."""

    attempts: int = 4
    total_s: float = 30.0
    backoff_s: float = 0.25
    backoff_max_s: float = 4.0
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts}, must be at least 1 (the first try)")
        for name in ("total_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {value}, must be a non-negative number of seconds")
        if any(400 <= s < 500 and s != 429 for s in self.statuses):
            raise ValueError("statuses: a 4xx other than 429 means the request is wrong")

    def wait_s(
        self, attempt: int, status: int, retry_after: str | None, elapsed_s: float, jitter: float
    ) -> float | None:
        """Seconds to wait after try number ``attempt`` (1 = the first) was answered
        ``status`` with ``retry_after`` (the header, None when absent), ``elapsed_s``
        after the first try began; None: do not try again, that answer stands.
        ``jitter`` is a uniform random number in [0, 1)."""
        if status not in self.statuses or attempt >= self.attempts:
            return None
        wait = parse_retry_after(retry_after)
        if wait is None:
            step = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
            wait = step * (0.5 + 0.5 * jitter)
        if elapsed_s + wait > self.total_s:
            return None
        return wait


NO_RETRY = RetryPolicy(attempts=1)
"""Every answer is final."""


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the form the gateway sends); None when
    absent or not a non-negative number (an HTTP date is not read: the backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


Answer = Callable[[R], tuple[int, str | None]]
"""A response → (its status, its ``Retry-After`` header or None)."""


def call(
    send: Callable[[], R],
    answer: Answer[R],
    policy: RetryPolicy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    random: Callable[[], float],
) -> R:
    """``send()`` until its answer is final under ``policy``; that last response."""
    start = clock()
    attempt = 1
    while True:
        response = send()
        status, retry_after = answer(response)
        wait = policy.wait_s(attempt, status, retry_after, clock() - start, random())
        if wait is None:
            return response
        sleep(wait)
        attempt += 1


async def acall(
    send: Callable[[], Awaitable[R]],
    answer: Answer[R],
    policy: RetryPolicy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
    random: Callable[[], float],
) -> R:
    """``call`` for coroutines: ``await send()``, ``await sleep(s)``."""
    start = clock()
    attempt = 1
    while True:
        response = await send()
        status, retry_after = answer(response)
        wait = policy.wait_s(attempt, status, retry_after, clock() - start, random())
        if wait is None:
            return response
        await sleep(wait)
        attempt += 1
