"""The reply listener: ONE task per gateway process pops the process's reply list
(``axon:r:{instance}``: BLMPOP on Redis >= 7, else BLPOP then LPOP) and completes the
future of each waiting request. Nothing polls per request; a request that gives up
(deadline) simply forgets its future and a late reply for it is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from services.contract import protocol
from services.contract.codec import Reply, decode_reply
from services.contract.errors import BadEntryError
from services.contract.protocol import RedisClient
from services.contract.resilience import Backoff, FailureLog, describe, is_redis_error, unreachable
from services.gateway.errors import UnavailableError

log = logging.getLogger(__name__)


class ReplyListener:
    """Routes replies to waiting requests by the id their stream entry carried."""

    def __init__(
        self,
        redis: RedisClient,
        reply_to: str,
        *,
        block_s: float,
        on_redis_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.reply_to = reply_to
        self._on_redis_error = on_redis_error
        self._redis = redis
        self._block_s = block_s
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self.healthy = False

    def expect(self, entry_id: str) -> asyncio.Future[Reply]:
        """A future completed when the reply for ``entry_id`` arrives."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[entry_id] = future
        return future

    def forget(self, entry_id: str) -> None:
        self._waiting.pop(entry_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def deliver(self, payload: bytes) -> None:
        """Complete the future a raw reply belongs to (unknown ids are dropped)."""
        try:
            reply = decode_reply(payload)
        except BadEntryError as exc:
            log.error("dropping an undecodable reply on %s: %s", self.reply_to, exc)
            return
        future = self._waiting.pop(reply.id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def run(self) -> None:
        """Listen forever; no error ends it. ``healthy`` turns true as soon as Redis
        answers (before the first blocking pop returns). When Redis is unreachable,
        waiting requests get 503 (their entries may be gone with the server); a failed
        command (an error reply) only pauses the listener. Either way it retries with a
        backoff until Redis answers again."""
        backoff = Backoff(first_s=0.05, longest_s=1.0)
        failures = FailureLog(log, "reply listener", time.monotonic)
        blmpop: bool | None = None  # learnt per connection to a server (Redis >= 7)
        while True:
            try:
                if blmpop is None:
                    blmpop = await protocol.supports_blmpop(self._redis)
                    # Redis answered: healthy from now on, not only once the first
                    # blocking pop returns (up to ``block_s`` later).
                    self.healthy = True
                payloads = await protocol.pop_replies(
                    self._redis, self.reply_to, timeout_s=self._block_s, blmpop=blmpop
                )
                self.healthy = True
            except Exception as exc:  # no error ends the listener
                pause = backoff.failure()
                failures.failed(exc, retry_in_s=pause)
                if unreachable(exc):
                    if self.healthy:
                        log.error("reply listener lost Redis: %s", describe(exc))
                    self.healthy = False
                    blmpop = None  # the server may come back as another version
                    self._on_redis_error()
                    self._fail_all("lost the connection to Redis while waiting for the reply")
                elif not is_redis_error(exc):
                    log.exception("reply listener: unexpected error")
                # A failed command (OOM, NOPERM…): the replies stay in their list and
                # the waiting requests keep waiting (until their deadline at most).
                await asyncio.sleep(pause)
                continue
            if backoff.failures:
                backoff.success()
                failures.recovered()
            for payload in payloads:
                try:
                    self.deliver(payload)
                except Exception:  # a bug must not end the listener
                    log.exception("reply listener: cannot deliver a reply")
            # Let the requests just completed answer their clients before the next
            # blocking pop is written (its redis-py call costs ~50 µs on the bench box).
            await asyncio.sleep(0)

    def _fail_all(self, message: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UnavailableError(message))
