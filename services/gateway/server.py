"""How the gateway is served: uvicorn with httptools, guarded against slow and surplus
connections.

uvicorn has no header or body read timeout (its keep-alive timer is cancelled by the
first byte of a request), and its ``limit_concurrency`` answers 503 to every new
request once full, health probes included, while never closing what fills it. So:

- Header timeout (``AXON_HEADER_TIMEOUT_S``): a connection must complete a request's
  headers within it, counted from the connection's opening or from the end of the
  previous response (or from the request's first byte when it is pipelined behind
  another). Else it is closed, after a 408 when part of a request had arrived.
- Body timeout (``AXON_BODY_TIMEOUT_S``): a request's body must be complete that long
  after its headers. Past it, the app's next read raises ``RequestTimeoutError``
  (``BodyTimeout``): the app answers 408 through the usual error mapping, and the
  connection closes after that response.
- Connection cap (``AXON_MAX_CONNECTIONS``): the first ``max_connections`` open
  connections are served normally. The next ``PROBE_RESERVE`` are accepted for health
  probes only: ``GET`` of a ``HEALTH_PATHS`` path answers as usual, any other
  request gets 503 with ``Retry-After``; either way the connection is closed after
  that one response. Connections beyond the reserve are closed at once, unread. So a
  flood of slow clients costs at most ``max_connections + PROBE_RESERVE`` sockets for at
  most header + body timeout each, and Kubernetes' probes (a new connection each time)
  still reach the process.

Deadlines cost no timer per request: each connection holds its header and body deadline
(a float), and one ``Sweeper`` per server checks them every ``sweep_interval`` (a tenth
of the shorter timeout, 50 ms to 1 s), so a timeout acts up to that much late.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from services.gateway import gc_tuning
from services.gateway.errors import RequestTimeoutError
from services.gateway.responses import error_response
from services.gateway.settings import GatewaySettings
from services.gateway.write_coalescer import CoalescingTransport

log = logging.getLogger(__name__)

PROBE_RESERVE = 16
"""Connections accepted over ``max_connections`` for health probes only."""
HEALTH_PATHS = frozenset({"/healthz/live", "/healthz/ready", "/v2/health/live", "/v2/health/ready"})
"""What a connection in the probe reserve may ask for (Kubernetes' and OIP's probes)."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""At most one log line per interval about connections over the cap."""
BODY = "axon.body"
"""Scope key the protocol keeps while a request's body is incomplete: ``PENDING``, then
``EXPIRED`` once its deadline passed; removed when the body is complete."""
PENDING, EXPIRED = "pending", "expired"

Admission = Literal["serve", "probes_only", "refuse"]


@dataclass(frozen=True)
class ConnectionLimits:
    """What the protocol enforces (from ``GatewaySettings``; tests build it directly)."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    retry_after_s: int = 1
    probe_reserve: int = PROBE_RESERVE

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
            retry_after_s=settings.retry_after_s,
        )

    @property
    def sweep_interval_s(self) -> float:
        """How often deadlines are checked: a tenth of the shorter timeout, 50 ms to 1 s."""
        return min(1.0, max(0.05, min(self.header_timeout_s, self.body_timeout_s) / 10))


def admission(open_connections: int, limits: ConnectionLimits) -> Admission:
    """What a new connection gets, given ``open_connections`` counting itself."""
    if open_connections <= limits.max_connections:
        return "serve"
    if open_connections <= limits.max_connections + limits.probe_reserve:
        return "probes_only"
    return "refuse"


def _with_close(message: Message) -> Message:
    """``message`` (a response start) with ``Connection: close`` among its headers."""
    headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}


def _closing(send: Send) -> Send:
    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = _with_close(message)
        await send(message)

    return closing_send


def _error_bytes(status: int, message: str, extra: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 error response ``{"error": message}`` that closes the connection."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    return STATUS_LINE[status] + b"".join(n + b": " + v + b"\r\n" for n, v in head) + b"\r\n" + body


class BodyTimeout:
    """ASGI wrapper: once the protocol marks a request's body ``EXPIRED`` (and wakes the
    read waiting for it), the app's read raises ``RequestTimeoutError``, which the app
    answers with 408; the protocol has already set the connection to close after that
    response. A request whose body is complete when the app starts (most of them: it
    came with the headers) passes through unwrapped."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.message = (
            f"request body not complete within {timeout_s:g} s of its headers "
            "(AXON_BODY_TIMEOUT_S); send the whole body at once"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if BODY not in scope:
            await self.app(scope, receive, send)
            return

        async def checked_receive() -> Message:
            message = await receive()
            if scope.get(BODY) == EXPIRED:
                raise RequestTimeoutError(self.message)
            return message

        await self.app(scope, checked_receive, send)


