"""The OIP gRPC form: ``inference.GRPCInferenceService`` (KServe v2 / Triton
``grpc_service.proto``) and ``grpc.health.v1.Health``, served by the gateway process on
the REST app's event loop, registry, dispatcher and queue (``grpc_server`` starts it).

Same rules as REST: the one validator (``grpc_codec`` → ``check_request``), the request
deadline (the gRPC deadline, capped by ``AXON_MAX_TIMEOUT_MS``; else the model's
default; a ``timeout_ms`` parameter, or Triton's ``timeout`` in µs, may shorten it),
backpressure, API keys (``authorization: Bearer KEY`` or ``x-api-key`` metadata; health
RPCs stay open), request ids (``x-request-id`` metadata, echoed in the trailing
metadata), the routing rule for a ModelInfer without a version (its sticky header read
from the metadata of that name; the version that answered in ``x-axon-model-version``
trailing metadata), and the same metrics with ``protocol="grpc"``.
Every error maps to a gRPC status in ``grpc_code`` from the HTTP status the REST path
would answer (``errors.status_for``); 429 and 503 carry ``retry-after`` trailing metadata.
RPCs this service does not implement (streaming, shared memory, load/unload, trace and
log settings) answer UNIMPLEMENTED. ``ModelConfig`` answers Triton's configuration built
from the metadata (``oip_codec.model_config``), what perf_analyzer reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from services.contract.logs import REQUEST_ID
from services.contract.tracing import exemplar_of
from services.gateway.dispatcher import encode_body
from services.gateway.errors import (
    BacklogFullError,
    BadRequestError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
    client_message,
    status_for,
)
from services.gateway.fields import DEADLINE_PARAMETERS, request_id, timeout_ms
from services.gateway.grpc_codec import (
    config_response,
    infer_response,
    metadata_response,
    parse_model_infer,
    statistics_response,
)
from services.gateway.middleware.auth import key_allowed, presented_key
from services.gateway.oip import EXTENSIONS, __version__
from services.gateway.oip_codec import model_config
from services.gateway.oip_pb import grpc_service_pb2 as pb
from services.gateway.oip_pb import health_pb2
from services.gateway.registry import ModelVersion
from services.gateway.spans import ServerSpan
from services.gateway.state import GatewayState

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""HTTP status → gRPC status: the one mapping (anything else 4xx INVALID_ARGUMENT, 5xx
INTERNAL)."""

