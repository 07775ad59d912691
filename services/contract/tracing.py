"""OpenTelemetry tracing, configured only by the standard ``OTEL_*`` variables; off by
default (docs/observability.md).

``TracingConfig.from_env`` decides at start-up whether a process traces:

- off when ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``;
- on with ``OTEL_TRACES_EXPORTER=otlp`` or ``console``, or (exporter unset) when an OTLP
  endpoint is set (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``);
- otherwise off: nothing of the SDK is imported, ``Tracing.start`` returns None and
  every traced code path is behind one ``is not None`` test.

On, ``Tracing`` owns a ``TracerProvider`` of its own (not the global one, which BentoML
may configure for itself) with a ``BatchSpanProcessor`` (``OTEL_BSP_*``), the OTLP
exporter of ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf``, the default, or
``grpc``; endpoint, headers, timeout and compression from their ``OTEL_*`` variables),
the sampler of ``OTEL_TRACES_SAMPLER`` / ``_ARG`` (default ``parentbased_always_on``),
and the resource of ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` over the
process's defaults (e.g. ``service.name=axon-gateway``). Context crosses processes as
W3C Trace Context (``traceparent`` / ``tracestate``) through the propagators of
``OTEL_PROPAGATORS``: from HTTP headers and gRPC metadata into the gateway, from the
gateway into the stream entry (``protocol.NewEntry.traceparent``), from the entry into
the worker.

Timestamps: spans whose bounds the code measured itself (queue wait from the entry id's
Redis time, ONNX Runtime runs from the executor's clock) are given explicit unix-ns
``start_time`` / ``end_time`` so a span's duration is exactly the measured value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.propagators.textmap import Getter

from services.contract.errors import SettingsError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")

STOP_EXPORT_S = 2.0
"""Longest wait, when a process stops, for its last spans to be exported."""

Exemplar = dict[str, str]
"""Prometheus exemplar labels of a sampled span: ``trace_id`` and ``span_id`` (hex)."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TracingConfig:
    """Whether and how a process exports traces (from ``OTEL_*``; see the module doc)."""

    enabled: bool = False
    exporter: str = "otlp"
    protocol: str = "http/protobuf"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingConfig:
        """Raises ``SettingsError`` naming the variable for an exporter or protocol
        Axon does not ship."""
        if _flag(env.get("OTEL_SDK_DISABLED")):
            return cls(enabled=False)
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter and exporter not in EXPORTERS:
            raise SettingsError(
                f"OTEL_TRACES_EXPORTER={exporter!r}: must be one of {', '.join(EXPORTERS)}"
            )
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if exporter == "none" or (not exporter and not endpoint):
            return cls(enabled=False)
        variable = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        protocol = (env.get(variable) or "http/protobuf").strip().lower()
        if protocol not in PROTOCOLS:
            raise SettingsError(f"{variable}={protocol!r}: must be one of {', '.join(PROTOCOLS)}")
        return cls(enabled=True, exporter=exporter or "otlp", protocol=protocol)


Pairs = Iterable[tuple[Any, Any]]
"""ASGI headers (``[(b"name", b"value"), …]``) or gRPC metadata (``(name, value)``)."""


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class _PairsGetter(Getter[Pairs]):
    """Reads a W3C carrier out of header pairs without building a dict first."""

    def get(self, carrier: Pairs, key: str) -> list[str] | None:
        wanted = key.lower()
        for name, value in carrier:
            if _text(name).lower() == wanted:
                return [_text(value)]
        return None

    def keys(self, carrier: Pairs) -> list[str]:
        return [_text(name) for name, _ in carrier]


class _MappingGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_PAIRS, _MAPPING = _PairsGetter(), _MappingGetter()


class Tracing:
    """A process's tracer and propagation (built by ``start``; see the module doc)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import propagate, trace

        self._provider = provider
        self._propagate = propagate
        self._trace = trace
        self.tracer: Tracer = provider.get_tracer("axon")

    @classmethod
    def start(
        cls,
        config: TracingConfig,
        service_name: str,
        attributes: Mapping[str, str | int] | None = None,
    ) -> Tracing | None:
        """The process's tracing, or None when ``config`` is off (the default).
        ``service_name`` and ``attributes`` are resource defaults that
        ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` override (read from the
        process environment by the SDK, as every ``OTEL_*`` exporter setting)."""
        if not config.enabled:
            return None
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        given = OTELResourceDetector().detect().attributes
        defaults = {"service.name": service_name, **(attributes or {})}
        ours = {k: v for k, v in defaults.items() if k not in given}
        provider = TracerProvider(
            resource=Resource.create().merge(Resource(ours)),
            shutdown_on_exit=False,  # ``shutdown`` is bounded; the SDK's own is not
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(config)))
        return cls(provider)

    # ------------------------------------------------------------------ context

    def extract_headers(self, pairs: Pairs) -> Context:
        """The remote parent named by W3C headers (ASGI headers or gRPC metadata); an
        empty context (a new trace) when there is none or it does not parse."""
        return self._propagate.extract(list(pairs), getter=_PAIRS)

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """The remote parent in ``carrier`` (``traceparent`` / ``tracestate``)."""
        return self._propagate.extract(carrier, getter=_MAPPING)

    def sampled(self, carrier: Mapping[str, str]) -> Context | None:
        """``extract(carrier)`` when it names a sampled remote parent, else None (no
        parent, or the trace is not sampled: nothing of it is to be recorded)."""
        context = self.extract(carrier)
        remote = self._trace.get_current_span(context).get_span_context()
        return context if remote.is_valid and remote.trace_flags.sampled else None

    def inject(self, span: Span) -> dict[str, str]:
        """The W3C carrier that makes ``span`` the parent on the other side."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier

    def in_context(self, span: Span, parent: Context | None = None) -> Context:
        """A context whose current span is ``span``."""
        return self._trace.set_span_in_context(span, parent)

    def shutdown(self, timeout_s: float = STOP_EXPORT_S) -> bool:
        """Export what is buffered and stop the exporter, waiting at most ``timeout_s``
        (a collector that accepts connections and never answers would otherwise hold a
        stopping process for the exporter's timeout times its retries). False when
        spans were left unexported."""
        stopper = threading.Thread(
            target=self._provider.shutdown, name="axon-tracing-stop", daemon=True
        )
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.warning(
                "tracing: buffered spans not exported within %.0f s of stopping "
                "(the OTLP endpoint does not answer); they are dropped",
                timeout_s,
            )
            return False
        return True


def exemplar_of(span: Span) -> Exemplar | None:
    """The exemplar labels of ``span`` when it is sampled (recorded and exported)."""
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def current_exemplar() -> Exemplar | None:
    """``exemplar_of`` the current span (None when none is current)."""
    from opentelemetry import trace

    return exemplar_of(trace.get_current_span())


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, if a valid one is current. For
    log lines; cheap when nothing is traced (a context-variable lookup)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _exporter(config: TracingConfig) -> Any:
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
