"""Tracing configuration from the standard OTEL_* variables (off by default), the
propagation helpers, and the JSON log lines (one object per line with the request and
trace ids)."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.contract import logs
from services.contract import tracing as tracing_module
from services.contract.errors import SettingsError
from services.contract.protocol import StreamEntry
from services.contract.tracing import Tracing, TracingConfig, exemplar_of
from services.gateway.app import create_app
from services.gateway.middleware.tracing import TracingMiddleware
from services.gateway.settings import GatewaySettings
from services.runtime.settings import WorkerSettings
from tests.support.otlp import otlp_receiver

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, TracingConfig(enabled=False)),
        (ENDPOINT, TracingConfig(enabled=True)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, TracingConfig(True)),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, TracingConfig(enabled=False)),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, TracingConfig(enabled=False)),
        ({"OTEL_TRACES_EXPORTER": "console"}, TracingConfig(True, exporter="console")),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, TracingConfig(enabled=True)),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, TracingConfig(True, protocol="grpc")),
        (
            {
                **ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            TracingConfig(enabled=True),
        ),
    ],
)
def test_tracing_is_on_only_when_otel_variables_say_so(
    env: dict[str, str], expected: TracingConfig
) -> None:
    assert TracingConfig.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_bad_otel_value_stops_start_up_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        TracingConfig.from_env(env)
    with pytest.raises(SettingsError, match=variable):
        GatewaySettings.from_env({"AXON_REDIS_URL": "redis://127.0.0.1:6379/0", **env})
    with pytest.raises(SettingsError, match=variable):
        WorkerSettings.from_env({"AXON_REDIS_URL": "redis://127.0.0.1:6379/0", **env}, "classifier")


def test_off_by_default_nothing_is_traced() -> None:
    settings = GatewaySettings.from_env({"AXON_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings.tracing == TracingConfig(enabled=False)
    assert Tracing.start(settings.tracing, "axon-gateway") is None
    app = create_app(settings)
    assert not any(m.cls is TracingMiddleware for m in app.user_middleware)


def test_context_round_trips_through_headers_and_a_stream_entry() -> None:
    tracing = Tracing(TracerProvider())
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = tracing.extract_headers([(b"host", b"x"), (b"TraceParent", parent.encode())])
    remote = trace.get_current_span(context).get_span_context()
    assert format(remote.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    span = tracing.tracer.start_span("send", context=context)
    carrier = tracing.inject(span)
    assert carrier["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    entry = StreamEntry("1-0", {b"traceparent": carrier["traceparent"].encode()})
    assert entry.trace_carrier == {"traceparent": carrier["traceparent"]}
    child = trace.get_current_span(tracing.extract(entry.trace_carrier)).get_span_context()
    assert child.span_id == span.get_span_context().span_id
    assert exemplar_of(span) == {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": format(span.get_span_context().span_id, "016x"),
    }
    # No traceparent (or an empty one, from an untraced request of a traced call): none.
    assert StreamEntry("1-0", {b"traceparent": b""}).trace_carrier is None
    assert StreamEntry("1-0", {}).trace_carrier is None
    # A malformed header starts a new trace rather than failing the request.
    bad = tracing.extract_headers([(b"traceparent", b"00-zz-yy-01")])
    assert not trace.get_current_span(bad).get_span_context().is_valid


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logs.JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_log_lines_are_json_with_request_and_trace_ids() -> None:
    handler = _Collect()
    logger = logging.getLogger("tests.json-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("plain %s", "line")
        token = logs.REQUEST_ID.set("rid-1")
        span = TracerProvider().get_tracer("t").start_span("request")
        attached = otel_context.attach(trace.set_span_in_context(span))
        try:
            logger.warning('quote " and\nnewline')
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            otel_context.detach(attached)
            logs.REQUEST_ID.reset(token)
        logger.info("explicit", extra={"request_id": "rid-2", "trace_id": "ab" * 16})
    finally:
        logger.removeHandler(handler)
    assert all("\n" not in line for line in handler.lines)
    first, second, third, fourth = (json.loads(line) for line in handler.lines)
    assert first["message"] == "plain line" and first["level"] == "INFO"
    assert "request_id" not in first and "trace_id" not in first
    assert first["time"].endswith("Z") and first["logger"] == "tests.json-logs"
    ids = span.get_span_context()
    assert second["message"] == 'quote " and\nnewline' and second["request_id"] == "rid-1"
    assert second["trace_id"] == format(ids.trace_id, "032x")
    assert second["span_id"] == format(ids.span_id, "016x")
    assert third["level"] == "ERROR" and "ValueError: boom" in third["exception"]
    assert fourth["request_id"] == "rid-2" and fourth["trace_id"] == "ab" * 16


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"AXON_LOG_FORMAT": "xml"}, "AXON_LOG_FORMAT"), ({"AXON_LOG_LEVEL": "LOUD"}, "LOG_LEVEL")],
)
def test_bad_log_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        logs.log_settings(env)
    assert logs.log_settings({}) == ("INFO", "json")
    assert logs.log_settings({"AXON_LOG_FORMAT": "text", "AXON_LOG_LEVEL": "debug"}) == (
        "DEBUG",
        "text",
    )


@pytest.mark.parametrize(
    ("config", "module"),
    [
        (TracingConfig(True), "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        (
            TracingConfig(True, protocol="grpc"),
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ),
        (TracingConfig(True, exporter="console"), "opentelemetry.sdk.trace.export"),
    ],
)
def test_the_exporter_follows_the_protocol(config: TracingConfig, module: str) -> None:
    exporter = tracing_module._exporter(config)
    try:
        assert type(exporter).__module__ == module
    finally:
        exporter.shutdown()


def test_spans_reach_an_otlp_endpoint_with_the_process_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        tracing = Tracing.start(TracingConfig(True), "axon-test", {"axon.model": "m"})
        assert tracing is not None
        tracing.tracer.start_span("x").end()
        assert tracing.shutdown(timeout_s=10)  # exported what was buffered
        (span,) = receiver.snapshot()
    assert span.name == "x" and span.service == "axon-test"


def test_otel_service_name_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "my-gateway")
        tracing = Tracing.start(TracingConfig(True), "axon-gateway")
        assert tracing is not None
        tracing.tracer.start_span("y").end()
        assert tracing.shutdown(timeout_s=10)
        (span,) = receiver.snapshot()
    assert span.service == "my-gateway"
