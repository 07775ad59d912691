"""The worker's outbox: replies waiting to be sent, each with the stream entry it
acknowledges, and the retrying that gets them out while Redis is away.

Contract:

- ``add`` keeps an answer. ``flush`` sends every kept answer, in order, with ONE call of
  the injected ``complete`` (in the worker: ``protocol.complete``, which answers each
  entry at most once however often it is retried). If that call fails the answers stay
  kept, still in order and ahead of any added meanwhile, and the error is raised.
- A result kept over a failed attempt whose entry's deadline has passed since (``now_ms``,
  the deadlines' clock) is sent as ``deadline_exceeded`` instead; ``on_expired`` is called
  once for each result so replaced.
- ``deliver`` flushes, retrying after a Redis error (``resilience.is_redis_error``) with a
  backoff (``DELIVERY_BACKOFF_S``) until a flush succeeds; any other error is raised at
  once, the answers kept. Once ``stopping()`` is true the retries last at most
  ``STOP_DELIVERY_S`` (from the first failure seen while stopping, over all calls); then
  the answers are dropped and their entries stay pending in Redis for another replica to
  claim.

Every clock and the I/O are parameters (``complete``, ``now_ms``, ``monotonic``,
``sleep``), so tests drive an outbox without Redis and without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.contract.codec import Reply
from services.contract.errors import ErrorCode
from services.contract.protocol import Outgoing
from services.contract.resilience import Backoff, describe, is_redis_error

log = logging.getLogger(__name__)

DELIVERY_BACKOFF_S = (0.05, 1.0)
"""First and longest pause between attempts to send computed replies while Redis is away."""

STOP_DELIVERY_S = 5.0
"""After ``stop()``, how long replies still unsent (Redis away) are retried before they are
dropped; their entries stay pending in Redis and another replica claims them."""

Complete = Callable[[Sequence[tuple[Outgoing, str]], Sequence[int]], Awaitable[object]]
"""Sends ``(reply, entry id)`` pairs with their entries' body sizes in one round trip
(``protocol.complete`` bound to a client, stream and reply TTL)."""


@dataclass
class Answer:
    """A reply in the outbox with the entry it acknowledges (``protocol.complete``)."""

    outgoing: Outgoing
    entry_id: str
    deadline_ms: float | None
    size: int = 0
    """Bytes of the entry's body (subtracted from the stream's queued-bytes counter)."""


class Outbox:
    """Answers waiting to be sent (see the module doc for the contract)."""

    def __init__(
        self,
        complete: Complete,
        *,
        now_ms: Callable[[], float],
        on_expired: Callable[[], None],
        stopping: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._complete = complete
        self._now_ms = now_ms
        self._on_expired = on_expired
        self._stopping = stopping
        self._monotonic = monotonic
        self._sleep = sleep
        self._answers: list[Answer] = []
        # Set when a flush failed (Redis away) until one succeeds.
        self._undelivered = False
        # After stop: when retrying gives up (``monotonic`` seconds).
        self._give_up_at: float | None = None

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, answer: Answer) -> None:
        self._answers.append(answer)

    async def flush(self) -> None:
        """Send every kept answer in one ``complete`` call; on failure keep them, raise."""
        if not self._answers:
            self._undelivered = False
            return
        if self._undelivered:
            self._expire_kept()
        answers, self._answers = self._answers, []
        try:
            await self._complete(
                [(answer.outgoing, answer.entry_id) for answer in answers],
                [answer.size for answer in answers],
            )
        except BaseException:
            self._answers = answers + self._answers
            self._undelivered = True
            raise
        self._undelivered = False

    def _expire_kept(self) -> None:
        """Answer ``deadline_exceeded`` instead of results kept past their deadline."""
        now = self._now_ms()
        for answer in self._answers:
            reply = answer.outgoing.reply
            if reply.ok and answer.deadline_ms is not None and answer.deadline_ms <= now:
                answer.outgoing = Outgoing(
                    answer.outgoing.reply_to,
                    Reply.failure(
                        reply.id,
                        ErrorCode.DEADLINE_EXCEEDED,
                        "deadline passed while Redis was unavailable to take the reply",
                    ),
                )
                self._on_expired()

    async def deliver(self) -> None:
        """Flush; while Redis is unavailable keep the answers and retry with a backoff
        until it is back. While stopping, retry for at most ``STOP_DELIVERY_S``, then drop
        the answers (their entries stay pending in Redis for another replica)."""
        backoff = Backoff(*DELIVERY_BACKOFF_S)
        while True:
            try:
                await self.flush()
                if backoff.failures:
                    log.info(
                        "redis is back; replies sent after %d failed attempts", backoff.failures
                    )
                return
            except Exception as exc:  # OOM, READONLY… as well as an unreachable Redis
                if not is_redis_error(exc):
                    raise
                pause = backoff.failure()
                if backoff.failures == 1:
                    log.warning(
                        "sending replies failed (%s); keeping %d replies and retrying",
                        describe(exc),
                        len(self._answers),
                    )
            if self._stopping():
                now = self._monotonic()
                if self._give_up_at is None:
                    self._give_up_at = now + STOP_DELIVERY_S
                if now >= self._give_up_at:
                    log.error(
                        "stopping with Redis unavailable: %d replies not sent; their "
                        "entries stay pending and will be claimed by another worker",
                        len(self._answers),
                    )
                    self._answers = []
                    self._undelivered = False
                    return
            await self._sleep(pause)
