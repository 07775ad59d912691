"""Slow and surplus clients over raw sockets against a real gateway (real Redis, real
workers): unfinished headers or bodies are cut off by the header and body timeouts
(keep-alive included), connections over AXON_MAX_CONNECTIONS are turned away while the
health probes still answer.

Bounds are generous (timeout + ``MARGIN_S``): they prove a connection *is* closed, not
how fast. A lower bound (half the timeout) shows it was the timer that closed it.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.gateway.server import PROBE_RESERVE
from tests.chaos.harness import GatewayProc, raw_connection, read_until_closed
from tests.e2e.payloads import infer_image
from tests.security.conftest import SecurityStack
from tests.support.redis import wait_for

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
MARGIN_S = 10.0
CAP = 4
CLASSIFY = "/v1/models/digits-cnn/classify"
INFER = "/v2/models/digits-cnn/infer"


@pytest.fixture(scope="module")
def slow_gw(stack: SecurityStack) -> GatewayProc:
    return stack.gateway(
        "sec-slow", header_timeout_s=str(HEADER_TIMEOUT_S), body_timeout_s=str(BODY_TIMEOUT_S)
    )


@pytest.fixture(scope="module")
def capped_gw(stack: SecurityStack) -> GatewayProc:
    # Long header timeout: the connections that fill the cap stay until the test closes them.
    return stack.gateway("sec-capped", max_connections=str(CAP), header_timeout_s="60")


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the first response in ``data``."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def read_response(
    sock: socket.socket, timeout_s: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, leaving the connection open."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    status, headers, body = parse(data)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(1 << 16)
        assert chunk, "closed in the middle of a response"
        body += chunk
    return status, headers, body


def error_of(body: bytes) -> str:
    message: Any = json.loads(body)["error"]
    return str(message)


def test_silent_connection_is_closed(slow_gw: GatewayProc, sockets: list[socket.socket]) -> None:
    sockets.append(raw_connection(slow_gw.port))
    data, closed_after = read_until_closed(sockets[0], HEADER_TIMEOUT_S + MARGIN_S)
    assert closed_after is not None, "a connection that sent nothing is still open"
    assert closed_after >= HEADER_TIMEOUT_S / 2
    assert data == b""  # nothing was asked: closed without an answer


def test_partial_headers_get_408_and_close(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    sockets.append(raw_connection(slow_gw.port, b"GET /v2/health/live HTTP/1.1\r\nHost: g"))
    data, closed_after = read_until_closed(sockets[0], HEADER_TIMEOUT_S + MARGIN_S)
    assert closed_after is not None, "unfinished headers held the connection open"
    assert closed_after >= HEADER_TIMEOUT_S / 2
    status, headers, body = parse(data)
    assert status == 408 and headers["connection"] == "close"
    assert "AXON_HEADER_TIMEOUT_S" in error_of(body)


def test_trickled_headers_do_not_extend_the_timeout(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    sock = raw_connection(slow_gw.port, b"GET /v2/health/live HTTP/1.1\r\n")
    sockets.append(sock)
    start = time.monotonic()
    closed = False
    while not closed and time.monotonic() - start < HEADER_TIMEOUT_S + MARGIN_S:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            _, closed_after = read_until_closed(sock, MARGIN_S)
            closed = closed_after is not None
            break
        try:
            sock.sendall(b"X-Trickle: 1\r\n")  # a header line every 0.2 s, forever
        except OSError:
            closed = True
    assert closed, "a client trickling header lines kept the connection open"


@pytest.mark.parametrize("path", [CLASSIFY, INFER])
def test_partial_body_gets_408_and_close(
    slow_gw: GatewayProc, sockets: list[socket.socket], path: str
) -> None:
    head = request("POST", path, Content_Type="application/json", Content_Length="100")
    sockets.append(raw_connection(slow_gw.port, head + b'{"inputs": ['))
    data, closed_after = read_until_closed(sockets[0], BODY_TIMEOUT_S + MARGIN_S)
    assert closed_after is not None, "an unfinished body held the connection open"
    assert closed_after >= BODY_TIMEOUT_S / 2
    status, headers, body = parse(data)
    assert status == 408 and headers["connection"] == "close", data
    assert "AXON_BODY_TIMEOUT_S" in error_of(body)


def test_partial_chunked_body_gets_408_and_close(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    head = request("POST", CLASSIFY, Content_Type="application/json", Transfer_Encoding="chunked")
    sockets.append(raw_connection(slow_gw.port, head + b'2\r\n{"\r\n'))
    data, closed_after = read_until_closed(sockets[0], BODY_TIMEOUT_S + MARGIN_S)
    assert closed_after is not None, "an unfinished chunked body held the connection open"
    status, headers, _ = parse(data)
    assert status == 408 and headers["connection"] == "close", data


def test_a_slow_but_complete_body_is_served(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    body = json.dumps(infer_image(2)).encode()
    whole = request("POST", INFER, body)
    sock = raw_connection(slow_gw.port, whole[: len(whole) - len(body) // 2])
    sockets.append(sock)
    time.sleep(BODY_TIMEOUT_S / 4)
    sock.sendall(whole[len(whole) - len(body) // 2 :])
    status, headers, _ = read_response(sock)
    assert status == 200 and headers.get("connection") != "close"


def test_keep_alive_times_the_next_requests_headers(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    sock = raw_connection(slow_gw.port)
    sockets.append(sock)
    # Five requests 0.25 s apart on one connection: longer than the header timeout in
    # all, so the timer must restart after each response.
    for _ in range(5):
        sock.sendall(request("GET", "/v2/health/live"))
        status, _, _ = read_response(sock)
        assert status == 200
        time.sleep(HEADER_TIMEOUT_S / 4)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHo")  # half of the next one
    data, closed_after = read_until_closed(sock, HEADER_TIMEOUT_S + MARGIN_S)
    assert closed_after is not None, "half of a keep-alive request held the connection open"
    status, _, body = parse(data)
    assert status == 408 and "AXON_HEADER_TIMEOUT_S" in error_of(body)


def test_health_answers_while_slow_clients_hold_connections(
    slow_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    half_body = request("POST", CLASSIFY, Content_Length="1000") + b"{"
    for i in range(40):
        payload = b"GET /v2/health/live HTTP/1.1\r\n" if i % 2 else half_body
        sockets.append(raw_connection(slow_gw.port, payload))
    for path in ("/healthz/live", "/healthz/ready", "/v2/health/live"):
        assert httpx.get(slow_gw.url + path, timeout=MARGIN_S).status_code == 200
    for sock in sockets:
        _, closed_after = read_until_closed(sock, BODY_TIMEOUT_S + MARGIN_S)
        assert closed_after is not None, "a slow client outlived both timeouts"


def test_connections_over_the_cap_are_turned_away_but_probes_answer(
    capped_gw: GatewayProc, sockets: list[socket.socket]
) -> None:
    port = capped_gw.port
    for _ in range(CAP):  # slow clients fill the cap
        sockets.append(raw_connection(port, b"GET /v2/health/live HTTP/1.1\r\n"))

    # Connection CAP + 1: work is refused with 503, and the connection closed.
    extra = raw_connection(port, request("POST", INFER, json.dumps(infer_image(1)).encode()))
    sockets.append(extra)
    data, closed_after = read_until_closed(extra, MARGIN_S)
    assert closed_after is not None
    status, headers, body = parse(data)
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
    assert f"{CAP} open connections (AXON_MAX_CONNECTIONS)" in error_of(body)

    # Health probes (a new connection each, as the kubelet's) still answer.
    for path in ("/healthz/live", "/healthz/ready", "/v2/health/live", "/v2/health/ready"):
        response = httpx.get(capped_gw.url + path, timeout=MARGIN_S)
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close"

    # Fill the probe reserve too: further connections are closed unread.
    for _ in range(PROBE_RESERVE):
        sockets.append(raw_connection(port, b"GET /v2/health/live HTTP/1.1\r\n"))
    refused = raw_connection(port, request("GET", "/v2/health/live"))
    sockets.append(refused)
    data, closed_after = read_until_closed(refused, MARGIN_S)
    assert closed_after is not None and data == b""

    for sock in sockets:
        sock.close()
    wait_for(
        lambda: httpx.post(capped_gw.url + INFER, json=infer_image(1), timeout=MARGIN_S)
        .status_code == 200,
        timeout_s=30,
        what="requests served again once the slow clients are gone",
    )  # fmt: skip
