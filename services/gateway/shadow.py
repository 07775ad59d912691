"""Shadow traffic: a routing rule's ``shadow`` (``routing_rules.ShadowRule``) copies a
sampled share of the requests the rule routes to a shadow version, compares its reply
with the primary's (``shadow_compare``) and records agreement and latency of both
(``axon_shadow_*`` metrics, ``GET /v1/models/{m}/routing``). The client only ever gets
the primary's reply.

Contracts:

- **The primary never waits for the shadow.** ``Shadows.infer`` only registers the
  copy (no await, no Redis call) and awaits the primary; the copy is completed by
  whichever of the primary's outcome and the shadow's reply arrives last.
- **Bounded.** At most ``AXON_SHADOW_MAX_INFLIGHT`` copies per gateway process; a
  sampled request over it is not copied (``dropped``). The copy's deadline is its own
  (``AXON_SHADOW_TIMEOUT_MS``). It is queued only while the shadow version's job stream
  holds fewer than ``AXON_SHADOW_BACKLOG_LIMIT`` entries (``refused``).
- **Low priority.** The copy is an async job on the shadow version's job stream
  (``services.contract.shadow_jobs``): its workers take it only for the room their
  batches leave after synchronous requests (why: docs/decisions.md, "Shadow traffic").
  One poller per process, every ``AXON_SHADOW_POLL_MS``, queues the copies registered
  since its last round (one script call per shadow version) and reads the stored
  replies of the queued ones back (another, which deletes them); it also ends copies
  past their deadline (``timeout``). So a copy costs no task, timer or round trip of
  its own.
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

from services.contract.codec import Reply, decode_reply
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
from services.gateway.shadow_compare import Comparison, Incomparable, compare
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


_PENDING: Any = object()
"""``ShadowCopy.primary`` until the primary's outcome is known."""


@dataclass(eq=False)
class ShadowCopy:
    """One sampled request's copy and what is known of it so far."""

    mv: ModelVersion
    """The primary version."""
    shadow: ModelVersion
    key: str
    """Its job key (``shadow_jobs.shadow_job_key``)."""
    job: NewJob
    started: float
    deadline: float
    """``started`` + the shadow's timeout (monotonic s)."""
    queued: bool = False
    """Its job is in the job stream (so its key is deleted when it is given up)."""
    primary: Any = _PENDING
    """The primary's outputs, None when it failed, ``_PENDING`` until known."""
    primary_at: float = 0.0
    reply: Reply | None = None
    answered_at: float = 0.0
    done: bool = False


