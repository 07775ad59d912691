"""Issue 9 items 7 and 8: request bodies in flight at the gateway and request bytes
queued per model version in Redis are bounded, each refusal naming its setting."""

from __future__ import annotations

import json
import socket
import time

import httpx

from services.contract import protocol
from tests.e2e.payloads import infer_image
from tests.security.conftest import SecurityStack

INFER = "/v2/models/digits-cnn/infer"


def test_bodies_in_flight_are_bounded(stack: SecurityStack) -> None:
    """A request whose body would take the bodies in flight past
    AXON_MAX_INFLIGHT_BYTES gets 503 + Retry-After before its body is read; once the
    first request is done, the budget is free again."""
    gw = stack.gateway("sec-inflight", max_inflight_bytes="100000")
    holder = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        body = json.dumps(infer_image(200)).encode()
        assert 60_000 < len(body) < 100_000
        holder.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        time.sleep(0.5)  # the reservation is made when the request starts
        refused = httpx.post(gw.url + INFER, json=infer_image(200), timeout=30)
        assert refused.status_code == 503, refused.text
        assert "AXON_MAX_INFLIGHT_BYTES" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"
        small = httpx.post(gw.url + INFER, json=infer_image(1), timeout=30)
        assert small.status_code == 200, small.text
        holder.sendall(body[1000:])
        answer = holder.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        holder.close()
    again = httpx.post(gw.url + INFER, json=infer_image(200), timeout=30)
    assert again.status_code == 200, again.text


def test_a_request_over_the_queued_bytes_limit_is_413(stack: SecurityStack) -> None:
    gw = stack.gateway("sec-qbytes", backlog_bytes="20000")
    over = httpx.post(gw.url + INFER, json=infer_image(100), timeout=30)
    assert over.status_code == 413, over.text
    assert "AXON_BACKLOG_BYTES" in over.json()["error"]
    assert httpx.post(gw.url + INFER, json=infer_image(10), timeout=30).status_code == 200
    # Answered entries are subtracted: nothing stays counted once the stream is empty.
    counter = protocol.queued_bytes_key(protocol.stream_key("digits-cnn", 1))
    assert int(stack.redis.client().get(counter) or 0) == 0
