"""The protocol's gateway-side helpers and malformed entries, against real Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from services.contract import protocol
from services.contract.codec import decode_reply, encode_request
from services.contract.errors import ErrorCode
from tests.support.redis import RedisServer, wait_for_async
from tests.support.workers import Client, enqueue, running_worker, worker_settings


def test_backlog_counts_outstanding_entries(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        model = "backlog-model"
        assert await protocol.backlog(redis, model, 1) == 0
        body = encode_request({"x": np.zeros((1, 2), np.float32)})
        for i in range(3):
            entry_id = await enqueue(
                redis, model, 1, request_id=f"r{i}", reply_to="axon:r:gw", deadline_ms=0, body=body
            )
            assert abs(protocol.entry_time_ms(entry_id) - time.time() * 1000) < 60_000
        assert await protocol.backlog(redis, model, 1) == 3
        fields = (await redis.xrange(protocol.stream_key(model, 1)))[0][1]
        assert set(fields) == {b"id", b"reply", b"deadline", b"budget", b"body"}
        assert fields[b"budget"] == b""  # none given: workers go by `deadline`
        await redis.delete(
            protocol.stream_key(model, 1), protocol.queued_bytes_key(protocol.stream_key(model, 1))
        )
        await redis.aclose()

    asyncio.run(scenario())


def test_malformed_entries_are_answered_or_dead_lettered(
    redis_server: RedisServer, model_repo: Path
) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        client = Client(redis, "digits-cnn")
        stream = protocol.stream_key("digits-cnn", 1)
        await redis.xadd(stream, {"id": "garbage", "reply": client.reply_to, "body": b"\xc1"})
        await redis.xadd(stream, {"id": "no-reply", "body": b""})
        wrong = await client.send({"pixels": np.zeros((1, 1, 8, 8), np.float32)})
        settings = worker_settings(redis_server.url, model_repo, "digits-cnn")
        async with running_worker(settings):
            replies = {r.id: r for r in await client.replies(2)}

            async def dead_lettered() -> int:
                return int(await redis.xlen(protocol.dlq_key("digits-cnn", 1)))

            await wait_for_async(dead_lettered, what="the unanswerable entry in the DLQ")
        garbage = replies["garbage"]
        assert garbage.error is not None and garbage.error.code == ErrorCode.BAD_ENTRY
        assert "not valid msgpack" in garbage.error.message
        unknown = replies[wrong]
        assert unknown.error is not None and unknown.error.code == ErrorCode.INVALID_INPUT
        assert "missing input(s) ['image']" in unknown.error.message
        dead = await redis.xrange(protocol.dlq_key("digits-cnn", 1))
        assert [fields[b"id"] for _, fields in dead] == [b"no-reply"]
        assert b"malformed entry" in dead[0][1][b"reason"]
        assert await redis.xlen(stream) == 0
        await redis.delete(protocol.dlq_key("digits-cnn", 1))
        await redis.aclose()

    asyncio.run(scenario())


def test_worker_survives_a_redis_restart(model_repo: Path) -> None:
    server = RedisServer().start()
    port = server.port

    async def scenario() -> None:
        nonlocal server
        settings = worker_settings(server.url, model_repo, "digits-cnn")
        async with running_worker(settings) as worker:
            redis: Redis[bytes] = Redis.from_url(server.url)
            client = Client(redis, "digits-cnn")
            await client.send({"image": np.ones((1, 1, 8, 8), np.float32)})
            assert (await client.replies(1))[0].ok
            await redis.aclose()

            server.stop()  # Redis goes away; nothing persisted, the group is gone too
            server = RedisServer(port=port).start()

            redis = Redis.from_url(server.url)
            client = Client(redis, "digits-cnn")

            # Queued while the group does not exist yet: the worker recreates the group
            # from id 0, so this entry is served too.
            request_id = await client.send({"image": np.ones((1, 1, 8, 8), np.float32)})

            async def served() -> bool:
                payload = await redis.lpop(client.reply_to)
                return payload is not None and decode_reply(payload).id == request_id

            await wait_for_async(served, timeout_s=60, what="the worker to serve after the restart")
            assert worker.ready
            await redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_queued_bytes_are_counted_and_bounded(redis_server: RedisServer) -> None:
    """The enqueue script refuses a body that would take the stream's queued bytes past
    the limit; answering an entry (``complete``) or dead-lettering it subtracts its
    size; the counter resets when the stream is empty."""

    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        model = "bytes-model"
        stream = protocol.stream_key(model, 1)
        counter = protocol.queued_bytes_key(stream)
        await protocol.ensure_group(redis, stream)

        def entry(i: int, size: int) -> protocol.NewEntry:
            return protocol.NewEntry(f"r{i}", "axon:r:gw", 0, b"x" * size)

        answers = await protocol.enqueue_many(
            redis, model, 1, [entry(0, 600), entry(1, 300), entry(2, 200)],
            limit=100, maxlen=1000, byte_limit=1000,
        )  # fmt: skip
        assert isinstance(answers[0], str) and isinstance(answers[1], str)
        assert answers[2] == protocol.Refused(backlog=0, queued_bytes=900)
        assert int(await redis.get(counter) or 0) == 900
        read = await protocol.read_entries(redis, stream, "w", count=2, block_ms=None)
        from services.contract.codec import Reply
        from services.contract.protocol import Outgoing

        done = await protocol.complete(
            redis, stream, [(Outgoing("axon:r:gw", Reply.failure("r0", "internal", "x")),
                             read[0].entry_id)],
            reply_ttl_s=60, sizes=[600],
        )  # fmt: skip
        assert done == 1 and int(await redis.get(counter) or 0) == 300
        await protocol.dead_letter(
            redis, model, 1, read[1], reason="test", consumer="w", reply=None,
            reply_ttl_s=60, maxlen=10,
        )  # fmt: skip
        assert int(await redis.get(counter) or 0) == 0
        assert await redis.xlen(stream) == 0
        # Drift (e.g. MAXLEN trimming) cannot accumulate: an empty stream starts at 0.
        await redis.set(counter, 10**9)
        (first,) = await protocol.enqueue_many(
            redis, model, 1, [entry(3, 700)], limit=100, maxlen=1000, byte_limit=1000
        )
        assert isinstance(first, str) and int(await redis.get(counter) or 0) == 700
        await redis.delete(stream, counter, protocol.dlq_key(model, 1), "axon:r:gw")
        await redis.aclose()

    asyncio.run(scenario())


def test_dead_letters_keep_bounded_bodies_and_expire(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        model = "dlq-model"
        stream = protocol.stream_key(model, 1)
        await protocol.ensure_group(redis, stream)
        big = b"y" * (protocol.DLQ_MAX_BODY_BYTES * 3)
        await enqueue(
            redis, model, 1, request_id="big", reply_to="axon:r:gw", deadline_ms=0, body=big
        )
        (read,) = await protocol.read_entries(redis, stream, "w", count=1, block_ms=None)
        await protocol.dead_letter(
            redis, model, 1, read, reason="test", consumer="w", reply=None,
            reply_ttl_s=60, maxlen=10,
        )  # fmt: skip
        ((_, fields),) = await redis.xrange(protocol.dlq_key(model, 1))
        assert len(fields[b"body"]) == protocol.DLQ_MAX_BODY_BYTES
        assert fields[b"body_truncated"] == b"1"
        assert int(fields[b"body_bytes"]) == len(big)
        ttl = await redis.ttl(protocol.dlq_key(model, 1))
        assert 0 < ttl <= protocol.DLQ_TTL_S
        await redis.delete(stream, protocol.queued_bytes_key(stream), protocol.dlq_key(model, 1))
        await redis.aclose()

    asyncio.run(scenario())
