"""The queue seam's contract (``services.gateway.transport.Transport``), run against both
implementations: ``RedisTransport`` on a real Redis server, a real three-master Redis
Cluster and a real Sentinel-watched master this suite started, and ``MemoryTransport``.
The worker's side of each is driven through its own real API (the Redis protocol's read
and completion scripts; the memory queue's take/answer)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pytest

from services.contract import jobs, protocol, redis_client, shadow_jobs
from services.contract.capture import Captured
from services.contract.codec import Reply, decode_reply, decode_request, encode_request
from services.contract.jobs import NewJob
from services.contract.protocol import NewEntry, Outgoing, Refused, WorkerInfo
from services.gateway.errors import UnavailableError
from services.gateway.transport import Transport, TransportDown
from services.gateway.transport_memory import MemoryTransport
from services.gateway.transport_redis import RedisTransport
from services.runtime.redis_server import free_port

_models = (f"contract-m{i}" for i in itertools.count())
DAY = 24 * 3600


class WorkerSide(Protocol):
    """The worker's half of a queue, as the contract tests need it."""

    async def register(self, info: WorkerInfo) -> None: ...

    async def take(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        """Up to ``count`` entries of ``model`` v1: (entry id, body, reply_to)."""
        ...

    async def answer(self, model: str, entry_id: str, reply_to: str, reply: Reply) -> None:
        """Answer a request entry (a reply list) or a job entry (a job key)."""
        ...

    async def take_lanes(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        """Up to ``count`` entries of ``model`` v1's request stream, then as many of its
        job stream (as a worker reads them)."""
        ...


@dataclass
class RedisWorkerSide:
    redis: protocol.RedisClient

    async def register(self, info: WorkerInfo) -> None:
        await protocol.publish_heartbeat(self.redis, info, ttl_ms=60_000)

    async def take(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        stream = protocol.stream_key(model, 1)
        await protocol.ensure_group(self.redis, stream)
        entries = await protocol.read_entries(
            self.redis, stream, "contract-worker", count=count, block_ms=1000
        )
        return [(e.entry_id, e.body or b"", e.reply_to or "") for e in entries]

    async def answer(self, model: str, entry_id: str, reply_to: str, reply: Reply) -> None:
        if jobs.is_job_key(reply_to):
            await jobs.complete_jobs(
                self.redis, model, 1, [(Outgoing(reply_to, reply), entry_id)], [1]
            )
            return
        await protocol.complete(
            self.redis,
            protocol.stream_key(model, 1),
            [(Outgoing(reply_to, reply), entry_id)],
            reply_ttl_s=60,
        )

    async def take_lanes(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        streams = [protocol.stream_key(model, 1), jobs.job_stream_key(model, 1)]
        for stream in streams:
            await protocol.ensure_group(self.redis, stream)
        found = await jobs.read_lanes(
            self.redis, streams, "contract-worker", count=count, block_ms=1000
        )
        entries = [*found.get(streams[0], []), *found.get(streams[1], [])][:count]
        return [(e.entry_id, e.body or b"", e.reply_to or "") for e in entries]


@dataclass
class MemoryWorkerSide:
    queue: MemoryTransport

    async def register(self, info: WorkerInfo) -> None:
        self.queue.register(info)

    async def take(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        taken = await self.queue.take(model, 1, count=count, timeout_s=1.0)
        return [(entry_id, entry.body, entry.reply_to) for entry_id, entry in taken]

    async def answer(self, model: str, entry_id: str, reply_to: str, reply: Reply) -> None:
        self.queue.answer(model, 1, entry_id, reply)

    async def take_lanes(self, model: str, count: int) -> list[tuple[str, bytes, str]]:
        taken = await self.queue.take_lanes(model, 1, count=count, timeout_s=1.0)
        return [(entry_id, entry.body, entry.reply_to) for entry_id, entry in taken]


Scenario = Callable[[Transport, WorkerSide], Awaitable[None]]


@pytest.fixture(params=["redis", "redis-cluster", "redis-sentinel", "memory"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario with a started transport (its receive task running) and its
    worker side, on a fresh event loop."""

    def runner(scenario: Scenario) -> None:
        async def main() -> None:
            async with started(request.param, request) as (transport, worker):
                await scenario(transport, worker)

        asyncio.run(main())

    return runner


@contextlib.asynccontextmanager
async def started(
    kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Transport, WorkerSide]]:
    transport: Transport
    worker: WorkerSide
    if kind.startswith("redis"):
        url = {
            "redis": lambda: request.getfixturevalue("redis_server").url,
            "redis-cluster": lambda: request.getfixturevalue("redis_cluster").url.replace(
                "redis:", "redis+cluster:"
            ),
            "redis-sentinel": lambda: request.getfixturevalue("redis_sentinel").url,
        }[kind]()
        redis = redis_client.connect(url, socket_timeout_s=5.0, connect_timeout_s=2.0)
        transport = RedisTransport(redis, "contract-gw", block_s=0.2)
        worker_redis = redis_client.connect(url, socket_timeout_s=5.0, connect_timeout_s=2.0)
        worker = RedisWorkerSide(worker_redis)
    else:
        transport = memory = MemoryTransport("contract-gw")
        worker = MemoryWorkerSide(memory)
    downs: list[None] = []
    receiving = asyncio.create_task(transport.receive(lambda: downs.append(None)))
    try:
        while not transport.healthy:
            await asyncio.sleep(0.01)
        yield transport, worker
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await transport.aclose()
        if isinstance(worker, RedisWorkerSide):
            await redis_client.close(worker.redis)
    assert not downs, "the queue never went away in these scenarios"


def entry(request_id: str, reply_to: str, body: bytes = b"x") -> NewEntry:
    return NewEntry(request_id, reply_to, 0, body, budget_ms=60_000)


async def submit(
    transport: Transport, model: str, e: NewEntry, *, limit: int = 100, byte_limit: int = 2**40
) -> str | Refused:
    return await transport.submit(model, 1, e, limit=limit, maxlen=1000, byte_limit=byte_limit)


def test_an_accepted_entry_reaches_a_worker_and_its_reply_the_waiting_request(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        body = encode_request({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"seed": 3})
        waiting = transport.replies.expect("r1")
        accepted = await submit(transport, model, entry("r1", transport.reply_to(model, 1), body))
        assert isinstance(accepted, str) and accepted
        [(entry_id, got_body, reply_to)] = await worker.take(model, 10)
        assert entry_id == accepted and reply_to == transport.reply_to(model, 1)
        decoded = decode_request(got_body)
        np.testing.assert_array_equal(decoded.inputs["x"], np.arange(6).reshape(2, 3))
        assert decoded.parameters == {"seed": 3}
        out = {"y": np.ones((2, 1), np.float32)}
        await worker.answer(model, entry_id, reply_to, Reply.success("r1", out))
        reply = await asyncio.wait_for(waiting, 5.0)
        assert reply.ok and reply.outputs is not None
        np.testing.assert_array_equal(reply.outputs["y"], out["y"])

    run(scenario)


def test_entries_are_refused_at_the_entry_limit_and_the_byte_limit(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        to = transport.reply_to(model, 1)
        answers = [await submit(transport, model, entry(f"r{i}", to), limit=2) for i in range(3)]
        assert [isinstance(a, str) for a in answers] == [True, True, False]
        assert answers[2] == Refused(backlog=2)
        other = next(_models)
        big = b"y" * 100
        first = await submit(transport, other, entry("a", to, big), byte_limit=150)
        second = await submit(transport, other, entry("b", to, big), byte_limit=150)
        assert isinstance(first, str)
        assert second == Refused(backlog=0, queued_bytes=100)
        # A body alone over the byte limit is queued into an empty stream (the gateway
        # refuses such a request itself, with 413, before submitting).
        empty = next(_models)
        assert isinstance(await submit(transport, empty, entry("c", to, big), byte_limit=10), str)

    run(scenario)


def test_answered_entries_leave_the_backlog(run: Callable[[Scenario], None]) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        to = transport.reply_to(model, 1)
        assert isinstance(await submit(transport, model, entry("a", to), limit=1), str)
        assert isinstance(await submit(transport, model, entry("b", to), limit=1), Refused)
        [(entry_id, _, reply_to)] = await worker.take(model, 10)
        await worker.answer(model, entry_id, reply_to, Reply.failure("a", "internal", "x"))
        assert isinstance(await submit(transport, model, entry("c", to), limit=1), str)

    run(scenario)


def test_replies_for_forgotten_or_unknown_ids_are_dropped(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        to = transport.reply_to(model, 1)
        transport.replies.expect("gone")
        transport.replies.forget("gone")
        kept = transport.replies.expect("kept")
        for rid in ("gone", "kept"):
            await submit(transport, model, entry(rid, to))
        taken = await worker.take(model, 10)
        for (entry_id, _, reply_to), rid in zip(taken, ("gone", "kept"), strict=True):
            await worker.answer(model, entry_id, reply_to, Reply.failure(rid, "internal", rid))
        reply = await asyncio.wait_for(kept, 5.0)
        assert reply.error is not None and reply.error.message == "kept"
        assert transport.healthy

    run(scenario)


def test_the_registry_view_lists_live_workers(run: Callable[[Scenario], None]) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        infos = [
            WorkerInfo(name, model, 1, "CPUExecutionProvider", 8, {"name": model}, {}, 0, 0)
            for name in ("w2", "w1")
        ]
        for info in infos:
            await worker.register(info)
        mine = [w for w in await transport.live_workers([]) if w.model == model]
        assert [w.instance for w in mine] == ["w1", "w2"]
        assert mine[0].metadata == {"name": model}

    run(scenario)


def test_routing_rules_are_stored_read_together_replaced_and_deleted(
    run: Callable[[Scenario], None],
) -> None:
    """The transport stores a rule's text as given (validation is the gateway's), one
    per model; ``get_rules`` answers the models asked for that have one."""

    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        first, second, bare = next(_models), next(_models), next(_models)
        assert await transport.get_rules([first, second]) == {}
        assert await transport.get_rules([]) == {}
        rule = '{"weights":{"1":90,"2":10},"sticky_header":null}'
        await transport.put_rule(first, rule)
        await transport.put_rule(second, '{"weights":{"1":1}}')
        assert await transport.get_rules([first, bare, second]) == {
            first: rule,
            second: '{"weights":{"1":1}}',
        }
        await transport.put_rule(first, '{"weights":{"2":1},"sticky_header":"X-User"}')
        assert await transport.get_rules([first]) == {
            first: '{"weights":{"2":1},"sticky_header":"X-User"}'
        }
        assert await transport.delete_rule(first) is True
        assert await transport.delete_rule(first) is False
        assert await transport.delete_rule(bare) is False
        assert await transport.get_rules([first, second]) == {second: '{"weights":{"1":1}}'}
        # Rules are not worker heartbeats: the registry view is unchanged by them.
        assert [w for w in await transport.live_workers([]) if w.model in (first, second)] == []

    run(scenario)


def test_an_unreachable_queue_raises_transport_down() -> None:
    """Redis: nothing listens on the port; memory: ``down``. Submit and the registry
    view raise ``TransportDown``; the receive task reports it and fails waiting requests."""

    async def check(transport: Transport, go_down: Callable[[], None]) -> None:
        downs: list[None] = []
        go_down()
        waiting = transport.replies.expect("w")
        receiving = asyncio.create_task(transport.receive(lambda: downs.append(None)))
        with pytest.raises(TransportDown, match="unreachable"):
            await transport.submit("m", 1, entry("r", transport.reply_to("m", 1)), limit=9,
                                   maxlen=9, byte_limit=2**40)  # fmt: skip
        with pytest.raises(TransportDown):
            await transport.live_workers([])
        with pytest.raises(TransportDown):
            await transport.get_rules(["m"])
        with pytest.raises(TransportDown):
            await transport.put_rule("m", "{}")
        with pytest.raises(TransportDown):
            await transport.delete_rule("m")
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(waiting, 10.0)
        assert downs and not transport.healthy
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await transport.aclose()

    async def main() -> None:
        url = f"redis://127.0.0.1:{free_port()}"
        redis = redis_client.connect(url, socket_timeout_s=1.0, connect_timeout_s=0.5)
        await check(RedisTransport(redis, "x", block_s=0.2), lambda: None)
        memory = MemoryTransport()

        def down() -> None:
            memory.down = True

        await check(memory, down)

    asyncio.run(main())


# ----------------------------------------------------------- the console's queue view


async def _dead_letter(worker: WorkerSide, model: str, entry_id: str) -> None:
    """Dead-letter entry ``entry_id`` of ``model`` v1 as each queue's worker side does."""
    if isinstance(worker, RedisWorkerSide):
        [(_, fields)] = await worker.redis.xrange(protocol.stream_key(model, 1), entry_id, entry_id)
        stale = protocol.StreamEntry(entry_id, dict(fields), deliveries=4)
        await protocol.dead_letter(
            worker.redis, model, 1, stale, reason="delivered 4 times (max 3)",
            consumer="contract-worker", reply=None, reply_ttl_s=60, maxlen=100,
        )  # fmt: skip
    else:
        assert isinstance(worker, MemoryWorkerSide)
        worker.queue.dead_letter(model, 1, entry_id, "delivered 4 times (max 3)")


def test_queue_counts_dead_letters_and_a_redrive_back_to_the_stream(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model, quiet = next(_models), next(_models)
        to = transport.reply_to(model, 1)
        for rid in ("keep", "dl-1"):
            queued = await submit(transport, model, entry(rid, to, b"body-" + rid.encode()))
            assert isinstance(queued, str)
        taken = await worker.take(model, 10)
        dead_entry = next(e for e in taken if e[1] == b"body-dl-1")[0]
        await _dead_letter(worker, model, dead_entry)
        counts = await transport.queue_counts([(model, 1), (quiet, 1)])
        assert [(c.backlog, c.dead_letters) for c in counts] == [(1, 1), (0, 0)]
        (dead,) = await transport.dead_letters(model, 1, 10)
        assert dead.entry_id == dead_entry and dead.request_id == "dl-1"
        assert dead.reason == "delivered 4 times (max 3)" and dead.body_bytes == len(b"body-dl-1")
        assert await transport.redrive(model, 1, "1-0") is None  # no such dead letter
        moved = await transport.redrive(model, 1, dead.dead_letter_id)
        assert moved is not None and moved.entry_id != dead_entry
        assert await transport.dead_letters(model, 1, 10) == []
        assert await transport.redrive(model, 1, dead.dead_letter_id) is None  # moved once
        [(again_id, body, reply_to)] = await worker.take(model, 10)  # a worker gets it again
        assert (again_id, body, reply_to) == (moved.entry_id, b"body-dl-1", to)
        counts = await transport.queue_counts([(model, 1)])
        assert (counts[0].backlog, counts[0].dead_letters) == (2, 0)

    run(scenario)


def test_idempotency_records_are_claimed_once_replaced_released_and_expire(
    run: Callable[[Scenario], None],
) -> None:
    """The store behind ``Idempotency-Key``: the first claim wins, later ones see the
    record; only the claim's holder releases it; a replaced record stays; TTLs expire."""

    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        key = protocol.idempotency_key(next(_models))
        assert await transport.claim_idempotency(key, b"claim-a", 60) is None
        assert await transport.claim_idempotency(key, b"claim-b", 60) == b"claim-a"
        assert await transport.get_idempotency(key) == b"claim-a"
        await transport.release_idempotency(key, b"claim-b")  # not its holder: kept
        assert await transport.get_idempotency(key) == b"claim-a"
        await transport.release_idempotency(key, b"claim-a")
        assert await transport.get_idempotency(key) is None
        assert await transport.claim_idempotency(key, b"claim-c", 60) is None
        await transport.put_idempotency(key, b"answer", 60)
        await transport.release_idempotency(key, b"claim-c")  # answered: no longer a claim
        assert await transport.claim_idempotency(key, b"claim-d", 60) == b"answer"
        short = protocol.idempotency_key(next(_models))
        assert await transport.claim_idempotency(short, b"x", 1) is None
        await asyncio.sleep(1.2)
        assert await transport.get_idempotency(short) is None

    run(scenario)


def test_jobs_are_stored_limited_taken_after_requests_and_answered_into_the_job(
    run: Callable[[Scenario], None],
) -> None:
    """The job lane: ``submit_job`` stores the job and queues its entry (refused at the
    job stream's own limits), a worker takes requests first and jobs for the room left,
    and a job's answer is stored with it (once), for ``get_job``; a job expires."""

    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)

        def job(name: str, body: bytes = b"j", ttl_s: int = 60) -> NewJob:
            key = jobs.job_key(model, 1, name)
            return NewJob(key, b"meta-" + name.encode(), ttl_s, entry(name, key, body))

        async def submit_job(j: NewJob, limit: int = 2, byte_limit: int = 2**40) -> object:
            return await transport.submit_job(
                model, 1, j, limit=limit, maxlen=1000, byte_limit=byte_limit
            )

        first, second = job("a"), job("b")
        assert isinstance(await submit_job(first), str)
        assert isinstance(await submit_job(second), str)
        assert await submit_job(job("c")) == Refused(backlog=2)
        assert await transport.get_job(job("c").key) is None  # refused: not stored
        assert await transport.get_job(first.key) == jobs.JobRecord(b"meta-a", None)
        to = transport.reply_to(model, 1)
        assert isinstance(await submit(transport, model, entry("req", to)), str)
        taken = await worker.take_lanes(model, 2)
        assert [reply_to for _, _, reply_to in taken] == [to, first.key]
        (entry_id, _, _) = taken[1]
        out = {"y": np.full((1, 2), 3.0, np.float32)}
        await worker.answer(model, entry_id, first.key, Reply.success("a", out))
        await worker.answer(model, entry_id, first.key, Reply.failure("a", "internal", "late"))
        record = await transport.get_job(first.key)
        assert record is not None and record.meta == b"meta-a" and record.reply is not None
        reply = decode_reply(record.reply)
        assert reply.ok and reply.outputs is not None
        np.testing.assert_array_equal(reply.outputs["y"], out["y"])
        assert isinstance(await submit_job(job("d")), str)  # room again: one answered
        other = next(_models)
        big = NewJob(jobs.job_key(other, 1, "big"), b"m", 60, entry("big", "k", b"z" * 100))
        big = NewJob(big.key, big.meta, 60, entry("big", big.key, b"z" * 100))
        assert isinstance(
            await transport.submit_job(other, 1, big, limit=9, maxlen=9, byte_limit=150), str
        )
        again = NewJob(jobs.job_key(other, 1, "b2"), b"m", 60, entry("b2", "k", b"z" * 100))
        assert await transport.submit_job(
            other, 1, again, limit=9, maxlen=9, byte_limit=150
        ) == Refused(backlog=0, queued_bytes=100)  # fmt: skip
        short = job("short", ttl_s=1)
        assert isinstance(await submit_job(short, limit=10), str)
        await asyncio.sleep(1.2)
        assert await transport.get_job(short.key) is None

    run(scenario)


def test_jobs_submitted_together_and_collected_once_and_given_up_jobs_dropped(
    run: Callable[[Scenario], None],
) -> None:
    """Shadow copies: ``submit_jobs`` queues several jobs in order, each under the job
    stream's limits (and a byte limit as ``submit_job``'s); ``collect_jobs`` answers
    None for a job not answered yet, its reply once answered (the job is then gone: a
    second collect is None), and a dropped job is deleted, so its late answer is never
    stored."""

    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)

        def job(name: str) -> NewJob:
            key = shadow_jobs.shadow_job_key(model, 1, name)
            return NewJob(key, b"shadow", 60, entry(name, key))

        kept, dropped, over = job("kept"), job("dropped"), job("over")
        queued = await transport.submit_jobs(
            model, 1, [kept, dropped, over], limit=2, maxlen=1000, byte_limit=2**40
        )
        assert [isinstance(q, str) for q in queued[:2]] == [True, True]
        assert queued[2] == Refused(backlog=2)  # the limit is checked before each job
        assert await transport.get_job(over.key) is None
        assert await transport.get_job(kept.key) == jobs.JobRecord(b"shadow", None)
        assert await transport.collect_jobs([kept.key, dropped.key]) == [None, None]
        assert await transport.collect_jobs([], drop=[dropped.key]) == []
        taken = await worker.take_lanes(model, 2)
        assert sorted(reply_to for _, _, reply_to in taken) == sorted([kept.key, dropped.key])
        out = {"y": np.full((1, 2), 5.0, np.float32)}
        for entry_id, _, reply_to in taken:
            await worker.answer(model, entry_id, reply_to, Reply.success(reply_to, out))
        assert await transport.get_job(dropped.key) is None  # the late answer was not stored
        raw, missing = await transport.collect_jobs([kept.key, dropped.key])
        assert missing is None and raw is not None
        reply = decode_reply(raw)
        assert reply.ok and reply.outputs is not None
        np.testing.assert_array_equal(reply.outputs["y"], out["y"])
        assert await transport.collect_jobs([kept.key]) == [None]  # read once, then gone
        assert await transport.get_job(kept.key) is None
        other = next(_models)
        big = [
            NewJob(k, b"m", 60, entry(n, k, b"z" * 100))
            for n in ("b1", "b2")
            for k in [shadow_jobs.shadow_job_key(other, 1, n)]
        ]
        first, second = await transport.submit_jobs(
            other, 1, big, limit=9, maxlen=9, byte_limit=150
        )
        assert isinstance(first, str)  # one body alone over nothing queued: in
        assert second == Refused(backlog=0, queued_bytes=100)

    run(scenario)


def test_captures_are_appended_capped_and_read_back_newest_oldest_first(
    run: Callable[[Scenario], None],
) -> None:
    """``capture`` appends to a model's capture stream, keeping about its newest
    ``maxlen`` (Redis trims ``~``: at least ``maxlen`` stay); ``read_captures`` answers the
    newest ``count``, oldest first, fields as written."""

    async def scenario(transport: Transport, worker: WorkerSide) -> None:
        model = next(_models)
        assert await transport.read_captures(model, 10) == []

        def item(i: int) -> Captured:
            return Captured(f"r{i}", 1 + i % 2, "classify", b"body%d" % i, b"reply%d" % i,
                            1000 + i, 1_700_000_000_000 + i)  # fmt: skip

        await transport.capture(model, [item(0), item(1)], maxlen=1000, max_age_s=DAY)
        await transport.capture(model, [item(2)], maxlen=1000, max_age_s=DAY)
        got = await transport.read_captures(model, 2)
        assert [c.request_id for c in got] == ["r1", "r2"]
        assert got[1] == dataclasses.replace(item(2), entry_id=got[1].entry_id)
        await transport.capture(model, [item(i) for i in range(3, 503)], maxlen=100, max_age_s=DAY)
        kept = await transport.read_captures(model, 10_000)
        assert 100 <= len(kept) < 503  # capped (exactly in memory, about in Redis)
        assert kept[-1].request_id == "r502"

    run(scenario)
