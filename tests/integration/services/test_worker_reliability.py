"""Deadlines, poison input, graceful shutdown, crash recovery and heartbeat expiry,
with real Redis, real models and (for the crash) a real worker process killed by SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.contract import protocol, redis_client
from services.contract.codec import Reply, decode_reply
from services.contract.errors import ErrorCode
from services.contract.fast_redis import FastRedis
from services.contract.protocol import Outgoing
from services.runtime.settings import WorkerSettings
from services.runtime.worker import Worker, load_model
from tests.support.onnx_models import write_poison_classifier
from tests.support.redis import RedisServer, wait_for_async
from tests.support.workers import FAST, Client, running_worker, worker_settings

STREAM = protocol.stream_key("digits-cnn", 1)


async def pending_count(redis: Redis[bytes], stream: str, consumer: str | None = None) -> int:
    summary = await redis.xpending(stream, protocol.GROUP)
    if consumer is None:
        return int(summary["pending"])
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"].decode() == consumer)


def image(rows: int = 1, value: float = 3.0) -> np.ndarray:
    return np.full((rows, 1, 8, 8), value, np.float32)


def test_expired_entry_is_never_computed(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        expired = await client.send({"image": image(5)}, deadline_ms=int(time.time() * 1000) - 1)
        live = await client.send({"image": image(2)})
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with running_worker(settings) as worker:
            replies = {r.id: r for r in await client.replies(2)}
            stats = worker.stats
        assert replies[live].ok
        late = replies[expired]
        assert not late.ok and late.error is not None
        assert late.error.code == ErrorCode.DEADLINE_EXCEEDED
        # Only the live request's 2 rows were computed; the 5 expired rows never were.
        assert (stats.inference_count, stats.expired) == (2, 1)
        assert await redis.xlen(STREAM) == 0 and await pending_count(redis, STREAM) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_poison_input_is_answered_at_once_and_its_batch_mates_succeed(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A request that makes ONNX Runtime raise (even on its own) gets an
    ``inference_failed`` reply from the first run: no redelivery, no dead letter, and its
    client does not wait for the deadline."""
    write_poison_classifier(tmp_path)
    stream = protocol.stream_key("poison-cnn", 1)

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "poison-cnn")
        good = [
            await client.send({"image": np.full((2, 1, 2, 2), i, np.float32)}) for i in range(4)
        ]
        poison_image = np.zeros((1, 1, 2, 2), np.float32)
        poison_image[0, 0, 0, 0] = 1000.0  # indexes past the model's 17-entry table
        poison = await client.send({"image": poison_image})
        settings = worker_settings(
            redis_server.url,
            tmp_path,
            "poison-cnn",
            max_deliveries="3",
            claim_timeout_ms="100",
            claim_interval_ms="50",
        )
        async with running_worker(settings) as worker:
            replies = {r.id: r for r in await client.replies(5)}
            stats = worker.stats
        assert all(replies[i].ok for i in good), "the poison request failed its batch-mates"
        failed = replies[poison]
        assert not failed.ok and failed.error is not None
        assert failed.error.code == ErrorCode.INFERENCE_FAILED
        assert "model run failed" in failed.error.message
        assert (stats.redeliveries, stats.dead_letters) == (0, 0)
        assert await redis.xlen(protocol.dlq_key("poison-cnn", 1)) == 0
        assert await redis.xlen(stream) == 0 and await pending_count(redis, stream) == 0
        assert await client.pending_replies() == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_entry_delivered_too_often_ends_in_the_dead_letter_stream(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """An entry whose workers died with it ``max_deliveries`` times (a request that
    crashes the process) is dead-lettered with an error reply on its next claim."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        await protocol.ensure_group(redis, STREAM)
        client = Client(redis, "digits-cnn")
        doomed = await client.send({"image": image(1)})
        # A ghost consumer read it; its delivery counter says 3 workers died with it.
        entries = await protocol.read_entries(redis, STREAM, "ghost", count=1, block_ms=None)
        await redis.xclaim(STREAM, protocol.GROUP, "ghost", 0, [entries[0].entry_id], retrycount=3)
        settings = worker_settings(
            redis_server.url,
            model_repo,
            "digits-cnn",
            max_deliveries="3",
            claim_timeout_ms="100",
            claim_interval_ms="50",
        )
        async with running_worker(settings) as worker:
            (reply,) = await client.replies(1)
            stats = worker.stats
        assert reply.id == doomed and not reply.ok and reply.error is not None
        assert reply.error.code == ErrorCode.DEAD_LETTER
        assert "3 deliveries" in reply.error.message
        dead = await redis.xrange(protocol.dlq_key("digits-cnn", 1))
        assert len(dead) == 1
        fields = dead[0][1]
        assert fields[b"id"].decode() == doomed
        assert fields[b"deliveries"] == b"4" and b"max 3" in fields[b"reason"]
        assert fields[b"stream"].decode() == STREAM
        assert stats.dead_letters == 1
        assert await redis.xlen(STREAM) == 0 and await pending_count(redis, STREAM) == 0
        await redis.delete(protocol.dlq_key("digits-cnn", 1))
        await redis.aclose()

    asyncio.run(scenario())


def test_graceful_stop_drains_what_was_read(redis_server: RedisServer, model_repo: Path) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        # A batch that would wait a minute to fill: the worker holds what it read.
        settings = worker_settings(
            redis_server.url,
            model_repo,
            "digits-cnn",
            max_batch_rows="1000",
            max_queue_delay_ms="60000",
        )
        async with running_worker(settings) as worker:
            ids = [await client.send({"image": image(1, float(i))}) for i in range(10)]

            async def all_read() -> bool:
                return await pending_count(redis, STREAM, settings.instance) == 10

            await wait_for_async(all_read, what="the worker to read all 10 entries")
            assert await client.pending_replies() == 0
            assert worker.stats.execution_count == 0
        # Leaving the context stopped the worker gracefully.
        replies = await client.replies(10)
        assert sorted(r.id for r in replies) == sorted(ids) and all(r.ok for r in replies)
        assert await pending_count(redis, STREAM) == 0 and await redis.xlen(STREAM) == 0
        assert await protocol.live_workers(redis, "digits-cnn", 1) == []
        await redis.aclose()

    asyncio.run(scenario())


def start_worker_process(
    redis_url: str, model_repo: Path, instance: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **FAST,
        "AXON_REDIS_URL": redis_url,
        "AXON_MODELS_DIR": str(model_repo),
        "AXON_MODEL": "digits-cnn",
        "AXON_INSTANCE": instance,
        "AXON_MAX_BATCH_ROWS": "1000",
        "AXON_MAX_QUEUE_DELAY_MS": "60000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.standalone"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_crashed_worker_entries_are_claimed_and_answered_once(
    redis_server: RedisServer, model_repo: Path
) -> None:
    process = start_worker_process(redis_server.url, model_repo, "doomed")
    try:

        async def scenario() -> None:
            redis: Redis[bytes] = Redis.from_url(redis_server.url)
            client = Client(redis, "digits-cnn")

            async def registered() -> bool:
                return [
                    w.instance for w in await protocol.live_workers(redis, "digits-cnn", 1)
                ] == ["doomed"]

            await wait_for_async(registered, what="the doomed worker's heartbeat")
            ids = [await client.send({"image": image(1 + i % 3, float(i))}) for i in range(12)]

            async def holding() -> bool:
                return await pending_count(redis, STREAM, "doomed") == 12

            await wait_for_async(holding, what="the doomed worker to hold all 12 entries")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert await client.pending_replies() == 0

            settings = worker_settings(
                redis_server.url,
                model_repo,
                "digits-cnn",
                claim_timeout_ms="300",
                claim_interval_ms="50",
            )
            async with running_worker(settings) as rescuer:
                replies = await client.replies(12)
                assert sorted(r.id for r in replies) == sorted(ids) and all(r.ok for r in replies)
                assert rescuer.stats.redeliveries == 12

                async def doomed_gone() -> bool:
                    live = await protocol.live_workers(redis, "digits-cnn", 1)
                    return [w.instance for w in live] == [settings.instance]

                # The killed worker's heartbeat expires (TTL 1 s); the rescuer stays live.
                await wait_for_async(doomed_gone, what="the killed worker's heartbeat to expire")
            assert await client.pending_replies() == 0, "an entry was answered twice"
            assert await pending_count(redis, STREAM) == 0 and await redis.xlen(STREAM) == 0
            await redis.aclose()

        asyncio.run(scenario())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class FlakyScripts:
    """A real client whose next ``failures`` script calls (``protocol.complete``) fail
    with a connection error, as when Redis goes away while a batch runs."""

    def __init__(self, redis: Redis[bytes], failures: int, on_failure: Any = None) -> None:
        self._redis = redis
        self.failures = failures
        self.attempts = 0
        self._on_failure = on_failure

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def _script(self, method: str, *args: Any) -> Any:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            if self._on_failure is not None:
                self._on_failure()
            raise RedisConnectionError("injected: Redis went away")
        return await getattr(self._redis, method)(*args)

    async def evalsha(self, *args: Any) -> Any:
        return await self._script("evalsha", *args)

    async def eval(self, *args: Any) -> Any:
        return await self._script("eval", *args)


@contextlib.asynccontextmanager
async def flaky_worker(
    settings: WorkerSettings, redis: FlakyScripts, clock: Any = None
) -> AsyncIterator[Worker]:
    extra = {"clock": clock} if clock is not None else {}
    worker = Worker(cast(Any, redis), load_model(settings), settings, **extra)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.wait_registered(), timeout=30)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


def test_computed_replies_survive_a_failed_completion(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """Completion fails three times (Redis away): the replies are kept and sent once
    Redis answers again — each request answered exactly once, nothing left pending."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        sent = [await client.send({"image": image(1, float(i))}) for i in range(3)]
        flaky = FlakyScripts(redis, failures=3)
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with flaky_worker(settings, flaky):
            replies = await client.replies(3)
        assert sorted(r.id for r in replies) == sorted(sent)
        assert all(r.ok for r in replies)
        assert flaky.attempts > 3
        assert await client.pending_replies() == 0  # no second reply
        assert await redis.xlen(STREAM) == 0 and await pending_count(redis, STREAM) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_entries_read_with_a_refused_completion_are_kept_and_answered_once(
    model_repo: Path,
) -> None:
    """The worker sends a batch's answers and its next read in one write (FastRedis). Redis
    refuses the completion script (an ACL without EVALSHA/EVAL: NOPERM) but serves the
    read: the entry read is kept, the answers are sent again first once Redis accepts writes, and
    each request is answered exactly once, nothing left pending. Stepped by hand so that
    the second request is queued exactly when the first batch's answers go out."""

    async def scenario() -> None:
        with RedisServer() as server:
            admin: Redis[bytes] = Redis.from_url(server.url)
            client = Client(admin, "digits-cnn")
            settings = worker_settings(server.url, model_repo, "digits-cnn")
            redis = redis_client.connect(server.url, socket_timeout_s=10, connect_timeout_s=10)
            assert isinstance(redis, FastRedis) and redis.fast is not None
            worker = Worker(redis, load_model(settings), settings)
            assert await worker._register()  # groups and a heartbeat, as run() does
            first = await client.send({"image": image(1, 1.0)})
            await worker._step()  # reads the first request
            assert [p.request_id for p in worker._pending] == [first]
            second = await client.send({"image": image(1, 2.0)})
            await admin.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
            await worker._step()  # runs the first, sends its answer + the next read
            assert await client.pending_replies() == 0  # the completion was refused
            assert [p.request_id for p in worker._pending] == [second]  # the read was kept
            await admin.execute_command("ACL", "SETUSER", "default", "+@all")
            await worker._step()  # re-sends the first's answer, then runs the second
            await worker._step()  # the second's answer goes out with a read
            replies = await client.replies(2)
            assert sorted(r.id for r in replies) == sorted([first, second])
            assert all(r.ok for r in replies)
            assert await client.pending_replies() == 0  # no second reply
            assert await admin.xlen(STREAM) == 0 and await pending_count(admin, STREAM) == 0
            await redis.aclose()
            await admin.aclose()

    asyncio.run(scenario())


def test_reply_kept_past_its_deadline_becomes_deadline_exceeded(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """The request is computed in time, but Redis stays away until its deadline has
    passed (the worker's clock jumps on the failure): it is answered deadline_exceeded."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        now = [time.time() * 1000]
        deadline = int(now[0]) + 60_000
        rid = await client.send({"image": image(1)}, deadline_ms=deadline)

        def redis_away_past_the_deadline() -> None:
            now[0] = deadline + 1.0

        flaky = FlakyScripts(redis, failures=1, on_failure=redis_away_past_the_deadline)
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with flaky_worker(settings, flaky, clock=lambda: now[0]) as worker:
            [reply] = await client.replies(1)
            stats = worker.stats
        assert reply.id == rid and not reply.ok and reply.error is not None
        assert reply.error.code == ErrorCode.DEADLINE_EXCEEDED
        assert (stats.inference_count, stats.expired) == (1, 1)  # computed, then expired
        assert await client.pending_replies() == 0
        assert await redis.xlen(STREAM) == 0 and await pending_count(redis, STREAM) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_complete_answers_each_entry_once(redis_server: RedisServer) -> None:
    """``protocol.complete`` is idempotent (a retry after a lost answer pushes nothing)
    and splits a huge batch over several script calls."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        stream = protocol.stream_key("complete-model", 1)
        await protocol.ensure_group(redis, stream)
        for i in range(2500):
            await redis.xadd(stream, {"id": f"r{i}", "reply": "x", "deadline": "0", "body": b""})
        entries = await protocol.read_entries(redis, stream, "c", count=3000, block_ms=None)
        lists = tuple(protocol.reply_key(gw, "complete-model", 1) for gw in ("a", "b"))
        answers = [
            (Outgoing(lists[i % 2], Reply.failure(f"r{i}", "internal", "x")), e.entry_id)
            for i, e in enumerate(entries)
        ]
        assert await protocol.complete(redis, stream, answers, reply_ttl_s=60) == 2500
        assert await protocol.complete(redis, stream, answers, reply_ttl_s=60) == 0
        assert [await redis.llen(key) for key in lists] == [1250, 1250]
        first = decode_reply((await redis.lrange(lists[1], 0, 0))[0])
        assert first.id == "r1"
        assert 0 < await redis.ttl(lists[0]) <= 60
        assert await redis.xlen(stream) == 0 and await pending_count(redis, stream) == 0
        await redis.delete(stream, *lists)
        await redis.aclose()

    asyncio.run(scenario())