CANCELLED = 499
"""``code`` label of an RPC the client cancelled (or whose deadline passed) mid-way."""

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status for an HTTP ``status``."""
    code = GRPC_CODES.get(status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL


@dataclass
class Call:
    """One RPC: its request id and arrival (the deadline counts from it), and the
    labels it leaves for the metrics."""

    endpoint: str
    request_id: str
    arrived: float
    metadata: dict[bytes, bytes]
    """Invocation metadata, lower-case name → value (``_metadata``)."""
    model: str = ""
    version: str = ""
    answered_by: str = ""
    """The model version that answered an inference (``x-axon-model-version``)."""

    def tag(self, mv: ModelVersion) -> None:
        self.model, self.version = mv.name, str(mv.version)


Method = Callable[[Any, grpc.aio.ServicerContext[Any, Any], Call], Awaitable[Message]]


class OipGrpcService:
    """The RPC handlers over one gateway's state (built in the app's lifespan)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._keys = [key.encode() for key in state.settings.api_keys]

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """The generic handlers to add to a ``grpc.aio`` server."""
        unary = self._unary
        inference = {
            "ServerLive": unary("live", self.server_live, pb.ServerLiveRequest, open_=True),
            "ServerReady": unary("ready", self.server_ready, pb.ServerReadyRequest, open_=True),
            "ServerMetadata": unary(
                "server_metadata", self.server_metadata, pb.ServerMetadataRequest
            ),
            "ModelReady": unary("model_ready", self.model_ready, pb.ModelReadyRequest),
            "ModelMetadata": unary("model_metadata", self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": unary("infer", self.model_infer, pb.ModelInferRequest),
            "ModelConfig": unary("model_config", self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": unary("stats", self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": unary(
                "repository_index", self.repository_index, pb.RepositoryIndexRequest
            ),
        }
        health = {
            "Check": unary("health", self.health_check, health_pb2.HealthCheckRequest, open_=True)
        }
        return [
            grpc.method_handlers_generic_handler(SERVICE, inference),
            grpc.method_handlers_generic_handler(HEALTH_SERVICE, health),
        ]

    # ------------------------------------------------------------------ plumbing

    def _unary(
        self, endpoint: str, method: Method, request_type: type[Message], *, open_: bool = False
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``method`` as a unary-unary handler: auth (unless ``open_``), error → status,
        request id, metrics."""
        recorder = self.state.recorder
        retry_after = str(self.state.settings.retry_after_s)
        tracing = self.state.tracing
        service, rpc = _rpc_name(request_type)

        async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            started = time.perf_counter()
            metadata = _metadata(context)
            call = Call(
                endpoint,
                request_id(_text(metadata.get(b"x-request-id"))) or os.urandom(16).hex(),
                time.monotonic(),
                metadata,
            )
            token = REQUEST_ID.set(call.request_id)  # for log lines
            span = None
            if tracing is not None:
                span = ServerSpan(
                    tracing,
                    f"{service}/{rpc}",
                    tracing.extract_headers(metadata.items()),
                    {
                        "rpc.system": "grpc",
                        "rpc.service": service,
                        "rpc.method": rpc,
                        "axon.request_id": call.request_id,
                    },
                )
            status = 200
            # The request id goes back as trailing metadata, sent with the status: an
            # explicit send_initial_metadata costs ~130 µs more per call (measured,
            # docs/decisions.md).
            trailing: tuple[tuple[str, str], ...] = (("x-request-id", call.request_id),)
            try:
                if self.state.draining.is_set() and not open_:
                    # Stopping: refuse here, explicitly, until the server's own stop ends
                    # the connections (a call caught by that stop ends CANCELLED instead).
                    raise UnavailableError(
                        "the gateway is stopping; send the call again (another replica)"
                    )
                if not (open_ or self._authorized(metadata)):
                    raise UnauthorizedError(
                        "missing or invalid API key: send metadata 'authorization: Bearer "
                        "<key>' or 'x-api-key'"
                    )
                response = await method(_parse(request_type, data), context, call)
                if call.answered_by:
                    trailing += (("x-axon-model-version", call.answered_by),)
                context.set_trailing_metadata(trailing)
                return response
            except asyncio.CancelledError:
                status = CANCELLED
                raise
            except Exception as exc:
                status = status_for(exc)
                if status >= 500 and status not in (503, 504):
                    log.error("gRPC %s %s failed", endpoint, call.request_id, exc_info=exc)
                if status in (429, 503):
                    retry = exc.retry_after_s if isinstance(exc, BacklogFullError) else retry_after
                    trailing += (("retry-after", str(retry)),)
                await context.abort(grpc_code(status), client_message(exc), trailing)
                raise AssertionError("unreachable: abort raises") from None
            finally:
                recorder.observe(
                    "grpc",
                    call.model,
                    call.version,
                    endpoint,
                    status,
                    time.perf_counter() - started,
                    None if span is None else exemplar_of(span.span),
                )
                if span is not None:
                    span.finish(status, _span_attributes(call, status))
                REQUEST_ID.reset(token)

        # Parsed in the handler (not by a request_deserializer): a malformed message is
        # then INVALID_ARGUMENT saying so, not UNKNOWN with a traceback in the log.
        return grpc.unary_unary_rpc_method_handler(handle, response_serializer=_serialize)

    def _authorized(self, metadata: dict[bytes, bytes]) -> bool:
        return not self._keys or key_allowed(presented_key(metadata.items()), self._keys)

    # ------------------------------------------------------------------ RPCs

    async def server_live(
        self, request: pb.ServerLiveRequest, context: Any, call: Call
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=not self.state.dead_tasks())

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: Any, call: Call
    ) -> pb.ServerReadyResponse:
        state = self.state
        ok = state.ready and all(
            any(mv.ready for mv in versions) for versions in state.registry.models().values()
        )
        return pb.ServerReadyResponse(ready=ok)

    async def health_check(
        self, request: health_pb2.HealthCheckRequest, context: Any, call: Call
    ) -> health_pb2.HealthCheckResponse:
        """``grpc.health.v1``: the gateway itself (as ``/healthz/ready``) for service ""
        or ``inference.GRPCInferenceService``; Kubernetes' gRPC probe asks this."""
        if request.service not in ("", SERVICE):
            raise NotFoundError(f"service {request.service!r}: only '' and {SERVICE!r} are served")
        serving = health_pb2.HealthCheckResponse.ServingStatus
        return health_pb2.HealthCheckResponse(
            status=serving.SERVING if self.state.ready else serving.NOT_SERVING
        )

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: Any, call: Call
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="axon", version=__version__, extensions=EXTENSIONS)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: Any, call: Call
    ) -> pb.ModelReadyResponse:
        registry = self.state.registry
        mv = registry.lookup(request.name, request.version or None)
        call.tag(mv)
        return pb.ModelReadyResponse(ready=mv.ready and registry.reachable)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any, call: Call
    ) -> pb.ModelMetadataResponse:
        registry = self.state.registry
        mv = registry.lookup(request.name, request.version or None)
        call.tag(mv)
        versions = (
            [str(v.version) for v in registry.models()[mv.name]]
            if not request.version
            else [str(mv.version)]
        )
        return metadata_response(mv.metadata, versions)

    async def model_config(
        self, request: pb.ModelConfigRequest, context: Any, call: Call
    ) -> pb.ModelConfigResponse:
        mv = self.state.registry.lookup(request.name, request.version or None)
        call.tag(mv)
        return config_response(model_config(mv.metadata, self.state.settings.max_rows))

    async def model_infer(
        self,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        call: Call,
    ) -> pb.ModelInferResponse:
        state = self.state
        registry = state.registry
        # A sticky routing rule's header is the metadata of that name.
        mv = state.route(
            request.model_name,
            request.model_version,
            lambda name: _text(call.metadata.get(name.lower().encode())),
        )
        call.tag(mv)
        if not mv.ready or not registry.reachable:
            mv = registry.ready(mv.name, mv.version)  # raises the right 503
        size = request.ByteSize()
        if not state.inflight.try_reserve(size):
            raise UnavailableError(state.inflight.refusal(state.settings.retry_after_s))
        try:
            parsed = parse_model_infer(request, mv.metadata, max_rows=state.settings.max_rows)
            timeout = self._timeout_ms(context, mv, parsed.parameters)
            oip_id, selection = parsed.id, parsed.outputs
            body = encode_body(parsed.inputs, parsed.parameters)
            del parsed
            outputs = await state.infer(
                mv,
                body,
                routed=not request.model_version,
                request_id=call.request_id,
                timeout_ms=timeout,
                arrived=call.arrived,
            )
        finally:
            state.inflight.release(size)
        call.answered_by = str(mv.version)
        return infer_response(mv.name, mv.version, oip_id, outputs, mv.metadata, selection)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Any, call: Call
    ) -> pb.ModelStatisticsResponse:
        registry = self.state.registry
        model = request.name or None
        version = request.version or None
        if model is not None:
            call.tag(registry.lookup(model, version))
        return statistics_response(registry.statistics(model, version))

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Any, call: Call
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for entry in self.state.registry.index(ready_only=request.ready):
            response.models.add(
                name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
            )
        return response

    def _timeout_ms(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        mv: ModelVersion,
        parameters: dict[str, Any],
    ) -> int:
        """The request deadline (ms from arrival): the gRPC deadline when the client set
        one (capped by ``AXON_MAX_TIMEOUT_MS``), else the model's default; a
        ``timeout_ms`` parameter may set it (never past the gRPC deadline)."""
        settings = self.state.settings
        chosen = timeout_ms(
            None,
            parameters,
            default=settings.timeout_for(mv.name),
            maximum=settings.max_timeout_ms,
        )
        remaining = context.time_remaining()
        if remaining is None:
            return chosen
        deadline = max(int(remaining * 1000), 1)
        if DEADLINE_PARAMETERS.isdisjoint(parameters):
            return min(deadline, settings.max_timeout_ms)
        return min(chosen, deadline)


