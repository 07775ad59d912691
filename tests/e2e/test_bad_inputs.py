"""Bad requests over the real processes (uvicorn's protocol, the real app, Redis, a
real worker): the right 4xx with a message naming the problem, no traceback, and the
stack keeps answering good requests. The full table of bad requests runs in-process
(tests/unit/gateway/test_inprocess_bad_inputs.py); these are the cases whose path
through real sockets differs: a malformed body, a streamed body over the limit, a
request the worker itself refuses."""

from __future__ import annotations

from collections.abc import Iterator

from tests.e2e.conftest import Stack
from tests.e2e.payloads import infer_image

IMAGE = "/v2/models/digits-cnn/infer"


def chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b" " * 65536
        sent += 65536


def test_bad_requests_over_real_processes(stack: Stack) -> None:
    with stack.client() as http:
        malformed = http.post(IMAGE, content=b"{not json")
        streamed = http.post(IMAGE, content=chunks(400_000))
        wrong = http.post(IMAGE, json={"inputs": [{**infer_image(1)["inputs"][0], "name": "img"}]})
        assert http.get("/healthz/ready").status_code == 200
        assert http.post(IMAGE, json=infer_image(32)).status_code == 200
        metrics = http.get("/metrics").text
    for response, status, fragment in (
        (malformed, 400, "not valid JSON"),
        (streamed, 413, "AXON_MAX_BODY_BYTES"),
        (wrong, 400, "unknown input"),
    ):
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]
        assert "Traceback" not in response.text
    assert 'axon_rejected_total{model="digits-cnn",reason="invalid"}' in metrics
    assert 'reason="too_large"' in metrics


def test_timeout_header_must_be_a_number(stack: Stack) -> None:
    with stack.client(**{"X-Axon-Timeout-Ms": "soon"}) as http:
        response = http.post(IMAGE, json=infer_image(1))
    assert response.status_code == 400
    assert "X-Axon-Timeout-Ms" in response.json()["error"]
