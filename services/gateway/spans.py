"""The gateway's spans, made only while tracing is on (``services.contract.tracing``;
docs/observability.md).

Per request, in one trace (the client's, when it sent ``traceparent``):

- ``ServerSpan``: the HTTP request (``{method} {route}``, kind SERVER, ``http.*``,
  ``url.*``) or the gRPC call (``{service}/{method}``, ``rpc.*``), current while the
  request is handled, so the spans below are its children;
- ``QueueTrace`` (the dispatcher's part):
  - ``validate``: from the request's arrival to its entry body being ready (body read,
    parse, validation, encoding);
  - ``queue``: from the enqueue to the worker's reply arriving here; its duration is the
    request's ``axon_queue_wait_seconds`` observation, which carries its trace id as an
    exemplar;
  - ``send {stream}`` (PRODUCER, ``messaging.*``), child of ``queue``: the XADD round
    trip. Its context is what the stream entry carries (``traceparent``), so the
    worker's spans are its children.

An async job (``Prefer: respond-async``) has the SERVER span and a ``send`` span for
its job stream (``start_send``); the worker's spans join the same trace when it runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span

from services.contract.tracing import Exemplar, Tracing, exemplar_of

MESSAGING_SYSTEM = "redis"
"""``messaging.system`` of the request streams (Redis Streams)."""


class ServerSpan:
    """A request's SERVER span, made the current span until ``finish``."""

    def __init__(
        self, tracing: Tracing, name: str, parent: Context, attributes: Mapping[str, Any]
    ) -> None:
        self.span = tracing.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self._token = otel_context.attach(tracing.in_context(self.span, parent))

    def finish(
        self,
        status: int,
        attributes: Mapping[str, Any],
        *,
        name: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        """End the span: ``status`` is the HTTP status (for gRPC, the one its code maps
        from); 5xx marks the span as an error (``error.type``: the status, or the
        exception's class for one that escaped)."""
        span = self.span
        try:
            if name is not None:
                span.update_name(name)
            span.set_attributes(attributes)
            if error is not None and not isinstance(error, Exception):  # cancelled
                span.set_attribute("error.type", type(error).__name__)
            elif status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        finally:
            otel_context.detach(self._token)


def http_attributes(scope: Mapping[str, Any]) -> dict[str, Any]:
    """``http.*`` / ``url.*`` / ``server.*`` / ``client.*`` attributes of an ASGI
    request scope (OTel HTTP semantic conventions)."""
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")
            break
    return attributes


class QueueTrace:
    """The dispatcher's spans of one request (see the module doc). ``arrived`` and
    ``now`` are ``time.monotonic()`` values: the request's arrival and the dispatch's
    start; every bound after is given as seconds since ``now``, so span durations are
    exactly the values the dispatcher measures."""

    def __init__(
        self,
        tracing: Tracing,
        *,
        model: str,
        version: int,
        partition: int,
        stream: str,
        arrived: float,
        now: float,
    ) -> None:
        self._start_ns = start_ns = time.time_ns()
        self.queue: Span | None = None
        self._send: Span | None = None
        parent = get_current_span()
        if not parent.is_recording():
            # Not sampled (or no request span): no spans of ours; the entry carries the
            # parent's context (its "not sampled" flag), so the worker records none either.
            self.carrier = tracing.inject(parent) if parent.get_span_context().is_valid else {}
            return
        tracer = tracing.tracer
        labels: dict[str, str | int] = {"axon.model": model, "axon.version": version}
        validate = tracer.start_span(
            "validate",
            start_time=start_ns - max(int((now - arrived) * 1e9), 0),
            attributes=labels,
        )
        validate.end(end_time=start_ns)
        queue = tracer.start_span(
            "queue", start_time=start_ns, attributes={**labels, "axon.partition": partition}
        )
        send = start_send(tracing, tracing.in_context(queue), stream, model, version, start_ns)
        self.queue, self._send = queue, send
        self.carrier = tracing.inject(send)
        """``traceparent`` / ``tracestate`` for the stream entry."""

    @property
    def traceparent(self) -> str:
        return self.carrier.get("traceparent", "")

    @property
    def tracestate(self) -> str:
        return self.carrier.get("tracestate", "")

    @property
    def exemplar(self) -> Exemplar | None:
        """Exemplar labels for the ``axon_queue_wait_seconds`` observation."""
        return None if self.queue is None else exemplar_of(self.queue)

    def sent(self, entry_id: str | None, error: str | None = None) -> None:
        """The XADD round trip ended: queued as ``entry_id``, or refused / failed
        (``error``: the ``error.type``)."""
        if self._send is not None:
            end_send(self._send, entry_id, error)

    def replied(self, elapsed_s: float) -> None:
        """The reply arrived ``elapsed_s`` after the dispatch started (the value
        observed in ``axon_queue_wait_seconds``)."""
        if self.queue is not None:
            self.queue.end(end_time=self._start_ns + int(elapsed_s * 1e9))

    def failed(self, error: BaseException) -> None:
        """The dispatch ended without a reply, or with an error reply."""
        for span in (self._send, self.queue):
            if span is not None and span.is_recording():
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
                span.end()


def start_send(
    tracing: Tracing,
    parent: Context | None,
    stream: str,
    model: str,
    version: int,
    start_ns: int | None = None,
) -> Span:
    """The PRODUCER span of one XADD to ``stream`` (a request stream or a job stream);
    its context is what the stream entry carries. ``parent`` None: the current span."""
    return tracing.tracer.start_span(
        f"send {stream}",
        context=parent,
        kind=SpanKind.PRODUCER,
        start_time=start_ns,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "xadd",
            "messaging.destination.name": stream,
            "axon.model": model,
            "axon.version": version,
        },
    )


def end_send(span: Span, entry_id: str | None, error: str | None = None) -> None:
    """End a ``start_send`` span: queued as ``entry_id``, or refused / failed
    (``error``: the ``error.type``). Does nothing to an ended span."""
    if not span.is_recording():
        return
    if entry_id is not None:
        span.set_attribute("messaging.message.id", entry_id)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
