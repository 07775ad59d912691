"""server.py without sockets: admission, the ASGI wrappers, the overflow log, the settings
they read, and the protocol's header/body deadlines driven through uvicorn's real
httptools protocol on an in-memory transport, with the time handed in (no sleeping).
Over real sockets: tests/security/test_slow_clients.py."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from uvicorn.server import ServerState

from services.contract.errors import SettingsError
from services.gateway.errors import RequestTimeoutError
from services.gateway.server import (
    BODY,
    EXPIRED,
    PENDING,
    BodyTimeout,
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    OverflowLog,
    ProbesOnly,
    admission,
    protocol_class,
)
from services.gateway.settings import GatewaySettings

LIMITS = ConnectionLimits(
    header_timeout_s=1.0, body_timeout_s=2.0, max_connections=4, probe_reserve=2
)
# Deadlines far beyond the test's run time: only check_deadlines(now) moves time on.
SLOW = ConnectionLimits(
    header_timeout_s=100.0, body_timeout_s=200.0, max_connections=2, probe_reserve=1
)


def _scope(
    method: str = "POST", path: str = "/x", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def test_admission_tiers() -> None:
    assert [admission(n, LIMITS) for n in range(1, 9)] == [
        "serve", "serve", "serve", "serve", "probes_only", "probes_only", "refuse", "refuse",
    ]  # fmt: skip


def test_sweep_interval() -> None:
    assert LIMITS.sweep_interval_s == pytest.approx(0.1)
    assert SLOW.sweep_interval_s == 1.0
    tiny = ConnectionLimits(header_timeout_s=0.1, body_timeout_s=5.0, max_connections=1)
    assert tiny.sweep_interval_s == 0.05


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.sent.append(message)

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.sent[0]["headers"] if n == name]


async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body; answers 408 on RequestTimeoutError (as the gateway's error
    mapping does), else 200 with the body's size."""
    size, status = 0, 200
    try:
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    except RequestTimeoutError:
        status = 408
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_body_timeout_raises_once_the_scope_is_marked() -> None:
    scope = {**_scope(), BODY: PENDING}

    async def receive() -> Message:
        scope[BODY] = EXPIRED  # what the protocol does when the deadline passes
        return {"type": "http.request", "body": b"abc", "more_body": True}

    send = Recorder()
    app = BodyTimeout(reading_app, timeout_s=2.0)
    asyncio.run(app(scope, receive, send))
    assert send.sent[0]["status"] == 408
    assert "within 2 s of its headers (AXON_BODY_TIMEOUT_S)" in app.message


def test_body_timeout_passes_pending_and_complete_bodies() -> None:
    chunks: list[Message] = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"de", "more_body": False},
    ]

    async def receive() -> Message:
        return chunks.pop(0)

    send = Recorder()
    scope = {**_scope(), BODY: PENDING}
    asyncio.run(BodyTimeout(reading_app, 2.0)(scope, receive, send))
    assert send.sent[0]["status"] == 200 and send.sent[1]["body"] == b"5"
    seen: list[Receive] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(receive)

    asyncio.run(BodyTimeout(inner, 2.0)(_scope("GET"), receive, Recorder()))
    assert seen == [receive]  # body complete (or none) when the app starts: not wrapped


def test_probes_only_serves_health_and_closes() -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    limits = ConnectionLimits(1.0, 1.0, max_connections=7, retry_after_s=3)
    app = ProbesOnly(inner, limits)
    for path in ("/healthz/live", "/healthz/ready", "/v2/health/live", "/v2/health/ready"):
        send = Recorder()
        asyncio.run(app(_scope("GET", path), receive, send))
        assert send.sent[0]["status"] == 200 and send.header(b"connection") == [b"close"]
    send = Recorder()
    asyncio.run(app(_scope("POST", "/v2/models/m/infer"), receive, send))
    assert send.sent[0]["status"] == 503
    assert send.header(b"retry-after") == [b"3"] and send.header(b"connection") == [b"close"]
    error: Any = json.loads(send.sent[1]["body"])["error"]
    assert "7 open connections (AXON_MAX_CONNECTIONS)" in error


