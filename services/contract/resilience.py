"""What every long-lived task of Axon (worker read loop, heartbeat, registry refresh,
reply listener, enqueuer) shares to survive errors: a retry backoff, one way to say
what kind of Redis failure an exception is, and a rate-limited log line.

Contract of a long-lived task: it never ends because of an error. Each failure is
logged (the first of a streak at WARNING with its class and message, then at most one
line per ``LOG_EVERY_S`` while the streak lasts, and one INFO line when it ends) and
followed by a pause from ``Backoff``. If such a task ever ends anyway (a bug), the
process reports itself not alive (``alive`` of the owner) so that the orchestrator
restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

LOG_EVERY_S = 10.0
"""While a failure streak lasts, at most one log line per this many seconds."""


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means Redis could not be reached or did not answer in time
    (connection refused/reset, socket timeout): every command would fail alike.

    False for an error *reply* to one command (``OOM``, ``READONLY``, ``NOPERM``,
    ``BUSY``…): Redis is there, this command failed; other commands may succeed.
    """
    if isinstance(exc, ResponseError):
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


def describe(exc: BaseException) -> str:
    """``"ClassName: message"`` (the first line of it), for log lines."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_redis_error(exc: BaseException) -> bool:
    """A failure that comes from Redis or the network to it (not a bug in Axon)."""
    return isinstance(exc, RedisError | OSError)


@dataclass
class Backoff:
    """Exponential pause between attempts: ``first_s``, doubling, capped at ``longest_s``.

    ``failure()`` returns the pause to take now; ``success()`` resets to ``first_s``.
    """

    first_s: float = 0.05
    longest_s: float = 2.0
    failures: int = 0
    _next_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def failure(self) -> float:
        pause = self._next_s
        self.failures += 1
        self._next_s = min(self._next_s * 2, self.longest_s)
        return pause

    def success(self) -> None:
        self.failures = 0
        self._next_s = self.first_s


@dataclass
class FailureLog:
    """Logs a failure streak of one task without flooding the log.

    ``failed(exc)`` logs the first failure of a streak, then at most one line per
    ``every_s`` (with the count so far); ``recovered()`` logs once when a streak ends.
    ``clock`` returns seconds (monotonic).
    """

    logger: logging.Logger
    task: str
    clock: Callable[[], float]
    every_s: float = LOG_EVERY_S
    streak: int = 0
    _last_logged: float = field(default=float("-inf"), init=False)

    def failed(self, exc: BaseException, *, retry_in_s: float) -> None:
        self.streak += 1
        now = self.clock()
        if self.streak == 1 or now - self._last_logged >= self.every_s:
            self._last_logged = now
            kind = "Redis unreachable" if unreachable(exc) else "command failed"
            self.logger.warning(
                "%s: %s (%s); failure %d in a row, retrying in %.2fs",
                self.task,
                kind,
                describe(exc),
                self.streak,
                retry_in_s,
            )

    def recovered(self) -> None:
        if self.streak:
            self.logger.info("%s: working again after %d failures", self.task, self.streak)
        self.streak = 0


async def cancel_and_wait(
    tasks: Sequence[asyncio.Task[None]], log: logging.Logger, tries: int = 50
) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again every 0.1 s: a cancellation
    swallowed inside a Redis call (redis-py has done it) must not hang a shutdown.
    After ``tries`` the rest are logged and left (the process is exiting)."""
    for _ in range(tries):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            for task in tasks:  # retrieved, so none is reported as never retrieved
                if not task.cancelled():
                    task.exception()
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    stuck = [task.get_name() for task in tasks if not task.done()]
    log.warning("shutdown: background tasks did not stop: %s", ", ".join(stuck))
