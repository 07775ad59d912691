"""An in-process implementation of the queue seam (``transport.Transport``), for tests
of the gateway's behaviour without Redis: the same answers as ``RedisTransport`` (the
contract tests run against both), on one event loop, with no I/O.

Per model version a stream keeps the entries not yet answered, in order; ``submit``
applies the backlog limits exactly as the Redis enqueue script does (entry limit, and
the byte limit once the stream is not empty). The worker side is a small API of its own:
``register`` a heartbeat, ``take`` entries (as XREADGROUP), ``answer`` one (as the
completion script: the reply goes to its ``reply_to`` through the real reply codec and
the entry leaves the stream). ``serve`` runs a handler as a worker loop on the
gateway's event loop. Each model version also has a job stream (``submit_job``): a
worker's batch takes the request stream's entries first and fills the room left with
jobs, whose answers are stored with the job (``get_job``) instead of being delivered.
``dead_letter`` moves an entry to the version's dead letters
(``redrive`` moves it back). ``down`` makes every call fail as an unreachable Redis would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from services.contract.capture import Captured
from services.contract.codec import Reply, encode_reply
from services.contract.jobs import JobRecord, NewJob
from services.contract.protocol import NewEntry, Refused, WorkerInfo
from services.contract.queue_view import DeadLetter, QueueCounts, Redriven
from services.gateway.replies import Replies
from services.gateway.transport import TransportDown

log = logging.getLogger(__name__)

BACKEND = "the in-memory queue"

Handler = Callable[[Sequence[NewEntry]], Awaitable[Sequence[Reply]]]
"""A worker: the entries of one batch → one reply per entry, in order."""


@dataclass
class _Stream:
    entries: list[tuple[str, NewEntry]] = field(default_factory=list)
    """Entries not yet answered, oldest first, with their ids."""
    delivered: set[str] = field(default_factory=set)
    """Ids of entries taken by a worker and not yet answered."""
    queued_bytes: int = 0
    added: asyncio.Event = field(default_factory=asyncio.Event)
    dead: list[tuple[DeadLetter, NewEntry]] = field(default_factory=list)
    """Dead letters, oldest first, with the entries they were."""


class MemoryTransport:
    """The queue in this process (see the module docstring)."""

    def __init__(self, instance: str = "memory") -> None:
        self._reply_to = f"memory:r:{instance}"
        self.replies = Replies(self._reply_to)
        self.name = BACKEND
        self.down = False
        """True: every call fails as if the queue were unreachable (``TransportDown``)."""
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._sequence = 0
        self._serving: list[tuple[WorkerInfo, Handler]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._receiving = False
        self._rules: dict[str, str] = {}
        self._idempotency: dict[str, tuple[bytes, float]] = {}
        """Idempotency records: key → (record, monotonic expiry)."""
        self._captures: dict[str, list[Captured]] = {}
        """Capture streams by model, oldest first."""
        self._job_streams: dict[tuple[str, int], _Stream] = {}
        self._jobs: dict[str, tuple[JobRecord, int, float]] = {}
        """Jobs: key → (record, TTL s, monotonic expiry)."""

    # ------------------------------------------------------------ the gateway's side

    def reply_to(self, model: str, version: int, partition: int = 0) -> str:
        return self._reply_to

    @property
    def healthy(self) -> bool:
        return self._receiving and not self.down

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
        """As the Redis transport's, on one in-process stream per model version: a
        ``partition`` names no stream of its own here (partitions spread Redis' load;
        their routing is tested against Redis)."""
        future: asyncio.Future[str | Refused] = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(TransportDown(BACKEND))
            return future
        stream = self._stream(model, version)
        length, size = len(stream.entries), len(entry.body)
        if length >= limit:
            future.set_result(Refused(backlog=length))
        elif length > 0 and stream.queued_bytes + size > byte_limit:
            future.set_result(Refused(backlog=0, queued_bytes=stream.queued_bytes))
        else:
            future.set_result(self._append(stream, entry))
        return future

    async def submit_job(
        self, model: str, version: int, job: NewJob, *, limit: int, maxlen: int, byte_limit: int
    ) -> str | Refused:
        """As the Redis transport's: the job stream's limits as ``submit``'s, the job
        stored for ``job.ttl_s`` s."""
        if self.down:
            raise TransportDown(BACKEND)
        lane = self._job_stream(model, version)
        length, size = len(lane.entries), len(job.entry.body)
        if length >= limit:
            return Refused(backlog=length)
        if length > 0 and lane.queued_bytes + size > byte_limit:
            return Refused(backlog=0, queued_bytes=lane.queued_bytes)
        self._jobs[job.key] = (JobRecord(job.meta, None), job.ttl_s, time.monotonic() + job.ttl_s)
        return self._append(lane, job.entry)

    async def get_job(self, key: str) -> JobRecord | None:
        if self.down:
            raise TransportDown(BACKEND)
        held = self._jobs.get(key)
        if held is None or held[2] <= time.monotonic():
            self._jobs.pop(key, None)
            return None
        return held[0]

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
        return [
            await self.submit_job(
                model, version, job, limit=limit, maxlen=maxlen, byte_limit=byte_limit
            )
            for job in jobs
        ]

    async def collect_jobs(
        self, keys: Sequence[str], drop: Sequence[str] = ()
    ) -> list[bytes | None]:
        """As the Redis transport's: answered jobs (and those of ``drop``) are deleted."""
        if self.down:
            raise TransportDown(BACKEND)
        found: list[bytes | None] = []
        now = time.monotonic()
        for key in keys:
            held = self._jobs.get(key)
            reply = held[0].reply if held is not None and held[2] > now else None
            if reply is not None or (held is not None and held[2] <= now):
                del self._jobs[key]
            found.append(reply)
        for key in drop:
            self._jobs.pop(key, None)
        return found

    async def capture(
        self, model: str, items: Sequence[Captured], *, maxlen: int, max_age_s: int
    ) -> None:
        """As the Redis transport's; the cap is exact here (Redis' ``~`` trims to about
        ``maxlen``), the age goes by each entry's ``at_ms`` (Redis: its entry id), and
        nothing expires the stream."""
        if self.down:
            raise TransportDown(BACKEND)
        stream = self._captures.setdefault(model, [])
        for item in items:
            self._sequence += 1
            stream.append(dataclasses.replace(item, entry_id=f"{self._sequence}-0"))
        del stream[: max(len(stream) - maxlen, 0)]
        if items:
            cutoff_ms = max(item.at_ms for item in items) - max_age_s * 1000
            stream[:] = [item for item in stream if item.at_ms >= cutoff_ms]

    async def read_captures(self, model: str, count: int) -> list[Captured]:
        if self.down:
            raise TransportDown(BACKEND)
        return list(self._captures.get(model, [])[-count:]) if count > 0 else []

    def job_backlog(self, model: str, version: int) -> int:
        """Jobs queued and not yet answered (as XLEN of the Redis job stream)."""
        return len(self._job_stream(model, version).entries)

    def _append(self, stream: _Stream, entry: NewEntry) -> str:
        """Queue ``entry`` at the end of ``stream``; its new entry id."""
        self._sequence += 1
        entry_id = f"{self._sequence}-0"
        stream.entries.append((entry_id, entry))
        stream.queued_bytes += len(entry.body)
        stream.added.set()
        return entry_id

    async def live_workers(self, malformed: list[str]) -> list[WorkerInfo]:
        if self.down:
            raise TransportDown(BACKEND)
        return sorted(self._workers.values(), key=lambda w: (w.model, w.version, w.instance))

    async def get_rules(self, models: Sequence[str]) -> dict[str, str]:
        if self.down:
            raise TransportDown(BACKEND)
        return {model: self._rules[model] for model in models if model in self._rules}

    async def put_rule(self, model: str, raw: str) -> None:
        if self.down:
            raise TransportDown(BACKEND)
        self._rules[model] = raw

    async def delete_rule(self, model: str) -> bool:
        if self.down:
            raise TransportDown(BACKEND)
        return self._rules.pop(model, None) is not None

    async def receive(self, on_down: Callable[[], None]) -> None:
        """Run the ``serve``d workers; while ``down``, fail waiting requests once and
        call ``on_down``, as the Redis transport does when Redis goes away."""
        self._receiving = True
        for info, handler in self._serving:
            self._start(info, handler)
        was_down = False
        try:
            while True:
                if self.down and not was_down:
                    on_down()
                    self.replies.fail_all(f"lost the connection to {BACKEND}")
                was_down = self.down
                await asyncio.sleep(0.01)
        finally:
            self._receiving = False
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()

    async def aclose(self) -> None:
        return None

    def _record(self, key: str) -> bytes | None:
        if self.down:
            raise TransportDown(BACKEND)
        held = self._idempotency.get(key)
        if held is None or held[1] <= time.monotonic():
            self._idempotency.pop(key, None)
            return None
        return held[0]

    async def claim_idempotency(self, key: str, claim: bytes, ttl_s: int) -> bytes | None:
        found = self._record(key)
        if found is None:
            self._idempotency[key] = (claim, time.monotonic() + ttl_s)
        return found

    async def get_idempotency(self, key: str) -> bytes | None:
        return self._record(key)

    async def put_idempotency(self, key: str, record: bytes, ttl_s: int) -> None:
        self._record(key)
        self._idempotency[key] = (record, time.monotonic() + ttl_s)

    async def release_idempotency(self, key: str, claim: bytes) -> None:
        if self._record(key) == claim:
            del self._idempotency[key]

    async def queue_counts(
        self,
        versions: Sequence[tuple[str, int]],
        partitions: Mapping[tuple[str, int], int] | None = None,
    ) -> list[QueueCounts]:
        if self.down:
            raise TransportDown(BACKEND)
        streams = [self._stream(model, version) for model, version in versions]
        return [QueueCounts(len(s.entries), len(s.dead)) for s in streams]

    async def dead_letters(
        self, model: str, version: int, count: int, partitions: int = 1
    ) -> list[DeadLetter]:
        if self.down:
            raise TransportDown(BACKEND)
        return [dead for dead, _ in reversed(self._stream(model, version).dead)][:count]

    async def redrive(
        self, model: str, version: int, dead_letter_id: str, partitions: int = 1
    ) -> Redriven | None:
        if self.down:
            raise TransportDown(BACKEND)
        stream = self._stream(model, version)
        for index, (dead, entry) in enumerate(stream.dead):
            if dead.dead_letter_id == dead_letter_id:
                del stream.dead[index]
                return Redriven(f"memory:q:{model}:{version}", self._append(stream, entry))
        return None

    # ------------------------------------------------------------- the workers' side

    def register(self, info: WorkerInfo) -> None:
        """Publish (or refresh) a worker's heartbeat."""
        self._workers[info.instance] = info

    def deregister(self, instance: str) -> None:
        self._workers.pop(instance, None)

    def backlog(self, model: str, version: int) -> int:
        """Entries queued and not yet answered (as XLEN of the Redis stream)."""
        return len(self._stream(model, version).entries)

    async def take(
        self, model: str, version: int, *, count: int, timeout_s: float
    ) -> list[tuple[str, NewEntry]]:
        """Up to ``count`` entries no worker has taken yet, oldest first, waiting up to
        ``timeout_s`` for the first; with their entry ids (for ``answer``)."""
        stream = self._stream(model, version)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while True:
            fresh = [(i, e) for i, e in stream.entries if i not in stream.delivered][:count]
            if fresh or loop.time() >= until:
                stream.delivered.update(i for i, _ in fresh)
                return fresh
            stream.added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.added.wait(), timeout=until - loop.time())

    async def take_lanes(
        self, model: str, version: int, *, count: int, timeout_s: float
    ) -> list[tuple[str, NewEntry]]:
        """As ``take``, the request stream's entries first, then jobs for the room left
        (as a Redis worker: ``services.runtime.worker``)."""
        stream, lane = self._stream(model, version), self._job_stream(model, version)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while True:
            fresh = [(i, e) for i, e in stream.entries if i not in stream.delivered][:count]
            jobs = [(i, e) for i, e in lane.entries if i not in lane.delivered]
            jobs = jobs[: count - len(fresh)]
            if fresh or jobs or loop.time() >= until:
                stream.delivered.update(i for i, _ in fresh)
                lane.delivered.update(i for i, _ in jobs)
                return fresh + jobs
            stream.added.clear()  # the lane shares the event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.added.wait(), timeout=until - loop.time())

    def answer(self, model: str, version: int, entry_id: str, reply: Reply) -> None:
        """Send ``reply`` for entry ``entry_id`` and remove the entry (at most once: an
        entry already answered is ignored, as by the Redis completion script); a job's
        reply is stored with its job (with the job's TTL from now) while it exists."""
        lane = self._job_stream(model, version)
        for index, (queued_id, entry) in enumerate(lane.entries):
            if queued_id == entry_id:
                del lane.entries[index]
                lane.delivered.discard(entry_id)
                lane.queued_bytes = max(lane.queued_bytes - len(entry.body), 0)
                held = self._jobs.get(entry.reply_to)
                if held is not None and held[2] > time.monotonic():
                    record = JobRecord(held[0].meta, encode_reply(reply))
                    self._jobs[entry.reply_to] = (record, held[1], time.monotonic() + held[1])
                return
        stream = self._stream(model, version)
        for index, (queued_id, entry) in enumerate(stream.entries):
            if queued_id == entry_id:
                del stream.entries[index]
                stream.delivered.discard(entry_id)
                stream.queued_bytes -= len(entry.body)
                if not stream.entries:
                    stream.queued_bytes = 0
                if entry.reply_to == self._reply_to:
                    self.replies.deliver(encode_reply(reply))
                return

    def dead_letter(self, model: str, version: int, entry_id: str, reason: str) -> str:
        """Move entry ``entry_id`` to the version's dead letters without a reply (as
        ``protocol.dead_letter`` for a malformed entry); the dead letter's id."""
        stream = self._stream(model, version)
        for index, (queued_id, entry) in enumerate(stream.entries):
            if queued_id == entry_id:
                del stream.entries[index]
                stream.delivered.discard(entry_id)
                stream.queued_bytes = max(stream.queued_bytes - len(entry.body), 0)
                self._sequence += 1
                dead = DeadLetter(
                    f"{self._sequence}-0", entry_id, entry.request_id, reason, 1, "memory",
                    0, len(entry.body), truncated=False,
                )  # fmt: skip
                stream.dead.append((dead, entry))
                return dead.dead_letter_id
        raise KeyError(f"no entry {entry_id} queued for {model} version {version}")

    def serve(self, info: WorkerInfo, handler: Handler) -> None:
        """Register ``info`` and answer its stream's entries with ``handler`` (batches of
        up to ``info.max_batch_rows`` entries) while ``receive`` runs. Call it before the
        gateway starts, or from its event loop."""
        self.register(info)
        self._serving.append((info, handler))
        if self._receiving:
            self._start(info, handler)

    def _start(self, info: WorkerInfo, handler: Handler) -> None:
        self._tasks.append(
            asyncio.get_running_loop().create_task(
                self._work(info, handler), name=f"memory-worker-{info.instance}"
            )
        )

    async def _work(self, info: WorkerInfo, handler: Handler) -> None:
        while True:
            batch = await self.take_lanes(
                info.model, info.version, count=info.max_batch_rows, timeout_s=1.0
            )
            if not batch:
                continue
            try:
                replies = await handler([entry for _, entry in batch])
            except Exception:
                log.exception("memory worker %s: handler failed", info.instance)
                continue
            for (entry_id, _), reply in zip(batch, replies, strict=True):
                self.answer(info.model, info.version, entry_id, reply)

    def _stream(self, model: str, version: int) -> _Stream:
        stream = self._streams.get((model, version))
        if stream is None:
            stream = self._streams[(model, version)] = _Stream()
        return stream

    def _job_stream(self, model: str, version: int) -> _Stream:
        """The version's job stream; it shares the request stream's ``added`` event, so
        a waiting worker wakes for either."""
        lane = self._job_streams.get((model, version))
        if lane is None:
            added = self._stream(model, version).added
            lane = self._job_streams[(model, version)] = _Stream(added=added)
        return lane