def test_overflow_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    overflow = OverflowLog(LIMITS, interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="services.gateway.server"):
        assert overflow.note("refuse") is True
        assert overflow.note("refuse") is False
        assert overflow.note("probes_only") is False
        now[0] += 10.0
        assert overflow.note("refuse") is True
    assert len(caplog.records) == 2
    message = caplog.records[1].getMessage()
    assert "1 connection(s) kept for health probes only, 2 closed unread" in message


def test_connection_settings_defaults_and_parsing() -> None:
    base = {"AXON_REDIS_URL": "redis://127.0.0.1:1/0"}
    limits = ConnectionLimits.from_settings(GatewaySettings.from_env(base))
    assert (limits.header_timeout_s, limits.body_timeout_s) == (10.0, 60.0)
    assert (limits.max_connections, limits.retry_after_s) == (512, 1)
    custom = GatewaySettings.from_env(
        {
            **base,
            "AXON_HEADER_TIMEOUT_S": "1.5",
            "AXON_BODY_TIMEOUT_S": "2",
            "AXON_MAX_CONNECTIONS": "9",
        }
    )
    assert (custom.header_timeout_s, custom.body_timeout_s, custom.max_connections) == (
        1.5,
        2.0,
        9,
    )
    for name, bad in (
        ("AXON_HEADER_TIMEOUT_S", "0"),
        ("AXON_BODY_TIMEOUT_S", "inf"),
        ("AXON_MAX_CONNECTIONS", "-1"),
    ):
        with pytest.raises(SettingsError, match=name):
            GatewaySettings.from_env({**base, name: bad})


# --------------------------------------------------------------------------- protocol


class MemoryTransport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return addresses.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


Scenario = Callable[
    [Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]]], Awaitable[None]
]


def run_protocol(
    scenario: Scenario,
    limits: ConnectionLimits = SLOW,
    app: Callable[..., Awaitable[None]] = reading_app,
) -> None:
    """Run ``scenario`` with a factory of connections (protocol + transport) of one server
    serving ``BodyTimeout(app)``."""

    async def main() -> None:
        config = uvicorn.Config(BodyTimeout(app, limits.body_timeout_s), lifespan="off")
        config.load()
        state = ServerState()
        bound = protocol_class(limits)

        def connect() -> tuple[GuardedHttpToolsProtocol, MemoryTransport]:
            protocol = bound(config=config, server_state=state, app_state={})
            transport = MemoryTransport()
            protocol.connection_made(transport)
            return protocol, transport

        try:
            await scenario(connect)
        finally:
            if bound.sweeper.handle is not None:
                bound.sweeper.handle.cancel()

    asyncio.run(main())


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_header_deadline_from_open_closes_silently() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        opened = asyncio.get_running_loop().time()
        protocol.check_deadlines(opened + SLOW.header_timeout_s / 2)
        assert not transport.closed
        protocol.check_deadlines(opened + SLOW.header_timeout_s + 1)
        assert transport.closed and transport.written == b""

    run_protocol(scenario)


def test_partial_headers_get_408() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        protocol.data_received(b"GET /v2/health/live HTTP/1.1\r\nHo")
        protocol.check_deadlines(asyncio.get_running_loop().time() + SLOW.header_timeout_s + 1)
        assert transport.closed
        assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"connection: close" in transport.written
        assert b"AXON_HEADER_TIMEOUT_S" in transport.written

    run_protocol(scenario)


def test_keep_alive_rearms_the_header_deadline_after_each_response() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        loop = asyncio.get_running_loop()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: g\r\n\r\n")
        assert protocol.header_deadline is None
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 200 OK")
        rearmed = protocol.header_deadline
        assert rearmed is not None and rearmed >= loop.time() + SLOW.header_timeout_s - 1
        protocol.data_received(b"GET / HTTP/1.1\r\nHo")  # half of the next request
        assert protocol.header_deadline == rearmed  # the first byte does not restart it
        protocol.check_deadlines(rearmed)
        assert transport.closed and transport.written.endswith(b'send them at once"}')

    run_protocol(scenario)