class ProbesOnly:
    """The app of a connection accepted in the probe reserve: health probes are served,
    anything else gets 503; the response closes the connection either way."""

    def __init__(self, app: ASGIApp, limits: ConnectionLimits) -> None:
        self.app = app
        self.refusal = error_response(
            503,
            f"the gateway is at its limit of {limits.max_connections} open connections "
            "(AXON_MAX_CONNECTIONS); retry later, or reuse connections",
            headers={"Retry-After": str(limits.retry_after_s), "Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD") and scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, _closing(send))
            return
        await self.refusal(scope, receive, send)


class OverflowLog:
    """Counts connections over the cap; logs at most one line per ``interval_s``."""

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        interval_s: float = REFUSAL_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.interval_s = interval_s
        self.clock = clock
        self.counts: dict[Admission, int] = {"probes_only": 0, "refuse": 0}
        self.last: float | None = None

    def note(self, verdict: Admission) -> bool:
        """Count one connection over the cap; True when a line was logged."""
        self.counts[verdict] += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            return False
        self.last = now
        log.warning(
            "over AXON_MAX_CONNECTIONS=%d: %d connection(s) kept for health probes only, "
            "%d closed unread (reserve %d)",
            self.limits.max_connections,
            self.counts["probes_only"],
            self.counts["refuse"],
            self.limits.probe_reserve,
        )
        self.counts = {"probes_only": 0, "refuse": 0}
        return True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the header and body deadlines and the connection
    cap (module docstring). Bind the limits with ``protocol_class``."""

    limits: ClassVar[ConnectionLimits]
    overflow: ClassVar[OverflowLog]
    sweeper: ClassVar[Sweeper]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_deadline: float | None = None
        """When the awaited request's headers must be complete; None while none is awaited."""
        self.body_deadline: float | None = None
        """When the current request's body must be complete; None once it is."""
        self.request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's flow control keeps the real transport; responses go through this.
        self.transport = CoalescingTransport(transport, self.loop)
        verdict = admission(len(self.connections), self.limits)
        if verdict != "serve":
            self.overflow.note(verdict)
        if verdict == "refuse":
            transport.close()
            return
        if verdict == "probes_only":
            self.app = ProbesOnly(self.app, self.limits)
        self.sweeper.start(self.loop, self.connections)
        self.header_deadline = self.loop.time() + self.limits.header_timeout_s

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        if self.header_deadline is None:  # pipelined behind a request still running
            self.header_deadline = self.loop.time() + self.limits.header_timeout_s

    def on_headers_complete(self) -> None:
        self.header_deadline = None
        self.request_begun = False
        self.body_deadline = self.loop.time() + self.limits.body_timeout_s
        self.scope[BODY] = PENDING  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.body_deadline = None
        self.scope.pop(BODY, None)  # type: ignore[misc]
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self.header_deadline is None:
                self.header_deadline = self.loop.time() + self.limits.header_timeout_s
        elif self.body_deadline is not None:
            # A pipelined request starts now; uvicorn stopped reading its body until
            # now, so its body clock starts now.
            self.body_deadline = self.loop.time() + self.limits.body_timeout_s

    def check_deadlines(self, now: float) -> None:
        """Act on a passed deadline (called by the ``Sweeper``)."""
        if self.transport.is_closing():
            return
        if self.header_deadline is not None and now >= self.header_deadline:
            self.header_deadline = None
            self._header_timeout()
        if self.body_deadline is not None and now >= self.body_deadline and not self.pipeline:
            self.body_deadline = None
            self._body_timeout()

    def _header_timeout(self) -> None:
        """Close the connection; first a 408 if part of a request came and no response is
        being written (a request pipelined behind one still running)."""
        responding = self.cycle is not None and not self.cycle.response_complete
        if self.request_begun and not responding:
            message = (
                f"request headers not complete within {self.limits.header_timeout_s:g} s "
                "(AXON_HEADER_TIMEOUT_S); send them at once"
            )
            self.transport.write(_error_bytes(408, message, self.server_state.default_headers))
        self.transport.close()

    def _body_timeout(self) -> None:
        """Mark the request (its next body read raises, see ``BodyTimeout``), make its
        response close the connection, and wake a read waiting for more body."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_started:
            return  # complete, or already answered (the header deadline takes over)
        cycle.scope[BODY] = EXPIRED  # type: ignore[literal-required]
        cycle.keep_alive = False
        cycle.message_event.set()


class Sweeper:
    """One repeating loop callback per server: every ``interval_s`` it hands the time to
    each open connection's ``check_deadlines`` (instead of a timer per request). Started
    by the first connection."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop, connections: Iterable[object]) -> None:
        if self.handle is None:
            self.handle = loop.call_later(self.interval_s, self.sweep, loop, connections)

    def sweep(self, loop: asyncio.AbstractEventLoop, connections: Iterable[object]) -> None:
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection.check_deadlines(now)
        self.handle = loop.call_later(self.interval_s, self.sweep, loop, connections)


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A ``GuardedHttpToolsProtocol`` subclass bound to ``limits`` (uvicorn's ``http=``),
    with its own overflow log and sweeper."""

    class Bound(GuardedHttpToolsProtocol):
        pass

    Bound.limits = limits
    Bound.overflow = OverflowLog(limits)
    Bound.sweeper = Sweeper(limits.sweep_interval_s)
    return Bound


class NotifyingServer(uvicorn.Server):
    """uvicorn's server that also calls ``on_exit`` when a stop signal arrives (before
    it drains HTTP): the gateway stops taking gRPC calls at that moment too; and
    ``on_started`` once the app's start-up (lifespan) is done and the sockets listen."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_exit: Callable[[], None],
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_started()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` with ``SO_REUSEPORT``, not yet listening:
    several gateway processes bind one port and the kernel spreads new connections over
    those listening. uvicorn calls ``listen`` once the app's start-up is done, so a
    process starting (or restarting) takes no connection before it can serve it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve(
    app: ASGIApp,
    settings: GatewaySettings,
    *,
    host: str,
    port: int,
    log_level: str,
    on_exit: Callable[[], None] = lambda: None,
    reuse_port: bool = False,
) -> None:
    """Run ``app`` (the gateway) with uvicorn until SIGINT/SIGTERM, guarded per
    ``settings``; ``on_exit`` runs when the signal arrives (in the signal handler: it
    must only schedule work, e.g. ``app.begin_drain``). ``reuse_port``: share the port
    with other gateway processes (``shared_socket``; ``axon serve --gateway-workers``)."""
    config = uvicorn.Config(
        BodyTimeout(app, settings.body_timeout_s),
        host=host,
        port=port,
        http=protocol_class(ConnectionLimits.from_settings(settings)),
        log_level=log_level,
        log_config=None,  # uvicorn's records go to the process's handler (logs.configure)
        access_log=False,
        lifespan="on",
        # Neither is used (the gateway reads no client address, names no server); each
        # costs a little on every request.
        proxy_headers=False,
        server_header=False,
    )
    sockets = [shared_socket(host, port)] if reuse_port else None
    # Once start-up is done: its objects frozen, the collector tuned (``gc_tuning``).
    started = functools.partial(gc_tuning.tune, settings.gc_threshold)
    NotifyingServer(config, on_exit, started).run(sockets=sockets)
