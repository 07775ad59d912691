"""The Redis implementation of the queue seam (``transport.Transport``): the stream
entries go out through the coalescing ``Enqueuer`` (one script call per stream and
event-loop tick), replies come back on the process's reply lists
``axon:r:{model:version}:{instance}`` (a listener per list: BLMPOP on Redis >= 7, else
BLPOP then LPOP), and the registry view
reads the workers' heartbeat keys and the routing rules (``axon:route:{model}``).
Keys and scripts: ``services.contract.protocol``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from services.contract import capture, jobs, protocol, queue_view, redis_client, shadow_jobs
from services.contract.capture import Captured
from services.contract.jobs import JobRecord, NewJob
from services.contract.protocol import NewEntry, RedisClient, Refused, WorkerInfo
from services.contract.queue_view import DeadLetter, QueueCounts, Redriven
from services.contract.resilience import (
    Backoff,
    FailureLog,
    cancel_and_wait,
    describe,
    is_redis_error,
    unreachable,
)
from services.gateway.enqueuer import BACKEND, Enqueuer, as_transport_error
from services.gateway.replies import Replies
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _queue_call(call: Awaitable[T]) -> T:
    """``await call``, its Redis errors raised as the seam's (``as_transport_error``)."""
    try:
        return await call
    except Exception as exc:
        error = as_transport_error(exc)
        if error is exc:  # not a Redis error (a bug, RedriveRefused…): as it is
            raise
        raise error from exc