def test_a_response_is_written_once() -> None:
    """uvicorn writes the status line + headers and the body separately; the connection's
    transport (``write_coalescer``) sends them as one write, in the same loop turn."""

    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        for n in (1, 2):
            protocol.data_received(b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\nabc")
            await settle()
            assert transport.writes == n
            response = transport.written.split(b"HTTP/1.1 ")[-1]
            assert response.startswith(b"200 OK") and response.endswith(b"\r\n\r\n3")

    run_protocol(scenario)


def test_unfinished_body_gets_408_and_close() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        assert protocol.body_deadline is not None and transport.written == b""
        protocol.check_deadlines(protocol.body_deadline - 1)
        await settle()
        assert transport.written == b""
        protocol.check_deadlines(protocol.body_deadline)
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"connection: close" in transport.written
        assert transport.closed

    run_protocol(scenario)


def test_complete_body_clears_the_body_deadline() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nab")
        protocol.data_received(b"cde")
        assert protocol.body_deadline is None
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 200 OK") and transport.written.endswith(b"5")
        assert not transport.closed

    run_protocol(scenario)


def test_connections_over_the_cap() -> None:
    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        served = [connect(), connect()]  # max_connections = 2
        reserve_protocol, reserve = connect()  # probe reserve = 1
        refused_protocol, refused = connect()
        assert refused.closed and refused.written == b""
        assert not any(t.closed for _, t in served) and not reserve.closed
        reserve_protocol.data_received(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: g\r\n\r\n")
        await settle()
        assert reserve.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"AXON_MAX_CONNECTIONS" in reserve.written and reserve.closed
        reserve_protocol.connection_lost(None)
        refused_protocol.connection_lost(None)
        probe_protocol, probe = connect()  # back in the reserve: health is served
        probe_protocol.data_received(b"GET /v2/health/live HTTP/1.1\r\nHost: g\r\n\r\n")
        await settle()
        assert probe.written.startswith(b"HTTP/1.1 200 OK\r\n") and probe.closed
        assert b"connection: close" in probe.written

    run_protocol(scenario)


def test_a_pipelined_body_is_timed_from_when_its_request_starts() -> None:
    gate = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await gate.wait()
        await reading_app(scope, receive, send)

    async def scenario(
        connect: Callable[[], tuple[GuardedHttpToolsProtocol, MemoryTransport]],
    ) -> None:
        protocol, transport = connect()
        loop = asyncio.get_running_loop()
        protocol.data_received(
            b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\nab"
        )
        await settle()
        # uvicorn reads nothing more while the first request runs: no body timeout.
        protocol.check_deadlines(loop.time() + 10 * SLOW.body_timeout_s)
        await settle()
        assert transport.written == b"" and not transport.closed
        gate.set()
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 200 OK") and not transport.closed
        restarted = protocol.body_deadline
        assert restarted is not None and restarted >= loop.time() + SLOW.body_timeout_s - 1
        protocol.check_deadlines(restarted)
        await settle()
        assert b"HTTP/1.1 408 Request Timeout" in transport.written and transport.closed

    run_protocol(scenario, app=app)


def test_byte_budget_reserves_and_releases() -> None:
    from services.gateway.middleware.inflight_bytes import ByteBudget

    budget = ByteBudget(100)
    assert budget.try_reserve(150)  # alone: granted, the body limit allowed it
    assert not budget.try_reserve(1)
    budget.release(150)
    assert budget.try_reserve(60) and budget.try_reserve(40)
    assert not budget.try_reserve(1)
    budget.release(60)
    assert budget.try_reserve(60) and budget.reserved == 100
    budget.release(500)
    assert budget.reserved == 0