def _rpc_name(request_type: type[Message]) -> tuple[str, str]:
    """(service, method) of the RPC whose request message is ``request_type``."""
    if request_type is health_pb2.HealthCheckRequest:
        return HEALTH_SERVICE, "Check"
    return SERVICE, request_type.DESCRIPTOR.name.removesuffix("Request")


def _span_attributes(call: Call, status: int) -> dict[str, str | int]:
    """The end attributes of an RPC's SERVER span (``rpc.grpc.status_code``, model)."""
    if status < 400:
        code = grpc.StatusCode.OK
    elif status == CANCELLED:
        code = grpc.StatusCode.CANCELLED
    else:
        code = grpc_code(status)
    attributes: dict[str, str | int] = {"rpc.grpc.status_code": code.value[0]}
    if call.model:
        attributes["axon.model"] = call.model
        attributes["axon.version"] = int(call.version or 0)
    return attributes


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[bytes, bytes]:
    """Invocation metadata as lower-case name → value bytes (first value wins)."""
    result: dict[bytes, bytes] = {}
    for item in context.invocation_metadata() or ():
        key, value = item[0], item[1]
        name = key.lower().encode() if isinstance(key, str) else key
        if name not in result:
            result[name] = value.encode() if isinstance(value, str) else value
    return result


def _parse(request_type: type[Message], data: bytes) -> Any:
    """The request message from its wire bytes; 400 (INVALID_ARGUMENT) when they are
    not one."""
    try:
        return request_type.FromString(data)
    except DecodeError:
        name = request_type.DESCRIPTOR.full_name
        raise BadRequestError(f"request: not a valid {name} protobuf message") from None


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
