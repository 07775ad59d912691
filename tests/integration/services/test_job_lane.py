"""The job lane through real Redis with a real worker and a real exported model:
requests are run before jobs queued earlier, jobs fill the room a batch of requests
leaves, a job's result is stored with its job (with the job's TTL), and a dead worker's
job is claimed, dead-lettered after max deliveries (its job answered with the error)
and re-driven back to the job stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from services.contract import jobs, protocol, queue_view
from services.contract.codec import decode_reply, encode_request
from services.contract.errors import ErrorCode
from services.contract.jobs import NewJob
from services.contract.protocol import NewEntry
from tests.support.redis import RedisServer, wait_for_async
from tests.support.workers import Client, running_worker, worker_settings

MODEL = "digits-cnn"


def image(rows: int, seed: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    return np.random.default_rng(seed).uniform(0, 16, (rows, 1, 8, 8)).astype(np.float32)


async def submit_job(redis: Redis[bytes], rows: int = 1, ttl_s: int = 600) -> str:
    """Queue a job as the gateway does; returns its key."""
    key = jobs.job_key(MODEL, 1, uuid.uuid4().hex)
    entry = NewEntry(key.rsplit(":", 1)[1], key, 0, encode_request({"image": image(rows)}, {}),
                     budget_ms=600_000)  # fmt: skip
    answer = await jobs.enqueue_job(
        redis, MODEL, 1, NewJob(key, b"meta", ttl_s, entry), limit=100, maxlen=1000,
        byte_limit=2**30,
    )  # fmt: skip
    assert isinstance(answer, str), answer
    return key


async def answered(redis: Redis[bytes], keys: list[str]) -> bool:
    records = [await jobs.get_job(redis, key) for key in keys]
    return all(r is not None and r.reply is not None for r in records)


def test_requests_run_before_older_jobs_and_jobs_fill_the_room(
    redis_server: RedisServer, model_repo: Path
) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        keys = [await submit_job(redis) for _ in range(4)]  # queued first
        client = Client(redis, MODEL)
        ids = [await client.send({"image": image(1, n)}) for n in range(4)]
        acks: list[str] = []
        monitor_client: Redis[bytes] = Redis.from_url(redis_server.url)

        async def watch() -> None:
            async with monitor_client.monitor() as monitor:
                while True:
                    command = (await monitor.next_command())["command"]
                    if command.startswith("XACK"):
                        acks.append(command.split()[1])

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.2)  # MONITOR is on before the worker reads
        settings = worker_settings(
            redis_server.url, model_repo, MODEL, max_batch_rows="4", max_queue_delay_ms="0",
            job_batch_rows="4",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            replies = await client.replies(4)
            await wait_for_async(lambda: answered(redis, keys), what="the jobs answered")
            runs = worker.stats.execution_count
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        assert sorted(r.id for r in replies) == sorted(ids) and all(r.ok for r in replies)
        request_stream, job_stream = protocol.stream_key(MODEL, 1), jobs.job_stream_key(MODEL, 1)
        assert acks == [request_stream] * 4 + [job_stream] * 4, acks
        assert runs == 2
        for key in keys:
            record = await jobs.get_job(redis, key)
            assert record is not None and record.reply is not None and record.meta == b"meta"
            reply = decode_reply(record.reply)
            assert reply.ok and reply.outputs is not None
            assert reply.outputs["probabilities"].shape == (1, 10)
            assert 590 < await redis.ttl(key) <= 600  # the job's TTL, not the reply lists'

        # Two requests and six jobs: one batch of eight rows.
        more = [await submit_job(redis) for _ in range(6)]
        await client.send({"image": image(1)})
        await client.send({"image": image(1)})
        settings = worker_settings(
            redis_server.url, model_repo, MODEL, max_batch_rows="8", max_queue_delay_ms="0",
            job_batch_rows="8",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await client.replies(2)
            await wait_for_async(lambda: answered(redis, more), what="the jobs answered")
            assert worker.stats.execution_count == 1
        assert await jobs.backlog(redis, MODEL, 1) == 0
        assert int(await redis.get(jobs.job_bytes_key(MODEL, 1)) or 0) == 0
        await monitor_client.aclose()
        await redis.aclose()

    asyncio.run(scenario())


def test_a_batch_carries_at_most_job_batch_rows_of_jobs(
    redis_server: RedisServer, model_repo: Path
) -> None:
    """Twenty queued jobs and four requests, batches of 8 with at most 2 job rows: the
    requests go in the first batch with 2 jobs (not behind the 20), and every batch after
    carries 2 jobs; all are answered."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        keys = [await submit_job(redis) for _ in range(20)]
        client = Client(redis, MODEL)
        for n in range(4):
            await client.send({"image": image(1, n)})
        settings = worker_settings(
            redis_server.url, model_repo, MODEL, max_batch_rows="8", max_queue_delay_ms="0",
            job_batch_rows="2",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            replies = await client.replies(4)
            await wait_for_async(lambda: answered(redis, keys), what="the jobs answered")
            runs = worker.stats.execution_count
        assert all(r.ok for r in replies)
        # 24 rows in batches of at most 2 jobs: the requests' batch (4 + 2), then 9 of 2.
        assert runs == 10, runs
        await redis.aclose()

    asyncio.run(scenario())


def test_a_dead_workers_job_is_claimed_dead_lettered_and_redriven(
    redis_server: RedisServer, model_repo: Path
) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        stream = jobs.job_stream_key(MODEL, 1)
        await protocol.ensure_group(redis, stream)
        key = await submit_job(redis, rows=2)
        # A consumer with no heartbeat (its worker died) read it; with max_deliveries 1,
        # the next claim is one delivery too many.
        (taken,) = await protocol.read_entries(redis, stream, "ghost", count=1, block_ms=None)
        settings = worker_settings(
            redis_server.url, model_repo, MODEL, max_deliveries="1", claim_interval_ms="50"
        )
        async with running_worker(settings) as worker:
            await wait_for_async(lambda: answered(redis, [key]), what="the dead letter's answer")
            record = await jobs.get_job(redis, key)
            assert record is not None and record.reply is not None
            reply = decode_reply(record.reply)
            assert not reply.ok and reply.error is not None
            assert reply.error.code == ErrorCode.DEAD_LETTER
            (dead,) = await queue_view.dead_letters(redis, MODEL, 1, count=10)
            assert dead.entry_id == taken.entry_id and dead.deliveries == 2
            assert worker.stats.dead_letters == 1
            moved = await queue_view.redrive(redis, MODEL, 1, dead.dead_letter_id)
            assert moved is not None and moved.stream == stream

            async def succeeded() -> bool:
                got = await jobs.get_job(redis, key)
                return got is not None and got.reply is not None and decode_reply(got.reply).ok

            await wait_for_async(succeeded, what="the re-driven job answered")
        assert await redis.xlen(stream) == 0
        await redis.delete(protocol.dlq_key(MODEL, 1))
        await redis.aclose()

    asyncio.run(scenario())
