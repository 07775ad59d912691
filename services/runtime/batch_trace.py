"""The worker's spans of one batch, made only while tracing is on and only for entries
that arrived with a sampled trace context (``StreamEntry.trace_carrier``;
docs/observability.md).

Per traced request, in the request's trace (children of the gateway's ``send`` span):

- ``queue wait``: from the entry's enqueue (its id's Redis time) to its batch's start,
  exactly the wait the worker records (``axon_worker_queue_wait_seconds``);
- ``process {stream}`` (CONSUMER, ``messaging.*``): from the batch's start to its reply
  being sent, linked to the batch span; an error reply marks it as an error.

Per batch, a trace of its own (one batch serves many traces):

- ``batch {stream}``: from the batch's start to its replies being sent, with a span link
  to each traced member's context and ``axon.batch_rows`` / ``axon.batch_requests``;
- ``onnxruntime run`` children (one per shape group run, its rows and outcome);
- ``reply`` (PRODUCER): the one round trip that sends the batch's replies and
  acknowledges its entries.

Times: the worker's clocks are the Redis clock in ms (``redis_ms``: entry ids, the
batch's start) and ``time.perf_counter`` (runs); each is turned into unix ns of this
host (``offset_ms``: Redis' clock minus ours; an anchor pair for perf_counter), so each
duration is exactly the value the worker measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, get_current_span

from services.contract import protocol
from services.contract.tracing import Tracing
from services.runtime.executor import RunRecord

MESSAGING_SYSTEM = "redis"


@dataclass(frozen=True)
class TracedEntry:
    """A batch member that arrived with a trace context."""

    context: Context
    entry_id: str
    request_id: str
    rows: int
    deliveries: int
    stream: str
    """The stream it was read from (the request stream, or the job stream)."""


class BatchTrace:
    """Spans of one batch (see the module doc); ``started_ms`` is the batch's start on
    Redis' clock and ``offset_ms`` Redis' clock minus the host's."""

    def __init__(
        self,
        tracing: Tracing,
        members: Sequence[TracedEntry],
        *,
        stream: str,
        model: str,
        version: int,
        batch_rows: int,
        batch_requests: int,
        started_ms: float,
        offset_ms: float,
    ) -> None:
        tracer = tracing.tracer
        self._tracing = tracing
        self._offset_ms = offset_ms
        self.start_ns = start_ns = self._unix_ns(started_ms)
        labels: dict[str, str | int] = {"axon.model": model, "axon.version": version}
        self.batch = tracer.start_span(
            f"batch {stream}",
            context=Context(),  # a root: its members belong to many traces
            start_time=start_ns,
            links=[Link(get_current_span(m.context).get_span_context()) for m in members],
            attributes={
                **labels,
                "axon.batch_rows": batch_rows,
                "axon.batch_requests": batch_requests,
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.destination.name": stream,
                "messaging.batch.message_count": batch_requests,
            },
        )
        batch_link = [Link(self.batch.get_span_context())]
        self._processes: dict[str, Span] = {}
        for member in members:
            wait = tracer.start_span(
                "queue wait",
                context=member.context,
                start_time=self._unix_ns(protocol.entry_time_ms(member.entry_id)),
                attributes={**labels, "axon.deliveries": member.deliveries},
            )
            wait.end(end_time=start_ns)
            self._processes[member.entry_id] = tracer.start_span(
                f"process {member.stream}",
                context=member.context,
                kind=SpanKind.CONSUMER,
                start_time=start_ns,
                links=batch_link,
                attributes={
                    **labels,
                    "messaging.system": MESSAGING_SYSTEM,
                    "messaging.operation.type": "process",
                    "messaging.destination.name": member.stream,
                    "messaging.message.id": member.entry_id,
                    "messaging.consumer.group.name": protocol.GROUP,
                    "axon.request_id": member.request_id,
                    "axon.request_rows": member.rows,
                    "axon.batch_rows": batch_rows,
                    "axon.deliveries": member.deliveries,
                },
            )
        self._reply: Span | None = None

    def _unix_ns(self, redis_ms: float) -> int:
        return int((redis_ms - self._offset_ms) * 1e6)

    def ran(self, runs: Sequence[RunRecord], anchor_perf: float, anchor_ns: int) -> None:
        """The batch's ONNX Runtime runs (``RunRecord.started`` on ``time.perf_counter``;
        ``anchor_perf`` / ``anchor_ns``: one instant on that clock and in unix ns)."""
        parent = self._tracing.in_context(self.batch)
        for run in runs:
            start = anchor_ns + int((run.started - anchor_perf) * 1e9)
            span = self._tracing.tracer.start_span(
                "onnxruntime run",
                context=parent,
                start_time=start,
                attributes={"axon.batch_rows": run.rows},
            )
            if not run.ok:
                span.set_status(Status(StatusCode.ERROR, "run failed"))
            span.end(end_time=start + int(run.seconds * 1e9))
        self._reply = self._tracing.tracer.start_span(
            "reply",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "send",
                "messaging.batch.message_count": len(self._processes),
            },
        )

    def failed(self, entry_id: str, code: str) -> None:
        """The member queued as ``entry_id`` is answered with error ``code``."""
        span = self._processes.get(entry_id)
        if span is not None:
            span.set_attribute("error.type", code)
            span.set_status(Status(StatusCode.ERROR, code))

    def delivered(self) -> None:
        """The replies were sent (or handed to the outbox's retries): end every span."""
        end = time.time_ns()
        if self._reply is not None:
            self._reply.end(end_time=end)
        for span in self._processes.values():
            span.end(end_time=end)
        self.batch.end(end_time=end)