class RedisTransport:
    """The gateway's queue on Redis; ``redis`` is opened by the caller (``connect``).

    Replies come back on one list per stream (model version, partition) this gateway
    has sent work to
    (``protocol.reply_key``: in the stream's hash slot, as Redis Cluster requires of
    the completion script's keys), each with its own listener task, started by
    ``reply_to`` at the first request and run by ``receive``.
    ``fail_on_loss``: when a listener loses Redis, fail every waiting request at once
    (one server: its replies are gone with it). False on a cluster or behind
    Sentinel, where a replica takes over the data: the requests wait for their replies
    (or their deadlines) while the client finds the new master.
    """

    def __init__(
        self,
        redis: RedisClient,
        instance: str,
        *,
        block_s: float,
        fail_on_loss: bool = True,
        listener: RedisClient | None = None,
    ) -> None:
        self.redis = redis
        self._listener = redis if listener is None else listener
        """The client of the blocking pops: ``connect`` gives them one that never retries
        a lost connection (``redis_client.connect``), so a Redis restart is always seen."""
        self._instance = instance
        self._block_s = block_s
        self._fail_on_loss = fail_on_loss
        self._enqueuer = Enqueuer(redis)
        self._healthy = False
        self._lists: dict[tuple[str, int, int], str] = {}
        self._new_list = asyncio.Event()
        self.replies = Replies(f"the reply lists of {instance}")
        self.name = BACKEND

    @classmethod
    def connect(cls, settings: GatewaySettings) -> RedisTransport:
        """A transport on ``settings.redis_url`` for gateway ``settings.instance``;
        connections open on first use. The socket timeout covers the blocking pop."""
        target = redis_client.parse_target(settings.redis_url, settings.redis_mode)
        redis = redis_client.connect(
            settings.redis_url,
            mode=settings.redis_mode,
            fast=settings.redis_fast,
            socket_timeout_s=settings.redis_timeout_s + settings.reply_block_s,
            connect_timeout_s=settings.redis_timeout_s,
        )
        listener = redis_client.connect(
            settings.redis_url,
            mode=settings.redis_mode,
            fast=settings.redis_fast,
            socket_timeout_s=settings.redis_timeout_s + settings.reply_block_s,
            connect_timeout_s=settings.redis_timeout_s,
            retry_connection_errors=False,
        )
        return cls(
            redis,
            settings.instance,
            block_s=settings.reply_block_s,
            fail_on_loss=target.mode == "standalone",
            listener=listener,
        )

    def reply_to(self, model: str, version: int, partition: int = 0) -> str:
        key = self._lists.get((model, version, partition))
        if key is None:
            key = protocol.reply_key(self._instance, model, version, partition)
            self._lists[(model, version, partition)] = key
            self._new_list.set()
        return key

    @property
    def healthy(self) -> bool:
        return self._healthy

    def submit(
        self,
        model: str,
        version: int,
        entry: NewEntry,
        *,
        limit: int,
        maxlen: int,
        byte_limit: int,
        partition: int = 0,
    ) -> asyncio.Future[str | Refused]:
        return self._enqueuer.submit(
            model,
            version,
            entry,
            limit=limit,
            maxlen=maxlen,
            byte_limit=byte_limit,
            partition=partition,
        )

    async def submit_job(
        self, model: str, version: int, job: NewJob, *, limit: int, maxlen: int, byte_limit: int
    ) -> str | Refused:
        return await _queue_call(
            jobs.enqueue_job(
                self.redis, model, version, job, limit=limit, maxlen=maxlen, byte_limit=byte_limit
            )
        )

    async def get_job(self, key: str) -> JobRecord | None:
        return await _queue_call(jobs.get_job(self.redis, key))

    async def submit_jobs(
        self,
        model: str,
        version: int,
        jobs: Sequence[NewJob],
        *,
        limit: int,
        maxlen: int,
        byte_limit: int,
    ) -> list[str | Refused]:
        return await _queue_call(
            shadow_jobs.enqueue_jobs(
                self.redis, model, version, jobs, limit=limit, maxlen=maxlen, byte_limit=byte_limit
            )
        )

    async def collect_jobs(
        self, keys: Sequence[str], drop: Sequence[str] = ()
    ) -> list[bytes | None]:
        return await _queue_call(shadow_jobs.collect_replies(self.redis, keys, drop))

    async def capture(
        self, model: str, items: Sequence[Captured], *, maxlen: int, max_age_s: int
    ) -> None:
        await _queue_call(
            capture.append(self.redis, model, items, maxlen=maxlen, max_age_s=max_age_s)
        )

    async def read_captures(self, model: str, count: int) -> list[Captured]:
        return await _queue_call(capture.read_newest(self.redis, model, count))

    async def live_workers(self, malformed: list[str]) -> list[WorkerInfo]:
        return await _queue_call(protocol.live_workers(self.redis, malformed=malformed))

    async def get_rules(self, models: Sequence[str]) -> dict[str, str]:
        return await _queue_call(protocol.read_rules(self.redis, models))

    async def put_rule(self, model: str, raw: str) -> None:
        await _queue_call(protocol.write_rule(self.redis, model, raw))

    async def delete_rule(self, model: str) -> bool:
        return await _queue_call(protocol.delete_rule(self.redis, model))

    async def receive(self, on_down: Callable[[], None]) -> None:
        """Pop replies forever, one listener per reply list; no error ends it.
        ``healthy`` turns true as soon as Redis answers (before any request was sent).
        When Redis is unreachable, waiting requests get 503 (``fail_on_loss``: their
        entries may be gone with the server); a failed command (an error reply) only
        pauses the receiving. Either way it retries with a backoff until Redis answers
        again."""
        listeners: dict[str, asyncio.Task[None]] = {}
        try:
            await self._first_contact(on_down)
            while True:
                self._new_list.clear()
                for key in self._lists.values():
                    if key not in listeners:
                        listeners[key] = asyncio.create_task(
                            self._listen(key, on_down), name=f"axon-replies-{key}"
                        )
                await self._new_list.wait()
        finally:
            await cancel_and_wait(list(listeners.values()), log)

    async def _first_contact(self, on_down: Callable[[], None]) -> None:
        """Wait until Redis answers a PING (retrying with a backoff; each failure handled
        as a listener's); then ``healthy``."""
        backoff = Backoff(first_s=0.05, longest_s=1.0)
        failures = FailureLog(log, "reply listener", time.monotonic)
        while True:
            try:
                await self.redis.ping()
            except Exception as exc:
                pause = backoff.failure()
                failures.failed(exc, retry_in_s=pause)
                self._failed(exc, on_down)
                await asyncio.sleep(pause)
                continue
            self._healthy = True
            if backoff.failures:
                failures.recovered()
            return

    def _failed(self, exc: Exception, on_down: Callable[[], None]) -> None:
        """A listener's command failed: when Redis is unreachable, not healthy,
        ``on_down`` and (``fail_on_loss``) every waiting request fails."""
        if unreachable(exc):
            if self._healthy:
                log.error("reply listener lost Redis: %s", describe(exc))
            self._healthy = False
            on_down()
            if self._fail_on_loss:
                self.replies.fail_all("lost the connection to Redis while waiting for the reply")
        elif not is_redis_error(exc):
            log.error("reply listener: unexpected error", exc_info=exc)
        # A failed command (OOM, NOPERM…): the replies stay in their list and the
        # waiting requests keep waiting (until their deadline at most).

    async def _listen(self, key: str, on_down: Callable[[], None]) -> None:
        """Pop the replies of one list forever (BLMPOP on Redis >= 7, else BLPOP then
        LPOP) and deliver them; no error ends it."""
        backoff = Backoff(first_s=0.05, longest_s=1.0)
        failures = FailureLog(log, f"reply listener {key}", time.monotonic)
        blmpop: bool | None = None  # learnt per connection to a server (Redis >= 7)
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # redis-py may swallow a cancellation that lands in a blocking read (seen:
                # BLMPOP returned, the task went on "cancelling" forever): stop here.
                raise asyncio.CancelledError
            try:
                if blmpop is None:
                    blmpop = await protocol.supports_blmpop(self._listener)
                    self._healthy = True
                payloads = await protocol.pop_replies(
                    self._listener, key, timeout_s=self._block_s, blmpop=blmpop
                )
                self._healthy = True
            except Exception as exc:  # no error ends the listener
                pause = backoff.failure()
                failures.failed(exc, retry_in_s=pause)
                if unreachable(exc):
                    blmpop = None  # the server may come back as another version
                self._failed(exc, on_down)
                await asyncio.sleep(pause)
                continue
            if backoff.failures:
                backoff.success()
                failures.recovered()
            for payload in payloads:
                try:
                    self.replies.deliver(payload)
                except Exception:  # a bug must not end the listener
                    log.exception("reply listener: cannot deliver a reply")
            # Let the requests just completed answer their clients before the next
            # blocking pop is written (docs/decisions.md, "Gateway hot path").
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        await redis_client.close(self.redis)
        if self._listener is not self.redis:
            await redis_client.close(self._listener)

    async def claim_idempotency(self, key: str, claim: bytes, ttl_s: int) -> bytes | None:
        return await _queue_call(protocol.claim_idempotency(self.redis, key, claim, ttl_s))

    async def get_idempotency(self, key: str) -> bytes | None:
        return await _queue_call(protocol.get_idempotency(self.redis, key))

    async def put_idempotency(self, key: str, record: bytes, ttl_s: int) -> None:
        await _queue_call(protocol.put_idempotency(self.redis, key, record, ttl_s))

    async def release_idempotency(self, key: str, claim: bytes) -> None:
        await _queue_call(protocol.release_idempotency(self.redis, key, claim))

    async def queue_counts(
        self,
        versions: Sequence[tuple[str, int]],
        partitions: Mapping[tuple[str, int], int] | None = None,
    ) -> list[QueueCounts]:
        return await _queue_call(queue_view.queue_counts(self.redis, versions, partitions))

    async def dead_letters(
        self, model: str, version: int, count: int, partitions: int = 1
    ) -> list[DeadLetter]:
        return await _queue_call(
            queue_view.dead_letters(self.redis, model, version, count=count, partitions=partitions)
        )

    async def redrive(
        self, model: str, version: int, dead_letter_id: str, partitions: int = 1
    ) -> Redriven | None:
        return await _queue_call(
            queue_view.redrive(self.redis, model, version, dead_letter_id, partitions=partitions)
        )
