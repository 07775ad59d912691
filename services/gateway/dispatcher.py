"""Send one validated request through the queue (``transport.Transport``) and wait for
its reply, or its deadline."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Gauge, Histogram

from services.contract.codec import Reply, Scalar, encode_request
from services.contract.protocol import NewEntry, Refused, stream_key
from services.contract.tracing import Tracing
from services.gateway.errors import (
    BacklogFullError,
    DeadlineError,
    PayloadTooLargeError,
    UnavailableError,
    WorkerReplyError,
)
from services.gateway.fields import DEADLINE_PARAMETERS
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import ModelVersion, Registry
from services.gateway.settings import GatewaySettings
from services.gateway.spans import QueueTrace
from services.gateway.transport import Transport, TransportDown, TransportError


@dataclass
class Dispatcher:
    """Submit (backlog checked atomically with the add) → await the reply's future,
    bounded by the deadline."""

    transport: Transport
    settings: GatewaySettings
    metrics: GatewayMetrics
    registry: Registry
    tracing: Tracing | None = None
    """Spans of each dispatch (``spans.QueueTrace``) when tracing is on."""

    def __post_init__(self) -> None:
        self._counter = itertools.count(1)
        self._spread = itertools.count()  # round-robin over a model version's partitions
        self._replies = self.transport.replies
        self._children: dict[str, tuple[Gauge, Histogram]] = {}

    def _metrics_for(self, model: str) -> tuple[Gauge, Histogram]:
        children = self._children.get(model)
        if children is None:
            children = (
                self.metrics.inflight.labels(model),
                self.metrics.queue_wait.labels(model),
            )
            self._children[model] = children
        return children

    async def infer(
        self,
        mv: ModelVersion,
        body: bytes,
        *,
        request_id: str,
        timeout_ms: int,
        arrived: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The reply's output tensors for ``body`` (``encode_body``); raises a
        ``GatewayError`` for every failure. Callers encode first and drop their parsed
        request before awaiting this: only the encoded body is held while waiting.

        The deadline is ``timeout_ms`` from ``arrived`` (``time.monotonic()`` when the
        request reached the gateway; now when None) and bounds every wait, the enqueue
        round trip included. Workers get the budget left when the entry is queued.
        """
        if self.tracing is None:
            return await self._infer(mv, body, request_id, timeout_ms, arrived, None)
        now = time.monotonic()
        partition = self._partition(mv)
        trace = QueueTrace(
            self.tracing,
            model=mv.name,
            version=mv.version,
            partition=partition,
            stream=stream_key(mv.name, mv.version, partition),
            arrived=now if arrived is None else arrived,
            now=now,
        )
        try:
            return await self._infer(mv, body, request_id, timeout_ms, arrived, trace, partition)
        except BaseException as exc:
            trace.failed(exc)
            raise

    def _partition(self, mv: ModelVersion) -> int:
        """The stream partition of the next request (round-robin)."""
        partitions = mv.partitions
        return next(self._spread) % partitions if partitions > 1 else 0

    async def _infer(
        self,
        mv: ModelVersion,
        body: bytes,
        request_id: str,
        timeout_ms: int,
        arrived: float | None,
        trace: QueueTrace | None,
        partition: int | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        now = time.monotonic()
        deadline = (arrived if arrived is not None else now) + timeout_ms / 1000
        if deadline <= now:
            raise DeadlineError(_late(timeout_ms, mv.name, "before it could be queued"))
        limit = self.settings.backlog_limit_for(mv.name)
        byte_limit = self.settings.backlog_bytes
        partitions = mv.partitions
        if partition is None:
            partition = self._partition(mv)
        if len(body) > byte_limit:
            raise PayloadTooLargeError(
                f"request encodes to {len(body)} bytes, over the {byte_limit} bytes a model "
                "version may have queued (AXON_BACKLOG_BYTES); send fewer rows per request"
            )
        entry_id = f"{next(self._counter)}:{request_id}"
        # Registered before the XADD is sent: the reply may arrive before we resume.
        future = self._replies.expect(entry_id)
        left_s = deadline - time.monotonic()
        # The backlog limits are the model version's: each partition takes its share.
        share = -(-limit // partitions)
        submitted = self.transport.submit(
            mv.name,
            mv.version,
            NewEntry(
                entry_id,
                self.transport.reply_to(mv.name, mv.version, partition),
                int(time.time() * 1000 + left_s * 1000),
                body,
                budget_ms=max(int(left_s * 1000), 1),
                traceparent=trace.traceparent if trace is not None else "",
                tracestate=trace.tracestate if trace is not None else "",
            ),
            limit=share,
            maxlen=max(share * 4, 1000),
            byte_limit=-(-byte_limit // partitions),
            partition=partition,
        )
        # One timer on the loop for the whole request, not asyncio.wait_for (which wraps
        # the future in callbacks and a timer of its own): at the deadline it fails the
        # submission while Redis has not taken it, else the wait for the reply.
        timer = asyncio.get_running_loop().call_later(
            max(left_s, 0.0), _expire, submitted, future, timeout_ms, mv.name
        )
        try:
            # Never re-sent on a timeout (the XADD may have happened): the client gets
            # 504 and the entry, if it was queued, runs or expires on its own.
            answer = await submitted
        except TransportDown as exc:
            timer.cancel()
            self._replies.forget(entry_id)
            self.registry.mark_down()
            raise UnavailableError(f"{exc}; try again shortly") from None
        except TransportError as exc:
            # The queue answered with an error for this command only (Redis OOM under
            # maxmemory, READONLY during a failover…): this request fails, the others go on.
            timer.cancel()
            self._replies.forget(entry_id)
            raise UnavailableError(
                f"{exc.backend} refused to queue the request ({exc.detail}); try again shortly"
            ) from None
        except BaseException:
            timer.cancel()
            self._replies.forget(entry_id)
            raise
        if trace is not None:
            trace.sent(answer if isinstance(answer, str) else None, _refusal(answer))
        if isinstance(answer, Refused):
            timer.cancel()
            self._replies.forget(entry_id)
            queued = (
                f"{answer.backlog} requests queued (limit {limit})"
                if answer.queued_bytes is None
                else f"{answer.queued_bytes} bytes of requests queued (limit {byte_limit}, "
                "AXON_BACKLOG_BYTES)"
            )
            raise BacklogFullError(
                f"model {mv.name!r} version {mv.version} has {queued}; retry after "
                f"{self.settings.retry_after_s}s",
                self.settings.retry_after_s,
            )
        inflight, queue_wait = self._metrics_for(mv.name)
        inflight.inc()
        try:
            reply = await future
        finally:
            timer.cancel()
            inflight.dec()
            self._replies.forget(entry_id)
        elapsed = time.monotonic() - now
        if trace is None:
            queue_wait.observe(elapsed)
        else:
            trace.replied(elapsed)
            queue_wait.observe(elapsed, trace.exemplar)
        if not reply.ok:
            error = reply.error
            code, message = (error.code, error.message) if error else ("internal", "unknown")
            raise WorkerReplyError(code, message)
        return reply.outputs or {}


def encode_body(
    inputs: Mapping[str, np.ndarray[Any, Any]], parameters: Mapping[str, Scalar]
) -> bytes:
    """The stream entry body of a request (``codec.encode_request``); the deadline
    parameters (``timeout_ms``, Triton's ``timeout``) are not passed on (the entry
    carries the budget)."""
    if not DEADLINE_PARAMETERS.isdisjoint(parameters):
        parameters = {k: v for k, v in parameters.items() if k not in DEADLINE_PARAMETERS}
    return encode_request(inputs, parameters)


def _refusal(answer: str | Refused) -> str | None:
    """``error.type`` of a refused enqueue (None: queued)."""
    return "backlog_full" if isinstance(answer, Refused) else None


def _late(timeout_ms: int, model: str, when: str) -> str:
    return f"deadline of {timeout_ms} ms (model {model!r}) passed {when}"


def _expire(
    submitted: asyncio.Future[str | Refused],
    future: asyncio.Future[Reply],
    timeout_ms: int,
    model: str,
) -> None:
    """The request's deadline: fail its submission if the queue has not answered it yet
    (the enqueuer skips a future that is done), else its wait for the reply."""
    if not submitted.done():
        submitted.set_exception(
            DeadlineError(_late(timeout_ms, model, "while Redis was taking it (Redis is slow)"))
        )
        return
    if not future.done():
        future.set_exception(
            DeadlineError(
                f"no reply within the deadline of {timeout_ms} ms (model {model!r}); "
                "a worker never computes a request past its deadline"
            )
        )
