"""The asyncio worker loop: pull batches from the model version's stream, run them,
answer, acknowledge; recover entries of dead workers; keep a heartbeat.

One loop iteration (``_step``):

1. every ``claim_interval_ms``: XAUTOCLAIM entries idle longer than ``claim_timeout_ms``
   (their worker died); an entry delivered more than ``max_deliveries`` times goes to
   the dead-letter stream with an error reply;
2. ``batching.collate`` the pending entries: expired ones are answered with a deadline
   error, a ready batch is run (one ONNX Runtime run per shape group) and answered with
   one atomic script call (RPUSH replies + EXPIRE + XACK + XDEL; ``protocol.complete``,
   sent by the ``outbox.Outbox``) that goes out with the step's next read, in one
   write on ``FastRedis`` (``_read``);
3. then XREADGROUP as many entries as the batch has room (rows): blocking (up to
   ``read_block_ms``) while nothing is pending; without blocking, then sleeping on the
   worker's own timer (at most 1 ms at a time, until the same step's collation is due),
   while a batch is filling.

A request whose run fails even on its own is answered ``inference_failed`` at once
(the others of its batch get their results). A worker that dies mid-batch leaves its
entries pending: another replica claims them, up to ``max_deliveries`` times. Replies
computed while Redis is away are kept and re-sent until it is back
(``deadline_exceeded`` for an entry whose deadline passed meanwhile; ``outbox``).
``stop()`` makes the loop stop reading, run and acknowledge everything already read
(re-sending for at most ``outbox.STOP_DELIVERY_S``), and delete the heartbeat key. Every
count goes through one ``recorder.Recorder`` (heartbeat stats and Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import get_current_span

from services.contract import jobs, protocol
from services.contract.codec import Reply, decode_request
from services.contract.errors import AxonError, ErrorCode
from services.contract.fast_redis import FastRedis
from services.contract.inputs import check_request
from services.contract.protocol import Outgoing, RedisClient, StreamEntry
from services.contract.resilience import Backoff, FailureLog, is_redis_error
from services.contract.tracing import Tracing
from services.runtime.batch_trace import BatchTrace, TracedEntry
from services.runtime.batching import Collation, collate
from services.runtime.executor import BatchExecutor
from services.runtime.gpu import gpu_memory_used_bytes
from services.runtime.metrics import WorkerMetrics
from services.runtime.outbox import Answer, Outbox
from services.runtime.prepare import Tensors, prepare_inputs
from services.runtime.recorder import Recorder
from services.runtime.repository import ModelRepository
from services.runtime.session import CPU, ModelSession, SessionOptions, create_session
from services.runtime.settings import WorkerSettings
from services.runtime.stats import WorkerStats

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Returns the current unix time in milliseconds."""

MAX_ERROR_CHARS = 500
"""Longest error message a reply carries (ONNX Runtime's can be pages long)."""

JOB_POLL_MS = 20.0
"""After a read of the job stream found nothing, how long a filling batch does not look
there again (its blocking reads watch both streams): an empty job lane costs the
request path at most one extra round trip per this many ms."""

INLINE_RUN_MAX_S = 0.001
"""A batch whose expected run time (moving average per row × rows) is at most this runs
on the event loop itself; longer ones run in the worker's ONNX Runtime thread so that
heartbeats (and the BentoML HTTP API) keep being served (why: docs/decisions.md, "Worker
hot path: measured choices")."""


def _size(entry: StreamEntry) -> int:
    body = entry.body
    return len(body) if body is not None else 0


def wall_clock_ms() -> float:
    return time.time() * 1000.0


def load_model(settings: WorkerSettings) -> ModelSession:
    """Load, validate and warm up the configured model version (latest when unset)."""
    files = ModelRepository(settings.models_dir).load(settings.model, settings.model_version)
    session = create_session(
        files,
        SessionOptions(
            provider=settings.provider,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        ),
    )
    if settings.warmup:
        session.warm_up()
    return session


