"""The gateway's per-process state (built in the lifespan) and small request helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request

from services.contract.codec import Scalar
from services.contract.tracing import Tracing
from services.gateway import fields
from services.gateway.capture import Capturer
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import BadRequestError
from services.gateway.fields import timeout_ms
from services.gateway.metrics import GatewayMetrics, RequestRecorder
from services.gateway.middleware.inflight_bytes import ByteBudget
from services.gateway.oip_binary import HEADER_LENGTH, split_body
from services.gateway.registry import ModelVersion, Registry
from services.gateway.settings import GatewaySettings
from services.gateway.shadow import Shadows
from services.gateway.transport import Transport

if TYPE_CHECKING:
    from services.gateway.console.assets import ConsoleFiles
    from services.gateway.docs_ui import SwaggerFiles


@dataclass
class GatewayState:
    settings: GatewaySettings
    transport: Transport
    registry: Registry
    dispatcher: Dispatcher
    metrics: GatewayMetrics
    recorder: RequestRecorder
    """Counts answered requests of both protocols (``axon_requests_total``…)."""
    inflight: ByteBudget
    """Request bytes held at once, HTTP and gRPC together (``AXON_MAX_INFLIGHT_BYTES``)."""
    docs: SwaggerFiles
    """Swagger UI's files for ``/docs``, read at start-up (``docs_ui``)."""
    console: ConsoleFiles
    """The web console's files for ``/ui``, read at start-up (``console.assets``)."""
    shadows: Shadows | None = None
    """Shadow copies of routing rules' ``shadow`` (``services.gateway.shadow``); None:
    requests go to the dispatcher alone."""
    capture: Capturer | None = None
    """Samples answered requests for ``axon replay`` (``services.gateway.capture``); None
    or disabled: nothing is captured."""
    tracing: Tracing | None = None
    """The process's tracing when ``OTEL_*`` turn it on (``services.contract.tracing``)."""
    image_pool: ThreadPoolExecutor | None = None
    """Threads that decode and encode images (``AXON_IMAGE_THREADS``; None = the loop's
    default executor)."""
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the gateway begins to stop (``app.begin_drain``, the lifespan's end)."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    """The loop the state lives on (built in the lifespan)."""
    tasks: tuple[asyncio.Task[None], ...] = ()
    """Long-lived background tasks; each runs until shutdown (``dead_tasks``)."""

    def dead_tasks(self) -> list[str]:
        """Names of background tasks that have ended (none should before shutdown)."""
        return [task.get_name() for task in self.tasks if task.done()]

    def route(
        self, model: str, version: str | int | None, header: Callable[[str], str | None]
    ) -> ModelVersion:
        """The version a request goes to: ``version`` exactly when it names one (404 if
        unknown); else (None or "") the model's routing rule (``Registry.route``), else
        the highest ready version, counted in ``axon_routed_total`` when a rule decided.
        ``header(name)``: the request's header (or gRPC metadata) value, for a sticky
        rule. Readiness is not checked (``registry.ready`` does)."""
        if version is not None and version != "":
            return self.registry.lookup(model, version)
        mv, reason = self.registry.route(model, header)
        if reason is not None:
            self.metrics.routed.labels(mv.name, str(mv.version), reason).inc()
        return mv

    async def infer(
        self,
        mv: ModelVersion,
        body: bytes,
        *,
        routed: bool,
        request_id: str,
        timeout_ms: int,
        arrived: float | None = None,
    ) -> dict[str, Any]:
        """``Dispatcher.infer``, with a shadow copy when ``routed`` (the request named
        no version) and the model's rule samples it (``Shadows.infer``), and a capture
        of the answered request when capture is on (``Capturer.record``)."""
        capture = self.capture if self.capture is not None and self.capture.enabled else None
        started = time.monotonic() if capture is not None else 0.0
        if self.shadows is None:
            outputs = await self.dispatcher.infer(
                mv, body, request_id=request_id, timeout_ms=timeout_ms, arrived=arrived
            )
        else:
            outputs = await self.shadows.infer(
                mv, body, routed=routed, request_id=request_id, timeout_ms=timeout_ms,
                arrived=arrived,
            )  # fmt: skip
        if capture is not None:
            capture.record(mv, body, request_id, outputs, time.monotonic() - started)
        return outputs

    @property
    def ready(self) -> bool:
        """The gateway itself can serve: the queue answers and replies can arrive."""
        return self.registry.reachable and self.transport.healthy


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def tag(request: Request, endpoint: str, mv: ModelVersion | None = None) -> None:
    """Labels for the metrics middleware: endpoint, and model/version once known."""
    request.state.endpoint = endpoint
    if mv is not None:
        request.state.model = mv.name
        request.state.version = str(mv.version)


MODEL_VERSION_HEADER = "X-Axon-Model-Version"
"""Response header of every inference response: the version that answered."""


def version_header(mv: ModelVersion) -> dict[str, str]:
    return {MODEL_VERSION_HEADER: str(mv.version)}


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


def header(request: Request, name: bytes) -> str | None:
    """The request's first ``name`` header (``name`` lower-case), else None
    (``fields.header``: most headers the infer path asks for are absent)."""
    value = fields.header(request.scope, name)
    return None if value is None else value.decode("latin-1")


async def read_body(request: Request) -> bytes:
    """The whole body, read from the ASGI messages, not ``request.body()``: the raw
    bytes are not cached on the request, so they are freed once parsed instead of living
    until the response (413 comes from the body limit, ``middleware.edge``). A client
    that disconnects first raises Starlette's ``ClientDisconnect``."""
    encoding = header(request, b"content-encoding")
    if encoding is not None and (encoding := encoding.strip().lower()) != "identity":
        raise BadRequestError(
            f"header Content-Encoding: {encoding[:20]!r} bodies are not supported; send "
            "the body uncompressed"
        )
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    del chunks
    if not body:
        raise BadRequestError("body: empty; expected a JSON object")
    return body


def parse_json(body: bytes, where: str = "body") -> Any:
    """``body`` as JSON; 400 saying where it is malformed. Parsed with orjson (~4× the
    stdlib's speed on an image's numbers): strict RFC 8259, so ``NaN``/``Infinity``
    literals and numbers beyond a double are malformed, nesting stops at 1024 levels,
    and integers beyond 64 bits arrive as floats (an integer input then refuses them)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"{where}: {_json_problem(exc, body)}") from None


_NON_FINITE = (b"NaN", b"Infinity")
"""Literals orjson refuses; for ``-Infinity`` its position is the one after the sign."""


def _json_problem(exc: orjson.JSONDecodeError, body: bytes | memoryview) -> str:
    """What is wrong with a body orjson refused, in words that say what to change."""
    if exc.msg.startswith("depth limit exceeded"):
        return "JSON nested too deeply (more than 1024 levels)"
    at = bytes(body[exc.pos : exc.pos + 9])
    literal = next((word for word in _NON_FINITE if at.startswith(word)), None)
    if literal is not None:
        return (
            f"not valid JSON: {literal.decode()} at char {exc.pos} is not a JSON number "
            "(NaN and Infinity cannot be sent); send finite numbers"
        )
    return f"not valid JSON ({exc})"


async def read_json(request: Request) -> Any:
    """The body as JSON; 400 saying where it is malformed (413 comes from the limit)."""
    return parse_json(await read_body(request))


async def read_infer(request: Request) -> tuple[Any, memoryview | None]:
    """An OIP infer body: its JSON (header) and, with a positive
    ``Inference-Header-Content-Length``, the binary tensor data after it (a view on the
    body: the body lives as long as the view). Else None: the body is JSON only."""
    body = await read_body(request)
    head, data = split_body(body, header(request, HEADER_LENGTH))
    del body
    where = "body" if data is None else "JSON header (Inference-Header-Content-Length bytes)"
    return parse_json(head, where), data


def deadline_ms(request: Request, mv: ModelVersion, parameters: dict[str, Scalar]) -> int:
    settings = gateway(request).settings
    return timeout_ms(
        header(request, b"x-axon-timeout-ms"),
        parameters,
        default=settings.timeout_for(mv.name),
        maximum=settings.max_timeout_ms,
    )
