"""Shadow traffic: a routing rule's ``shadow`` (``routing_rules.ShadowRule``) copies a
sampled share of the requests the rule routes to a shadow version, compares its reply
with the primary's (``shadow_compare``) and records agreement and latency of both
(``axon_shadow_*`` metrics, ``GET /v1/models/{m}/routing``). The client only ever gets
the primary's reply.

Contracts:

- **The primary never waits for the shadow.** ``Shadows.infer`` starts the copy as a
  task of its own (no await) and awaits only the primary; the copy waits for the
  primary's outcome, never the other way round.
- **Bounded.** At most ``AXON_SHADOW_MAX_INFLIGHT`` copies per gateway process; a
  sampled request over it is not copied (``dropped``). The copy's deadline is its own
  (``AXON_SHADOW_TIMEOUT_MS``). It is queued only while the shadow version's job stream
  holds fewer than ``AXON_SHADOW_BACKLOG_LIMIT`` entries (``refused``).
- **Low priority.** The copy is an async job on the shadow version's job stream
  (``services.contract.shadow_jobs``): its workers take it only for the room their
  batches leave after synchronous requests (why: docs/decisions.md, "Shadow traffic").
  Its stored reply is read back every ``AXON_SHADOW_POLL_MS`` by one poller per
  process (one round trip per shadow version), and deleted.
- **Nothing reaches the client.** Every failure of the copy (the queue refusing or
  down, the shadow's error or deadline, outputs that cannot be compared) is counted by
  outcome and logged at most at debug level; none raises into the request.
- Only the requests the rule routes are copied (unversioned ones, not async jobs), and
  not those the rule sent to the shadow version itself. The sample is an independent
  draw per request (``draw``, injected).

Outcomes (``axon_shadow_requests_total{outcome}``): ``compared``, ``shadow_error`` (the
shadow answered an error), ``timeout`` (no answer within its deadline), ``primary_failed``
(nothing to compare with), ``incomparable``, ``dropped`` (over the in-flight cap),
``refused`` (the shadow's job stream is full), ``unavailable`` (the shadow version has no
live worker, or the queue refused or was down).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.contract.codec import decode_reply
from services.contract.errors import BadEntryError, ErrorCode
from services.contract.jobs import NewJob
from services.contract.protocol import NewEntry, Refused
from services.contract.resilience import Backoff, FailureLog
from services.contract.shadow_jobs import shadow_job_key
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import NotFoundError
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import ModelVersion, Registry
from services.gateway.settings import GatewaySettings
from services.gateway.shadow_compare import Incomparable, compare
from services.gateway.transport import Transport, TransportDown, TransportError

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray[Any, Any]]

COMPARED, SHADOW_ERROR, TIMEOUT, PRIMARY_FAILED = (
    "compared", "shadow_error", "timeout", "primary_failed",
)  # fmt: skip
INCOMPARABLE, DROPPED, REFUSED, UNAVAILABLE = "incomparable", "dropped", "refused", "unavailable"
OUTCOMES = (
    COMPARED, SHADOW_ERROR, TIMEOUT, PRIMARY_FAILED, INCOMPARABLE, DROPPED, REFUSED, UNAVAILABLE,
)  # fmt: skip

LATENCY_WINDOW = 1000
"""Latencies kept per shadow version for the admin API's percentiles (the last N)."""
JOB_TTL_MARGIN_S = 30
"""A shadow job's hash outlives its deadline by this much (a gateway that died leaves
it to expire)."""


@dataclass
class ShadowStats:
    """What one gateway process saw of one model's shadow version since it started (or
    since the rule named another version)."""

    version: int
    outcomes: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    agree_rows: int = 0
    classify_rows: int = 0
    difference_sum: float = 0.0
    primary_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    shadow_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def as_dict(self) -> dict[str, Any]:
        """The admin API's ``shadow.stats``: counts by outcome, agreement and latency
        percentiles (ms) of the last ``LATENCY_WINDOW`` compared requests."""
        compared = self.outcomes[COMPARED]
        return {
            "outcomes": {name: self.outcomes[name] for name in OUTCOMES},
            "compared": compared,
            "rows": self.rows,
            "top1_agreement": (
                round(self.agree_rows / self.classify_rows, 6) if self.classify_rows else None
            ),
            "mean_difference": round(self.difference_sum / compared, 9) if compared else None,
            "latency_ms": {
                "primary": _percentiles(self.primary_s),
                "shadow": _percentiles(self.shadow_s),
            },
        }


