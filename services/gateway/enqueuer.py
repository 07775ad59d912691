"""The Redis transport's enqueue: coalesce the queueing of concurrent requests, one
Redis round trip per stream and event-loop tick instead of two per request.

Every request handled in one tick of the event loop (and every one that arrives while
the previous round trip is in flight) is queued by ONE ``protocol.enqueue_many`` call
per stream: a server-side script that checks the backlog (XLEN) and XADDs each request
in turn. So the backlog check is exact (a request is refused when the stream holds
``limit`` entries, as with XLEN-then-XADD per request, without the race) and a lone
request costs one round trip (why: docs/decisions.md, "Gateway hot path").

Redis errors reach the callers as the seam's ``TransportDown`` / ``TransportError``
(``as_transport_error``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.contract import protocol
from services.contract.protocol import NewEntry, RedisClient, Refused
from services.contract.resilience import describe, is_redis_error, unreachable
from services.gateway.transport import TransportDown, TransportError

BACKEND = "Redis"
"""How the transport's errors name the queue ("Redis is unreachable")."""

MAX_PER_CALL = 256
"""Entries per script call: bounds how long one call keeps Redis busy."""

_Key = tuple[str, int, int, int, int, int]  # model, version, partition, limit, maxlen, bytes


@dataclass
class Enqueuer:
    """``submit`` returns a future for the entry id (or ``Refused``); a Redis error is
    set on the future of every request of the failed call (``as_transport_error``)."""

    redis: RedisClient
    _queued: dict[_Key, list[tuple[NewEntry, asyncio.Future[str | Refused]]]] = field(
        default_factory=dict
    )
    _flusher: asyncio.Task[None] | None = None

    def submit(
        self,
        model: str,
        version: int,
        entry: NewEntry,
        *,
        limit: int,
        maxlen: int,
        byte_limit: int = 2**62,
        partition: int = 0,
    ) -> asyncio.Future[str | Refused]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | Refused] = loop.create_future()
        key = (model, version, partition, limit, maxlen, byte_limit)
        self._queued.setdefault(key, []).append((entry, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="axon-enqueue")
        return future

    async def _flush(self) -> None:
        try:
            while self._queued:
                queued, self._queued = self._queued, {}
                if len(queued) == 1:
                    ((key, items),) = queued.items()
                    await self._send(key, items)
                else:
                    await asyncio.gather(*(self._send(k, items) for k, items in queued.items()))
        finally:
            self._flusher = None

    async def _send(
        self, key: _Key, items: list[tuple[NewEntry, asyncio.Future[str | Refused]]]
    ) -> None:
        model, version, partition, limit, maxlen, byte_limit = key
        for start in range(0, len(items), MAX_PER_CALL):
            chunk = items[start : start + MAX_PER_CALL]
            try:
                answers = await protocol.enqueue_many(
                    self.redis,
                    model,
                    version,
                    [entry for entry, _ in chunk],
                    limit=limit,
                    maxlen=maxlen,
                    byte_limit=byte_limit,
                    partition=partition,
                )
            except Exception as exc:  # Redis errors reach each caller
                error = as_transport_error(exc)
                for _, future in chunk:
                    if not future.done():
                        future.set_exception(error)
                continue
            except BaseException:  # cancelled (shutdown): nobody gets an answer
                for _, future in items[start:]:
                    future.cancel()
                raise
            for (_, future), answer in zip(chunk, answers, strict=True):
                if not future.done():
                    future.set_result(answer)


def as_transport_error(exc: Exception) -> Exception:
    """A Redis client error as the seam's error: unreachable → ``TransportDown``, an
    error reply (OOM, READONLY, NOPERM…) → ``TransportError``; anything else unchanged."""
    if unreachable(exc):
        return TransportDown(BACKEND)
    if is_redis_error(exc):
        return TransportError(BACKEND, describe(exc))
    return exc