def _log_ids(pending: PendingEntry) -> dict[str, str]:
    """Log record fields of a request: its id and, when traced, its trace id
    (``logs.JsonFormatter``)."""
    ids = {"request_id": pending.request_id}
    if pending.trace is not None:
        context = get_current_span(pending.trace.context).get_span_context()
        ids["trace_id"] = format(context.trace_id, "032x")
        ids["span_id"] = format(context.span_id, "016x")
    return ids


def start_tracing(settings: WorkerSettings, service_name: str) -> Tracing | None:
    """The worker process's tracing (None when off): ``service_name`` and the model are
    resource defaults (``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` win)."""
    return Tracing.start(
        settings.tracing,
        service_name,
        {"service.instance.id": settings.instance, "axon.model": settings.model},
    )


@dataclass
class PendingEntry:
    """A decoded, validated entry waiting for its batch (``batching.Schedulable``)."""

    entry: StreamEntry
    request_id: str
    reply_to: str
    inputs: Tensors
    rows: int
    arrived_ms: float
    deadline_ms: float | None
    trace: TracedEntry | None = None
    """Its trace context, when tracing is on and it came with one (``batch_trace``)."""
    job: bool = False
    """It came from the job stream (an async job or a shadow copy): low priority, at
    most ``job_batch_rows`` of a batch."""


@dataclass
class _Rider:
    """A stream read sent in one write with the outbox's completion script
    (``Worker._read``): its command and, once ``answered``, its reply (or error)."""

    command: list[Any]
    answered: bool = False
    response: Any = None


def _is_job(pending: PendingEntry) -> bool:
    return pending.job


