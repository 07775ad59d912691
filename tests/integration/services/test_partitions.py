"""A model version's queue split into partitions (``AXON_PARTITIONS``), on a real Redis
with a real worker group: every partition is read and answered by its own worker loop,
its dead letters stay in its own slot, and the console's view (counts, listing,
re-drive) covers every partition."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import prometheus_client
from redis.asyncio import Redis

from services.contract import protocol, queue_view
from services.contract.codec import decode_reply, encode_request
from services.runtime.metrics import WorkerMetrics, prometheus_backend
from services.runtime.worker import load_model
from services.runtime.worker_group import WorkerGroup
from tests.support.redis import RedisServer, wait_for_async
from tests.support.workers import worker_settings


def test_every_partition_is_served_and_its_dead_letters_are_found(
    redis_server: RedisServer, model_repo: Path
) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        model = "digits-cnn"
        settings = worker_settings(redis_server.url, model_repo, model, partitions="3")
        metrics = WorkerMetrics.create(prometheus_backend(prometheus_client.CollectorRegistry()))
        group = WorkerGroup(redis, load_model(settings), settings, metrics=metrics)
        task = asyncio.create_task(group.run())
        try:
            await wait_for_async(lambda: _ready(group), what="three partition workers")
            infos = await protocol.live_workers(redis, model, 1)
            mine = [i for i in infos if i.instance.startswith(settings.instance)]
            assert sorted(i.partition for i in mine) == [0, 1, 2]
            assert {i.partitions for i in mine} == {3}
            assert {i.instance for i in mine} == {
                settings.instance, f"{settings.instance}.p1", f"{settings.instance}.p2"
            }  # fmt: skip
            body = encode_request({"image": np.zeros((1, 1, 8, 8), np.float32)})
            deadline = int(time.time() * 1000) + 60_000
            for partition in range(3):
                to = protocol.reply_key("part-gw", model, 1, partition)
                entry = protocol.NewEntry(f"r{partition}", to, deadline, body)
                await protocol.enqueue_many(
                    redis, model, 1, [entry], limit=100, maxlen=1000, partition=partition
                )
            for partition in range(3):
                to = protocol.reply_key("part-gw", model, 1, partition)
                popped = await redis.blpop([to], timeout=20)
                assert popped is not None, f"no reply on partition {partition}"
                reply = decode_reply(popped[1])
                assert reply.id == f"r{partition}" and reply.ok
            # An entry no worker can answer (no reply list) is dead-lettered where it was.
            await redis.xadd(protocol.stream_key(model, 1, 2), {"id": "lost", "body": b""})

            async def dead() -> int:
                return int(await redis.xlen(protocol.dlq_key(model, 1, 2)))

            await wait_for_async(dead, what="the entry in partition 2's dead letters")
            (counts,) = await queue_view.queue_counts(redis, [(model, 1)], {(model, 1): 3})
            assert counts.dead_letters == 1 and counts.backlog == 0
            (only_first,) = await queue_view.queue_counts(redis, [(model, 1)])
            assert only_first.dead_letters == 0  # partition 0 alone has none
            (letter,) = await queue_view.dead_letters(redis, model, 1, count=10, partitions=3)
            # Re-driven back to the partition it came from, where its worker takes it again.
            moved = await queue_view.redrive(redis, model, 1, letter.dead_letter_id, partitions=3)
            assert moved is not None and moved.stream == protocol.stream_key(model, 1, 2)
            assert await queue_view.redrive(redis, model, 1, "1-1", partitions=3) is None
        finally:
            group.stop()
            await asyncio.wait_for(task, timeout=30)
            for partition in range(3):
                await redis.delete(protocol.dlq_key(model, 1, partition))
            await redis.aclose()

    asyncio.run(scenario())


async def _ready(group: WorkerGroup) -> bool:
    return group.ready