def _percentiles(seconds: deque[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    values = np.asarray(seconds) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "p99": round(float(p99), 3), "mean": round(float(values.mean()), 3),
            "count": len(values)}  # fmt: skip


class ShadowCopy:
    """One sampled request's copy; the primary's outcome is given with ``primary``."""

    def __init__(self, mv: ModelVersion, shadow: ModelVersion, started: float) -> None:
        self.mv = mv
        self.shadow = shadow
        self.started = started
        self.primary_outcome: asyncio.Future[tuple[Outputs, float] | None] = (
            asyncio.get_running_loop().create_future()
        )

    def primary(self, outputs: Outputs | None, at: float) -> None:
        """The primary answered ``outputs`` at ``at`` (monotonic s); None: it failed."""
        if not self.primary_outcome.done():
            self.primary_outcome.set_result(None if outputs is None else (outputs, at))


class Shadows:
    """The gateway's shadow copies (see the module docstring): ``infer`` in place of
    ``Dispatcher.infer`` for requests a rule routed; ``stats`` for the admin API."""

    def __init__(
        self,
        transport: Transport,
        registry: Registry,
        dispatcher: Dispatcher,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        *,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._registry = registry
        self._dispatcher = dispatcher
        self._settings = settings
        self._metrics = metrics
        self._draw = draw
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[str, ShadowStats] = {}
        self._waiting: dict[str, tuple[str, int, asyncio.Future[bytes]]] = {}
        """Shadow job key → (model, version, the future its raw reply completes)."""
        self._drop: dict[tuple[str, int], list[str]] = {}
        """Keys given up per (model, version), deleted at the next poll."""
        self._poller: asyncio.Task[None] | None = None
        self._failures = FailureLog(log, "shadow reply poller", time.monotonic)

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def stats(self, model: str) -> dict[str, Any] | None:
        """This process's figures for ``model``'s shadow version, if it had copies."""
        stats = self._stats.get(model)
        return None if stats is None else {"version": stats.version, **stats.as_dict()}

    async def infer(
        self,
        mv: ModelVersion,
        body: bytes,
        *,
        routed: bool,
        request_id: str,
        timeout_ms: int,
        arrived: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """``Dispatcher.infer`` (same arguments, same result and errors); ``routed``:
        the model's rule chose ``mv`` (an unversioned request), so it may be copied."""
        copy = self._sample(mv, body, request_id) if routed else None
        if copy is None:
            return await self._dispatcher.infer(
                mv, body, request_id=request_id, timeout_ms=timeout_ms, arrived=arrived
            )
        try:
            outputs = await self._dispatcher.infer(
                mv, body, request_id=request_id, timeout_ms=timeout_ms, arrived=arrived
            )
        except BaseException:
            copy.primary(None, self._clock())
            raise
        copy.primary(outputs, self._clock())
        return outputs

    def _sample(self, mv: ModelVersion, body: bytes, request_id: str) -> ShadowCopy | None:
        """A started copy of this request, or None (not sampled, or not possible now)."""
        rule = self._registry.rule(mv.name)
        shadow = rule.shadow if rule is not None else None
        if shadow is None or shadow.version == mv.version or self._draw() >= shadow.fraction:
            return None
        try:
            target = self._registry.lookup(mv.name, shadow.version)
        except NotFoundError:  # a rule read from Redis may name a version not known yet
            self._count(mv.name, shadow.version, UNAVAILABLE)
            return None
        if not target.ready or not self._registry.reachable:
            self._count(mv.name, shadow.version, UNAVAILABLE)
            return None
        if len(self._tasks) >= self._settings.shadow_max_inflight:
            self._count(mv.name, shadow.version, DROPPED)
            return None
        copy = ShadowCopy(mv, target, self._clock())
        task = asyncio.get_running_loop().create_task(
            self._run(copy, body, request_id), name=f"axon-shadow-{request_id[:40]}"
        )
        self._tasks.add(task)
        self._metrics.shadow_inflight.set(len(self._tasks))
        task.add_done_callback(self._done)
        return copy

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.shadow_inflight.set(len(self._tasks))

    async def _run(self, copy: ShadowCopy, body: bytes, request_id: str) -> None:
        """The copy's life; it never raises (a bug is logged with its traceback)."""
        model, version = copy.mv.name, copy.shadow.version
        try:
            outcome = await self._shadow(copy, body, request_id)
        except asyncio.CancelledError:  # the gateway is stopping
            raise
        except Exception:
            log.exception("shadow copy of %s to version %d failed", request_id, version)
            outcome = UNAVAILABLE
        self._count(model, version, outcome)

    async def _shadow(self, copy: ShadowCopy, body: bytes, request_id: str) -> str:
        settings = self._settings
        model, version = copy.shadow.name, copy.shadow.version
        timeout_ms = settings.shadow_timeout_ms
        key = shadow_job_key(model, version, secrets.token_hex(16))
        entry = NewEntry(
            request_id, key, int(time.time() * 1000) + timeout_ms, body, budget_ms=timeout_ms
        )
        job = NewJob(key, b"shadow", math.ceil(timeout_ms / 1000) + JOB_TTL_MARGIN_S, entry)
        limit = settings.shadow_backlog_limit
        try:
            answer = await asyncio.wait_for(
                self._transport.submit_job(
                    model, version, job, limit=limit, maxlen=max(limit * 4, 1000),
                    byte_limit=settings.job_backlog_bytes,
                ),
                timeout=timeout_ms / 1000,
            )  # fmt: skip
        except (TransportDown, TransportError, TimeoutError) as exc:
            log.debug("shadow copy of %s not queued: %s", request_id, exc)
            return UNAVAILABLE
        if isinstance(answer, Refused):
            return REFUSED
        future = self._expect(key, model, version)
        left_s = copy.started + timeout_ms / 1000 - self._clock()
        try:
            raw = await asyncio.wait_for(future, timeout=max(left_s, 0.0))
        except TimeoutError:
            self._give_up(key, model, version)
            return TIMEOUT
        except asyncio.CancelledError:
            self._give_up(key, model, version)
            raise
        answered = self._clock()
        try:
            reply = decode_reply(raw)
        except BadEntryError:
            return SHADOW_ERROR
        if not reply.ok:
            late = reply.error is not None and reply.error.code == ErrorCode.DEADLINE_EXCEEDED
            return TIMEOUT if late else SHADOW_ERROR
        primary = await copy.primary_outcome
        if primary is None:
            return PRIMARY_FAILED
        outputs, primary_at = primary
        try:
            result = compare(copy.mv.metadata.task, outputs, reply.outputs or {})
        except Incomparable as exc:
            log.debug("shadow copy of %s: %s", request_id, exc)
            return INCOMPARABLE
        self._record(copy, result, primary_at - copy.started, answered - copy.started)
        return COMPARED

    def _record(self, copy: ShadowCopy, result: Any, primary_s: float, shadow_s: float) -> None:
        model, version = copy.mv.name, copy.shadow.version
        label = str(version)
        metrics = self._metrics
        metrics.shadow_difference.labels(model, label).observe(result.difference)
        metrics.shadow_latency.labels(model, label, "primary").observe(primary_s)
        metrics.shadow_latency.labels(model, label, "shadow").observe(shadow_s)
        stats = self._stats_for(model, version)
        stats.rows += result.rows
        stats.difference_sum += result.difference
        stats.primary_s.append(primary_s)
        stats.shadow_s.append(shadow_s)
        if result.agree is not None:
            stats.agree_rows += result.agree
            stats.classify_rows += result.rows
            if result.agree:
                metrics.shadow_rows.labels(model, label, "agree").inc(result.agree)
            if result.rows - result.agree:
                metrics.shadow_rows.labels(model, label, "disagree").inc(result.rows - result.agree)

    def _count(self, model: str, version: int, outcome: str) -> None:
        self._metrics.shadow_requests.labels(model, str(version), outcome).inc()
        self._stats_for(model, version).outcomes[outcome] += 1

    def _stats_for(self, model: str, version: int) -> ShadowStats:
        stats = self._stats.get(model)
        if stats is None or stats.version != version:
            stats = self._stats[model] = ShadowStats(version)
        return stats

    # ------------------------------------------------------------ reading replies back

    def _expect(self, key: str, model: str, version: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[key] = (model, version, future)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="axon-shadow-poller"
            )
        return future

    def _give_up(self, key: str, model: str, version: int) -> None:
        """Stop waiting for ``key``; its job is deleted at the next poll."""
        if self._waiting.pop(key, None) is not None:
            self._drop.setdefault((model, version), []).append(key)

    async def _poll(self) -> None:
        """Every ``shadow_poll_ms`` while copies wait: one ``collect_jobs`` per shadow
        version. Started by the first wait, ends when none is left; no error ends it
        while one waits (each failure streak is logged; the copies' deadlines bound
        them)."""
        every_s = self._settings.shadow_poll_ms / 1000
        backoff = Backoff(first_s=every_s, longest_s=max(every_s, 1.0))
        pause_s = every_s
        try:
            while self._waiting or self._drop:
                await asyncio.sleep(pause_s)
                groups: dict[tuple[str, int], list[str]] = {}
                for key, (model, version, _) in self._waiting.items():
                    groups.setdefault((model, version), []).append(key)
                targets = set(groups) | set(self._drop)
                calls = [
                    self._collect(t, groups.get(t, []), self._drop.pop(t, [])) for t in targets
                ]
                failed = [r for r in await asyncio.gather(*calls) if r is not None]
                if failed:
                    pause_s = backoff.failure()
                    self._failures.failed(failed[0], retry_in_s=pause_s)
                    if not self._waiting:  # only deletions left: their TTL removes them
                        self._drop.clear()
                elif backoff.failures:
                    backoff.success()
                    self._failures.recovered()
                    pause_s = every_s
        finally:
            self._poller = None

    async def _collect(
        self, target: tuple[str, int], keys: list[str], drop: list[str]
    ) -> Exception | None:
        try:
            found = await self._transport.collect_jobs(keys, drop)
        except Exception as exc:  # retried at the next poll (dropped keys too)
            if drop:
                self._drop.setdefault(target, []).extend(drop)
            return exc
        for key, raw in zip(keys, found, strict=True):
            if raw is None:
                continue
            waiting = self._waiting.pop(key, None)
            if waiting is not None and not waiting[2].done():
                waiting[2].set_result(raw)
        return None

    async def aclose(self) -> None:
        """Cancel the copies in flight and the poller (at shutdown)."""
        tasks = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