class Worker:
    """Serves one stream of a model version (``protocol.stream_key``; partition
    ``partition`` of ``settings.partitions``) as consumer ``instance``: the settings'
    instance for partition 0, ``{instance}.p{partition}`` for the others (each consumer
    name is a heartbeat, so a dead process's entries are claimed on every partition)."""

    def __init__(
        self,
        redis: RedisClient,
        session: ModelSession,
        settings: WorkerSettings,
        *,
        metrics: WorkerMetrics | None = None,
        clock: Clock = wall_clock_ms,
        partition: int = 0,
        tracing: Tracing | None = None,
    ) -> None:
        self.redis = redis
        self.tracing = tracing
        self.session = session
        self.settings = settings
        self.metadata = session.metadata
        self.model = self.metadata.name
        self.version = self.metadata.version
        if not 0 <= partition < settings.partitions:
            raise ValueError(f"partition {partition} of {settings.partitions}")
        self.partition = partition
        self.stream = protocol.stream_key(self.model, self.version, partition)
        # The job lane (``Prefer: respond-async``) lives in partition 0's slot only.
        self.job_stream = jobs.job_stream_key(self.model, self.version) if partition == 0 else None
        self._job_poll_after_ms = 0.0
        self._job_rows = min(settings.job_batch_rows, settings.max_batch_rows)
        """The most job rows one batch carries (``AXON_JOB_BATCH_ROWS``)."""
        self.instance = settings.instance if partition == 0 else f"{settings.instance}.p{partition}"
        self.stats = WorkerStats()
        self.recorder = Recorder(
            self.stats,
            metrics,
            model=self.model,
            version=self.version,
            provider=session.provider,
        )
        self._clock = clock
        self._executor = BatchExecutor(session.run)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{self.model}")
        # Moving average of run time per row; until a run was measured (inf), runs go to
        # the thread.
        self._seconds_per_row = math.inf
        self._pending: list[PendingEntry] = []
        self._stop = asyncio.Event()
        self._outbox = Outbox(
            self._complete,
            now_ms=self._now,
            on_expired=self.recorder.expired,
            stopping=self._stop.is_set,
        )
        self._registered = asyncio.Event()
        self._closed = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None
        """The gauge sample started by the last heartbeat (one at a time)."""
        self._resend = False
        """The last send (``_read``) failed: the next step retries it first."""
        self._rider: _Rider | None = None
        """The read the outbox's next completion call takes along (``_read``)."""
        self._unsent_traces: list[BatchTrace] = []
        """Traces of batches whose answers are in the outbox, not yet sent."""
        self._next_claim_ms = 0.0
        # Redis' clock minus ours (ms), measured at each heartbeat: deadlines are on
        # Redis' clock (``StreamEntry.deadline_ms``), so host clock skew cannot matter.
        self._offset_ms = 0.0
        self._started_ms = int(clock())

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """True while the worker is registered and reading."""
        return self._registered.is_set() and not self._stop.is_set()

    async def wait_registered(self) -> None:
        await self._registered.wait()

    def stop(self) -> None:
        """Ask for a graceful stop: no more reads; pending entries are run and acknowledged."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        """False once the heartbeat task ended while the worker was not stopping (a bug:
        it survives every error); the owner's liveness probe reports it so that the
        orchestrator restarts the process."""
        task = self._heartbeat_task
        return task is None or not task.done() or self._closed.is_set()

    async def run(self) -> None:
        """Register (retried until Redis answers), serve until ``stop()``; then drain and
        deregister. No error ends the loop: each is logged and retried with a backoff."""
        try:
            if not await self._register():
                return
            log.info(
                "worker %s serving %s (provider %s)",
                self.instance,
                self.stream,
                self.session.provider,
            )
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_loop(), name=f"heartbeat-{self.instance}"
            )
            await self._serve()
            await self._drain()
        finally:
            # Cooperative stop: cancelling a task inside a redis-py call is not reliable
            # (seen: the cancellation swallowed and the heartbeat loop going on).
            self._closed.set()
            if self._heartbeat_task is not None:
                await asyncio.wait([self._heartbeat_task])  # never raises its outcome
            if self._gauges is not None:
                await asyncio.wait([self._gauges])  # bounded: nvidia-smi's 5 s timeout
            if self._registered.is_set():
                with contextlib.suppress(Exception):
                    await protocol.deregister(self.redis, self.model, self.version, self.instance)
            self._registered.clear()
            self._pool.shutdown(wait=True)
            log.info("worker %s stopped", self.instance)

    async def _register(self) -> bool:
        """Create the consumer group and publish the first heartbeat, retrying (with a
        backoff and a log line) until Redis accepts both. False if stopped first."""
        backoff = Backoff(first_s=0.1, longest_s=5.0)
        failures = FailureLog(log, f"worker {self.instance} registration", time.monotonic)
        while not self._stop.is_set():
            try:
                await self._ensure_groups()
                await self._heartbeat()
            except Exception as exc:  # every class: unreachable, OOM, READONLY, NOPERM…
                pause = backoff.failure()
                failures.failed(exc, retry_in_s=pause)
                await self._pause_or_stop(pause)
                continue
            failures.recovered()
            self._registered.set()
            return True
        return False

    async def _serve(self) -> None:
        """The read loop: ``_step`` until ``stop()``; every error is logged and retried."""
        backoff = Backoff(first_s=0.05, longest_s=2.0)
        failures = FailureLog(log, f"worker {self.instance} read loop", time.monotonic)
        needs_group = False
        while not self._stop.is_set():
            try:
                if needs_group:  # the stream or its group vanished (Redis restarted empty)
                    await self._ensure_groups()
                    needs_group = False
                await self._step()
            except Exception as exc:
                needs_group = needs_group or "NOGROUP" in str(exc)
                if not is_redis_error(exc):
                    log.exception("worker %s: unexpected error in the read loop", self.instance)
                pause = backoff.failure()
                failures.failed(exc, retry_in_s=pause)
                await self._pause_or_stop(pause)
                continue
            if backoff.failures:
                backoff.success()
                failures.recovered()

    async def _ensure_groups(self) -> None:
        """The consumer group of the request stream (and of the job stream)."""
        await protocol.ensure_group(self.redis, self.stream)
        if self.job_stream is not None:
            await protocol.ensure_group(self.redis, self.job_stream)

    async def _pause_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    # ------------------------------------------------------------------ loop

    async def _step(self) -> None:
        settings = self.settings
        now = self._now()
        if now >= self._next_claim_ms:
            self._next_claim_ms = now + settings.claim_interval_ms
            await self._claim(self.stream, job=False)
            if self.job_stream is not None:
                await self._claim(self.job_stream, job=True)
        if self._resend:
            # The last send failed: retry it (with a backoff while Redis is away) before
            # reading anything more, so that answers never pile up behind new work.
            self._resend = False
            await self._deliver()
        plan = await self._run_ready(flush=False)
        if plan.batch and not len(self._outbox):
            return
        # Every read below carries the answers the outbox holds (``_read``).
        room = max(1, settings.max_batch_rows - sum(p.rows for p in self._pending))
        if self._pending:
            # A batch is filling (or, right after a batch, more entries pend): take
            # whatever is queued without blocking, then wait on our own timer. (A short
            # XREADGROUP BLOCK would not do: Redis checks blocked clients' timeouts only
            # every 1/hz s, 100 ms by default; docs/decisions.md.)
            wait_ms = 0.0 if plan.batch else self._wait_ms(plan)
            found = await self._read([self.stream], count=room, block_ms=None)
            entries = found.get(self.stream, [])
            await self._admit(entries)
            taken = await self._fill_from_jobs()
            if not entries and not taken and wait_ms > 0:
                await self._pause_or_stop(min(wait_ms, 1.0) / 1000.0)
            return
        block_ms = max(
            1, math.ceil(min(float(settings.read_block_ms), self._next_claim_ms - self._now()))
        )
        if self.job_stream is None:
            found = await self._read([self.stream], count=room, block_ms=block_ms)
            await self._admit(found.get(self.stream, []))
            return
        # Idle: wait on both streams at once. Requests are admitted first; when both
        # had entries, this read may take up to one batch of jobs beyond the room, and
        # more jobs than ``_job_rows``: they pend for the next batches (``collate``
        # keeps each batch's job rows within it, requests read later pass them).
        found = await self._read([self.stream, self.job_stream], count=room, block_ms=block_ms)
        await self._admit(found.get(self.stream, []))
        await self._admit(found.get(self.job_stream, []), job=True)

    async def _read(
        self, streams: list[str], *, count: int, block_ms: int | None
    ) -> dict[str, list[StreamEntry]]:
        """XREADGROUP ``streams`` (``protocol.read_command``) with the outbox's answers
        sent first: on ``FastRedis`` the completion script and the read go out in one
        write, one round trip (``protocol.complete_and_read``), else one after the other.
        What was read is returned even when sending failed; the answers then stay in the
        outbox and the next step sends them alone, retrying while Redis is away
        (``_deliver``), before it reads again."""
        if len(self._outbox):
            rider = None
            if isinstance(self.redis, FastRedis):
                command = protocol.read_command(
                    streams, self.instance, count=count, block_ms=block_ms
                )
                rider = self._rider = _Rider(command)
            try:
                await self._outbox.flush()
            except Exception:
                self._resend = True  # ``_deliver`` raises it again unless Redis is away
                if rider is None or not rider.answered:
                    raise
            finally:
                self._rider = None
                self._end_traces()
            if rider is not None and rider.answered:
                if isinstance(rider.response, Exception):
                    raise rider.response
                return protocol.read_answer(rider.response)
        return await jobs.read_lanes(
            self.redis, streams, self.instance, count=count, block_ms=block_ms
        )

    async def _deliver(self) -> None:
        """Send the outbox's answers now (``Outbox.deliver``: retried while Redis is away)."""
        try:
            await self._outbox.deliver()
        finally:
            self._end_traces()

    def _end_traces(self) -> None:
        """The batches whose answers were just sent (or handed to the retries) end their
        spans (``BatchTrace.delivered``)."""
        traces, self._unsent_traces = self._unsent_traces, []
        for trace in traces:
            trace.delivered()

    async def _fill_from_jobs(self) -> bool:
        """The job lane: read job entries for the room the pending batch has left after
        the request stream (none when full, or when the job stream was just found
        empty, ``JOB_POLL_MS``). Every job read this way fits the next batch, so a job
        never waits in this worker behind requests (it would pass the claim timeout)."""
        if self.job_stream is None or self._now() < self._job_poll_after_ms:
            return False
        room = min(
            self.settings.max_batch_rows - sum(p.rows for p in self._pending),
            self._job_rows - sum(p.rows for p in self._pending if p.job),
        )
        if room <= 0:
            return False
        entries = await protocol.read_entries(
            self.redis, self.job_stream, self.instance, count=room, block_ms=None
        )
        if not entries:
            self._job_poll_after_ms = self._now() + JOB_POLL_MS
            return False
        await self._admit(entries, job=True)
        return True

    async def _claim(self, stream: str, *, job: bool) -> None:
        """Claim ``stream``'s entries (the request stream, or the job stream: ``job``) of
        workers whose heartbeat is gone at once, and of live but stuck workers after the
        claim timeout."""
        settings = self.settings
        orphans = await protocol.claim_orphans(
            self.redis,
            stream,
            self.instance,
            model=self.model,
            version=self.version,
            min_idle_ms=min(settings.heartbeat_ttl_ms, settings.claim_timeout_ms),
            count=settings.max_batch_rows,
        )
        claimed = await protocol.claim_stale(
            self.redis,
            stream,
            self.instance,
            min_idle_ms=settings.claim_timeout_ms,
            count=max(settings.max_batch_rows - len(orphans), 1),
        )
        await self._admit([*orphans, *claimed], claimed=True, job=job)

    def _collate(self, now_ms: float, *, flush: bool) -> Collation[PendingEntry]:
        return collate(
            self._pending,
            max_batch_rows=self.settings.max_batch_rows,
            max_queue_delay_ms=self.settings.max_queue_delay_ms,
            now_ms=now_ms,
            flush=flush,
            low=_is_job,
            max_low_rows=self._job_rows,
        )

    async def _run_ready(self, *, flush: bool) -> Collation[PendingEntry]:
        """Collate: answer expired entries, run the batch if it is ready (``plan.batch``
        is then not empty). Returns the collation, which the step reuses."""
        plan = self._collate(self._now(), flush=flush)
        self._pending = plan.remaining
        for pending in plan.expired:
            self._answer_error(
                pending,
                ErrorCode.DEADLINE_EXCEEDED,
                "deadline passed before the request was computed",
            )
            self.recorder.expired()
        if plan.batch:
            await self._run_batch(plan.batch)
        return plan

    def _wait_ms(self, plan: Collation[PendingEntry]) -> float:
        """How long more entries may be awaited now for ``plan``, a collation of this step
        whose batch was not ready (``self._pending`` is its ``remaining``): exactly what
        collating again now would say. Until ``plan.due_ms`` nothing can have changed
        but the clock (``batching``), so no second collation is needed; once it passed
        (the step's own round trips took that long), collate again: an entry may have
        expired meanwhile and no longer count towards the due time."""
        now = self._now()
        wait_ms = plan.due_ms - now
        if wait_ms > 0:
            return wait_ms
        return self._collate(now, flush=False).wait_ms

    async def _drain(self) -> None:
        """Run and answer everything already read (graceful stop; sending is retried for
        at most ``outbox.STOP_DELIVERY_S`` while Redis is unavailable)."""
        while self._pending:
            await self._run_ready(flush=True)
        await self._deliver()

    # ------------------------------------------------------------------ entries

    async def _admit(
        self, entries: Sequence[StreamEntry], *, claimed: bool = False, job: bool = False
    ) -> None:
        """Decode and validate entries (``job``: of the job stream); bad ones are
        answered at once, good ones pend."""
        now = self._now()
        for entry in entries:
            if claimed:
                self.recorder.redelivered()
            request_id, reply_to = entry.request_id, entry.reply_to
            if not request_id or not reply_to:
                await self._dead_letter(
                    entry, "malformed entry: 'id' and 'reply' are required", None, job=job
                )
                continue
            if jobs.is_job_key(reply_to, self.model, self.version) != job or (
                not job and jobs.is_job_key(reply_to)
            ):
                # A job's answer goes to its job key, a request's to a reply list; the
                # completion script of each stream writes only its own kind.
                await self._dead_letter(
                    entry,
                    "malformed entry: 'reply' is not a reply key of its stream",
                    None,
                    job=job,
                )
                continue
            if entry.deliveries > self.settings.max_deliveries:
                message = (
                    f"request failed on {entry.deliveries - 1} deliveries; moved to "
                    f"{protocol.dlq_key(self.model, self.version, self.partition)}"
                )
                await self._dead_letter(
                    entry,
                    f"delivered {entry.deliveries} times (max {self.settings.max_deliveries})",
                    Outgoing(reply_to, Reply.failure(request_id, ErrorCode.DEAD_LETTER, message)),
                    job=job,
                )
                continue
            try:
                if entry.body is None:
                    raise AxonError("entry has no 'body'")
                request = decode_request(entry.body)
                rows = check_request(self.metadata, request.inputs, request.parameters)
                inputs = prepare_inputs(self.metadata, request.inputs, request.parameters)
            except AxonError as exc:
                code = exc.code if exc.code != ErrorCode.INTERNAL else ErrorCode.BAD_ENTRY
                self._outbox.add(
                    Answer(
                        Outgoing(reply_to, Reply.failure(request_id, code, str(exc))),
                        entry.entry_id,
                        entry.deadline_ms,
                        _size(entry),
                    )
                )
                self._count_failure(entry, code)
                continue
            self._pending.append(
                PendingEntry(
                    entry=entry,
                    request_id=request_id,
                    reply_to=reply_to,
                    inputs=inputs,
                    rows=rows,
                    arrived_ms=now,
                    deadline_ms=entry.deadline_ms,
                    trace=None
                    if self.tracing is None
                    else self._traced(entry, request_id, rows, job=job),
                    job=job,
                )
            )

    def _traced(
        self, entry: StreamEntry, request_id: str, rows: int, *, job: bool
    ) -> TracedEntry | None:
        """The entry's trace context (tracing is on), if it came with one."""
        carrier = entry.trace_carrier
        if carrier is None or self.tracing is None:
            return None
        context = self.tracing.sampled(carrier)
        if context is None:  # the request's trace is not sampled: no spans here either
            return None
        stream = self.job_stream if job and self.job_stream is not None else self.stream
        return TracedEntry(
            context,
            entry.entry_id,
            request_id,
            rows,
            entry.deliveries,
            stream,
        )

    def _answer_error(self, pending: PendingEntry, code: ErrorCode, message: str) -> None:
        reply = Reply.failure(pending.request_id, code, message)
        self._outbox.add(
            Answer(
                Outgoing(pending.reply_to, reply),
                pending.entry.entry_id,
                pending.deadline_ms,
                _size(pending.entry),
            )
        )
        self._count_failure(pending.entry, code)

    def _count_failure(self, entry: StreamEntry, code: str) -> None:
        self.recorder.failed(code, self._age_ns(entry))

    def _age_ns(self, entry: StreamEntry) -> int:
        return int((self._now() - protocol.entry_time_ms(entry.entry_id)) * 1e6)

    async def _dead_letter(
        self, entry: StreamEntry, reason: str, reply: Outgoing | None, *, job: bool = False
    ) -> None:
        stream = self.job_stream if job else self.stream
        log.warning(
            "dead-lettering %s of %s: %s",
            entry.entry_id,
            stream,
            reason,
            extra={"request_id": entry.request_id or ""},
        )
        if job:
            await jobs.dead_letter_job(
                self.redis,
                self.model,
                self.version,
                entry,
                reason=reason,
                consumer=self.instance,
                reply=reply,
                maxlen=self.settings.dlq_maxlen,
            )
        else:
            await protocol.dead_letter(
                self.redis,
                self.model,
                self.version,
                entry,
                reason=reason,
                consumer=self.instance,
                reply=reply,
                reply_ttl_s=self.settings.reply_ttl_s,
                maxlen=self.settings.dlq_maxlen,
                partition=self.partition,
            )
        self.recorder.dead_lettered()
        if reply is not None:
            self._count_failure(entry, ErrorCode.DEAD_LETTER)

    def _complete(
        self, answers: Sequence[tuple[Outgoing, str]], sizes: Sequence[int]
    ) -> Awaitable[int]:
        """The outbox's one round trip (``outbox.Complete``): ``protocol.complete``; a
        batch with jobs also ``jobs.complete_jobs`` for those (concurrently)."""
        rider, self._rider = self._rider, None
        if self.job_stream is None or not any(jobs.is_job_key(o.reply_to) for o, _ in answers):
            if rider is not None:
                return self._complete_riding(answers, sizes, rider)
            return protocol.complete(
                self.redis, self.stream, answers, reply_ttl_s=self.settings.reply_ttl_s, sizes=sizes
            )
        return self._complete_lanes(answers, sizes)

    async def _complete_riding(
        self, answers: Sequence[tuple[Outgoing, str]], sizes: Sequence[int], rider: _Rider
    ) -> int:
        """``protocol.complete_and_read``: the answers, then ``rider``'s read, one write."""
        assert isinstance(self.redis, FastRedis)
        answered, rider.response = await protocol.complete_and_read(
            self.redis,
            self.stream,
            answers,
            reply_ttl_s=self.settings.reply_ttl_s,
            sizes=sizes,
            read=rider.command,
        )
        rider.answered = True
        if isinstance(answered, Exception):
            raise answered
        return answered

    async def _complete_lanes(
        self, answers: Sequence[tuple[Outgoing, str]], sizes: Sequence[int]
    ) -> int:
        lanes: tuple[list[tuple[Outgoing, str]], list[tuple[Outgoing, str]]] = ([], [])
        lane_sizes: tuple[list[int], list[int]] = ([], [])
        for answer, size in zip(answers, sizes, strict=True):
            lane = int(jobs.is_job_key(answer[0].reply_to))
            lanes[lane].append(answer)
            lane_sizes[lane].append(size)
        calls = [jobs.complete_jobs(self.redis, self.model, self.version, lanes[1], lane_sizes[1])]
        if lanes[0]:
            calls.append(
                protocol.complete(
                    self.redis,
                    self.stream,
                    lanes[0],
                    reply_ttl_s=self.settings.reply_ttl_s,
                    sizes=lane_sizes[0],
                )
            )
        return sum(await asyncio.gather(*calls))

    # ------------------------------------------------------------------ execution

    async def _run_batch(self, batch: list[PendingEntry]) -> None:
        """Run ``batch``; its replies and the outbox go out in one round trip."""
        started = self._now()
        self.recorder.queued(
            [int((started - protocol.entry_time_ms(p.entry.entry_id)) * 1e6) for p in batch]
        )
        requests = [p.inputs for p in batch]
        rows = sum(p.rows for p in batch)
        trace = None if self.tracing is None else self._batch_trace(batch, rows, started)
        anchor = (time.perf_counter(), time.time_ns()) if trace is not None else (0.0, 0)
        if self._seconds_per_row * rows <= INLINE_RUN_MAX_S:
            # A tiny run costs less than the executor hop's two thread switches
            # (docs/decisions.md); the loop is blocked only that long.
            result = self._executor.execute(requests)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, self._executor.execute, requests)
        seconds = sum(run.seconds for run in result.runs)
        if rows and result.runs:
            per_row = seconds / rows
            previous = self._seconds_per_row
            self._seconds_per_row = (
                per_row if math.isinf(previous) else 0.8 * previous + 0.2 * per_row
            )
        for run in result.runs:
            self.recorder.ran(run.rows, run.seconds)
        self.recorder.batch_done(self._now())
        if trace is not None:
            trace.ran(result.runs, *anchor)
        answered_rows = 0
        answered_ages: list[int] = []
        for pending, outcome in zip(batch, result.outcomes, strict=True):
            if outcome.outputs is None:
                # The run failed for this request even on its own (the executor re-runs a
                # failed batch request by request): answer it now. Left pending, it would
                # be re-run until max_deliveries while its client waits for the deadline.
                log.warning(
                    "request %s failed: %s",
                    pending.request_id,
                    outcome.error,
                    extra=_log_ids(pending),
                )
                message = str(outcome.error or "model run failed")
                if len(message) > MAX_ERROR_CHARS:
                    message = message[:MAX_ERROR_CHARS] + "…"
                self._answer_error(pending, ErrorCode.INFERENCE_FAILED, message)
                if trace is not None:
                    trace.failed(pending.entry.entry_id, ErrorCode.INFERENCE_FAILED)
                continue
            self._outbox.add(
                Answer(
                    Outgoing(pending.reply_to, Reply.success(pending.request_id, outcome.outputs)),
                    pending.entry.entry_id,
                    pending.deadline_ms,
                    _size(pending.entry),
                )
            )
            answered_rows += pending.rows
            answered_ages.append(self._age_ns(pending.entry))
        self.recorder.succeeded(answered_rows, answered_ages)
        # Sent with the step's next read, in one write (``_read``; measured:
        # docs/decisions.md, "One write for a batch's answers and the next read").
        # Computed replies are never thrown away because Redis is briefly away.
        if trace is not None:
            self._unsent_traces.append(trace)

    def _batch_trace(
        self, batch: Sequence[PendingEntry], rows: int, started_ms: float
    ) -> BatchTrace | None:
        """The batch's spans (tracing is on), when one of its entries is traced."""
        members = [p.trace for p in batch if p.trace is not None]
        if not members or self.tracing is None:
            return None
        return BatchTrace(
            self.tracing,
            members,
            stream=self.stream,
            model=self.model,
            version=self.version,
            batch_rows=rows,
            batch_requests=len(batch),
            started_ms=started_ms,
            offset_ms=self._offset_ms,
        )

    # ------------------------------------------------------------------ heartbeat

    def info(self) -> protocol.WorkerInfo:
        """What this worker publishes in its heartbeat."""
        return protocol.WorkerInfo(
            instance=self.instance,
            model=self.model,
            version=self.version,
            provider=self.session.provider,
            max_batch_rows=self.settings.max_batch_rows,
            metadata=self.metadata.raw,
            stats=self.stats.as_dict(),
            started_at_ms=self._started_ms,
            updated_at_ms=int(self._now()),
            pid=os.getpid(),
            host=socket.gethostname(),
            partitions=self.settings.partitions,
            partition=self.partition,
        )

    def _now(self) -> float:
        """Now, in unix ms on Redis' clock (as of the last measurement)."""
        return self._clock() + self._offset_ms

    async def _sync_clock(self) -> None:
        """Measure the offset of Redis' clock (``TIME`` of the node holding the stream) to
        ours, at mid round trip."""
        before = self._clock()
        server_s = await protocol.server_time(self.redis, self.stream)
        after = self._clock()
        self._offset_ms = server_s * 1000.0 - (before + after) / 2

    async def _heartbeat(self) -> None:
        await self._sync_clock()
        await protocol.publish_heartbeat(
            self.redis, self.info(), ttl_ms=self.settings.heartbeat_ttl_ms
        )
        if self.recorder.samples_gauges and (self._gauges is None or self._gauges.done()):
            # Off the heartbeat's path: nvidia-smi may take seconds on a loaded node (up
            # to its 5 s timeout), longer than the TTL left after an interval.
            self._gauges = asyncio.create_task(
                self._sample_gauges(), name=f"gauges-{self.instance}"
            )

    async def _sample_gauges(self) -> None:
        """Backlog and (off CPU) GPU memory gauges; a failure is logged at debug level
        and tried again at the next heartbeat."""
        try:
            self.recorder.backlog(
                await protocol.backlog(self.redis, self.model, self.version, self.partition)
            )
            if self.session.provider != CPU:
                used = await asyncio.to_thread(gpu_memory_used_bytes)
                if used is not None:
                    self.recorder.gpu_memory(used)
        except Exception as exc:
            log.debug("worker %s: gauges not sampled (%s)", self.instance, exc)

    async def _heartbeat_loop(self) -> None:
        """Refresh the heartbeat every interval until ``run`` sets ``_closed``; a failed
        refresh (any error) is logged and tried again at the next interval."""
        interval = self.settings.heartbeat_interval_ms / 1000.0
        failures = FailureLog(log, f"worker {self.instance} heartbeat", time.monotonic)
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=interval)
            if self._closed.is_set():
                return
            try:
                await self._heartbeat()
            except Exception as exc:
                if not is_redis_error(exc):
                    log.exception("worker %s: unexpected error in the heartbeat", self.instance)
                failures.failed(exc, retry_in_s=interval)
            else:
                failures.recovered()