class Shadows:
    """The gateway's shadow copies (see the module docstring): ``infer`` in place of
    ``Dispatcher.infer``; ``stats`` for the admin API; ``aclose`` at shutdown."""

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
        self._copies: dict[str, ShadowCopy] = {}
        """Copies in flight by job key (queued or about to be)."""
        self._unsent: dict[tuple[str, int], list[ShadowCopy]] = {}
        """Copies registered since the poller's last round, by shadow (model, version)."""
        self._drop: dict[tuple[str, int], list[str]] = {}
        """Job keys given up per shadow (model, version), deleted at the next poll."""
        self._stats: dict[str, ShadowStats] = {}
        self._metric_children: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._failures = FailureLog(log, "shadow copies", time.monotonic)

    @property
    def inflight(self) -> int:
        return len(self._copies)

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
            self._primary(copy, None)
            raise
        self._primary(copy, outputs)
        return outputs

    # ------------------------------------------------------------------ the copy's life

    def _sample(self, mv: ModelVersion, body: bytes, request_id: str) -> ShadowCopy | None:
        """A registered copy of this request, or None (not sampled, or not possible)."""
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
        if len(self._copies) >= self._settings.shadow_max_inflight:
            self._count(mv.name, shadow.version, DROPPED)
            return None
        timeout_ms = self._settings.shadow_timeout_ms
        key = shadow_job_key(target.name, target.version, secrets.token_hex(16))
        entry = NewEntry(
            request_id, key, int(time.time() * 1000) + timeout_ms, body, budget_ms=timeout_ms
        )
        job = NewJob(key, b"shadow", math.ceil(timeout_ms / 1000) + JOB_TTL_MARGIN_S, entry)
        now = self._clock()
        copy = ShadowCopy(mv, target, key, job, now, now + timeout_ms / 1000)
        self._copies[key] = copy
        self._unsent.setdefault((target.name, target.version), []).append(copy)
        self._metrics.shadow_inflight.set(len(self._copies))
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="axon-shadow-poller"
            )
        return copy

    def _primary(self, copy: ShadowCopy, outputs: Outputs | None) -> None:
        copy.primary, copy.primary_at = outputs, self._clock()
        self._advance(copy)

    def _advance(self, copy: ShadowCopy) -> None:
        """End ``copy`` once its outcome is known (see the module docstring)."""
        if copy.done:
            return
        if copy.primary is None:  # nothing to compare with: stop waiting for the shadow
            self._finish(copy, PRIMARY_FAILED)
            return
        reply = copy.reply
        if reply is None:
            return
        if not reply.ok:
            late = reply.error is not None and reply.error.code == ErrorCode.DEADLINE_EXCEEDED
            self._finish(copy, TIMEOUT if late else SHADOW_ERROR)
            return
        if copy.primary is _PENDING:
            return
        try:
            result = compare(copy.mv.metadata.task, copy.primary, reply.outputs or {})
        except Incomparable as exc:
            log.debug("shadow copy %s: %s", copy.key, exc)
            self._finish(copy, INCOMPARABLE)
            return
        self._record(copy, result)
        self._finish(copy, COMPARED)

    def _finish(self, copy: ShadowCopy, outcome: str) -> None:
        copy.done = True
        copy.primary = None  # the outputs are not kept past the comparison
        copy.reply = None
        self._copies.pop(copy.key, None)
        if copy.queued:  # its answer may still come: delete the job, so it is stored nowhere
            self._drop.setdefault((copy.shadow.name, copy.shadow.version), []).append(copy.key)
        self._metrics.shadow_inflight.set(len(self._copies))
        self._count(copy.mv.name, copy.shadow.version, outcome)

    def _record(self, copy: ShadowCopy, result: Comparison) -> None:
        primary_s = copy.primary_at - copy.started
        shadow_s = copy.answered_at - copy.started
        model, version = copy.mv.name, copy.shadow.version
        difference, primary, shadow, agree, disagree = self._children(model, version)
        difference.observe(result.difference)
        primary.observe(primary_s)
        shadow.observe(shadow_s)
        stats = self._stats_for(model, version)
        stats.rows += result.rows
        stats.difference_sum += result.difference
        stats.primary_s.append(primary_s)
        stats.shadow_s.append(shadow_s)
        if result.agree is not None:
            stats.agree_rows += result.agree
            stats.classify_rows += result.rows
            if result.agree:
                agree.inc(result.agree)
            if result.rows - result.agree:
                disagree.inc(result.rows - result.agree)

    def _children(self, model: str, version: int) -> tuple[Any, ...]:
        """The labelled metric children of a shadow version (looked up once)."""
        key = (model, version)
        found = self._metric_children.get(key)
        if found is None:
            label, m = str(version), self._metrics
            found = self._metric_children[key] = (
                m.shadow_difference.labels(model, label),
                m.shadow_latency.labels(model, label, "primary"),
                m.shadow_latency.labels(model, label, "shadow"),
                m.shadow_rows.labels(model, label, "agree"),
                m.shadow_rows.labels(model, label, "disagree"),
            )
        return found

    def _count(self, model: str, version: int, outcome: str) -> None:
        self._metrics.shadow_requests.labels(model, str(version), outcome).inc()
        self._stats_for(model, version).outcomes[outcome] += 1

    def _stats_for(self, model: str, version: int) -> ShadowStats:
        stats = self._stats.get(model)
        if stats is None or stats.version != version:
            stats = self._stats[model] = ShadowStats(version)
        return stats

    # ------------------------------------------------------------ queueing, reading back

    async def _send(self, target: tuple[str, int], copies: list[ShadowCopy]) -> Exception | None:
        """Queue ``copies`` (of one shadow version): one ``submit_jobs``; a copy the
        queue refused ends ``refused``, all end ``unavailable`` when it failed."""
        copies = [c for c in copies if not c.done]
        if not copies:
            return None
        limit = self._settings.shadow_backlog_limit
        try:
            answers = await self._transport.submit_jobs(
                target[0], target[1], [c.job for c in copies], limit=limit,
                maxlen=max(limit * 4, 1000), byte_limit=self._settings.job_backlog_bytes,
            )  # fmt: skip
        except Exception as exc:  # some may be queued: their jobs expire with their TTL
            if not isinstance(exc, TransportDown | TransportError):
                log.exception("shadow copies of %s:%d not queued", *target)
            for copy in copies:
                if not copy.done:
                    self._finish(copy, UNAVAILABLE)
            return exc
        for copy, answer in zip(copies, answers, strict=True):
            if copy.done:  # ended meanwhile (the primary failed): its job goes too
                if isinstance(answer, str):
                    self._drop.setdefault(target, []).append(copy.key)
            elif isinstance(answer, Refused):
                self._finish(copy, REFUSED)
            else:
                copy.queued = True
        return None

    async def _poll(self) -> None:
        """Every ``shadow_poll_ms`` while copies are in flight (or keys are to be
        deleted): end the copies past their deadline, then per shadow version, at once,
        one ``submit_jobs`` of the copies registered since the last round and one
        ``collect_jobs`` of those queued (and the keys given up). So the round trips
        per second do not grow with the request rate; a copy waits up to one interval
        to be queued and one to be read back (in the shadow's measured latency).
        Started by the first copy, ends when none is left; no error ends it (each
        failure streak is logged; the copies' deadlines bound them)."""
        every_s = self._settings.shadow_poll_ms / 1000
        backoff = Backoff(first_s=every_s, longest_s=max(every_s, 1.0))
        pause_s = every_s
        try:
            while self._copies or self._drop:
                await asyncio.sleep(pause_s)
                now = self._clock()
                unsent, self._unsent = self._unsent, {}
                groups: dict[tuple[str, int], list[ShadowCopy]] = {}
                for copy in list(self._copies.values()):
                    if copy.deadline <= now:
                        self._finish(copy, TIMEOUT)
                    elif copy.queued and copy.reply is None:
                        groups.setdefault((copy.shadow.name, copy.shadow.version), []).append(copy)
                drops, self._drop = self._drop, {}
                calls = [self._send(t, copies) for t, copies in unsent.items()]
                calls += [
                    self._collect(t, groups.get(t, []), drops.get(t, []))
                    for t in set(groups) | set(drops)
                ]
                failed = [r for r in await asyncio.gather(*calls) if r is not None]
                if failed:
                    pause_s = backoff.failure()
                    self._failures.failed(failed[0], retry_in_s=pause_s)
                    if not self._copies:  # only deletions left: their TTL removes them
                        self._drop.clear()
                elif backoff.failures:
                    backoff.success()
                    self._failures.recovered()
                    pause_s = every_s
        finally:
            self._poller = None

    async def _collect(
        self, target: tuple[str, int], copies: list[ShadowCopy], drop: list[str]
    ) -> Exception | None:
        try:
            found = await self._transport.collect_jobs([c.key for c in copies], drop)
        except Exception as exc:  # retried at the next poll (the deletions too)
            if drop:
                self._drop.setdefault(target, []).extend(drop)
            return exc
        now = self._clock()
        for copy, raw in zip(copies, found, strict=True):
            if raw is None or copy.done:
                continue
            copy.queued = False  # collected: its job is gone
            try:
                copy.reply = decode_reply(raw)
            except BadEntryError:
                self._finish(copy, SHADOW_ERROR)
                continue
            copy.answered_at = now
            self._advance(copy)
        return None

    async def aclose(self) -> None:
        """Stop the poller (at shutdown); copies in flight are left to their jobs' TTL."""
        tasks = [t for t in (self._poller,) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
