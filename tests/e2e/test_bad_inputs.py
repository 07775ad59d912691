"""A table of bad requests: each gets the right 4xx and a message naming the problem,
and the server stays healthy and keeps answering good requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.payloads import history, infer_image

IMAGE = "/v2/models/digits-cnn/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    base = infer_image(1)["inputs"][0]
    return {"inputs": [{**base, **overrides}]}


def rows(n: int) -> dict[str, Any]:
    return infer_image(n)


def chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b" " * 65536
        sent += 65536


CASES: list[tuple[str, str, str, Any, int, str]] = [
    # (case, method, path, body (dict = JSON, bytes = raw), status, fragment of message)
    ("malformed json", "POST", IMAGE, b"{not json", 400, "not valid JSON"),
    ("empty body", "POST", IMAGE, b"", 400, "empty"),
    ("body not an object", "POST", IMAGE, [1, 2], 400, "JSON object"),
    ("inputs not a list", "POST", IMAGE, {"inputs": {"image": 1}}, 400, "inputs: must be a list"),
    ("wrong input name", "POST", IMAGE, tensor(name="img"), 400, "unknown input"),
    ("missing inputs", "POST", IMAGE, {"inputs": []}, 400, "missing input"),
    (
        "wrong datatype",
        "POST",
        IMAGE,
        tensor(datatype="INT64", data=[0] * 64),
        400,
        "datatype INT64, expected FP32",
    ),
    ("unknown datatype", "POST", IMAGE, tensor(datatype="FP128"), 400, "is not one of"),
    (
        "wrong shape",
        "POST",
        IMAGE,
        tensor(shape=[1, 1, 8, 7], data=[0.0] * 56),
        400,
        "axis 3 must be 8",
    ),
    ("wrong rank", "POST", IMAGE, tensor(shape=[1, 64], data=[0.0] * 64), 400, "rank"),
    ("shape/data mismatch", "POST", IMAGE, tensor(data=[0.0] * 10), 400, "10 values"),
    (
        "ragged data",
        "POST",
        IMAGE,
        tensor(shape=[2, 2], data=[[1.0, 2.0], [3.0]]),
        400,
        "rectangular",
    ),
    ("strings in data", "POST", IMAGE, tensor(data=["a"] * 64), 400, "got str"),
    (
        "NaN",
        "POST",
        IMAGE,
        b'{"inputs":[{"name":"image","shape":[1,1,8,8],"datatype":"FP32",'
        b'"data":[NaN' + b",0" * 63 + b"]}]}",
        400,
        "NaN",
    ),
    ("too many rows", "POST", IMAGE, rows(33), 400, "at most 32"),
    (
        "unknown output",
        "POST",
        IMAGE,
        {**infer_image(1), "outputs": [{"name": "x"}]},
        400,
        "not an output",
    ),
    (
        "negative timeout",
        "POST",
        IMAGE,
        {**infer_image(1), "parameters": {"timeout_ms": -5}},
        400,
        "timeout_ms",
    ),
    ("huge body", "POST", IMAGE, b"[" + b"0," * 200_000 + b"0]", 413, "AXON_MAX_BODY_BYTES"),
    ("huge chunked body", "POST", IMAGE, chunks, 413, "AXON_MAX_BODY_BYTES"),
    ("unknown model", "POST", "/v2/models/nope/infer", infer_image(1), 404, "'nope'"),
    (
        "unknown version",
        "POST",
        "/v2/models/digits-cnn/versions/9/infer",
        infer_image(1),
        404,
        "no version '9'",
    ),
    ("bad version", "GET", "/v2/models/digits-cnn/versions/abc", None, 404, "positive integer"),
    ("unknown route", "GET", "/v3/whatever", None, 404, "no such route"),
    ("wrong method", "GET", IMAGE, None, 405, "Method Not Allowed"),
    (
        "negative horizon",
        "POST",
        "/v1/models/sunspots-lstm/forecast",
        {"history": history(), "horizon": -1},
        400,
        "horizon: -1 is outside",
    ),
    (
        "huge horizon",
        "POST",
        "/v1/models/sunspots-lstm/forecast",
        {"history": history(), "horizon": 10_000},
        400,
        "horizon: 10000 is outside",
    ),
    ("empty history", "POST", "/v1/models/sunspots-lstm/forecast", {"history": []}, 400, "history"),
    (
        "2-d history",
        "POST",
        "/v1/models/sunspots-lstm/forecast",
        {"history": [[1.0]]},
        400,
        "flat list",
    ),
    (
        "zero count",
        "POST",
        "/v1/models/digits-gan/generate",
        {"count": 0},
        400,
        "count: 0 is outside",
    ),
    (
        "huge count",
        "POST",
        "/v1/models/digits-gan/generate",
        {"count": 10**6},
        400,
        "count: 1000000 is outside",
    ),
    ("negative seed", "POST", "/v1/models/digits-gan/generate", {"seed": -1}, 400, "seed"),
    (
        "label out of range",
        "POST",
        "/v1/models/digits-gan/generate",
        {"label": 10},
        400,
        "label: 10 is outside",
    ),
    ("bad format", "POST", "/v1/models/digits-gan/generate", {"format": "gif"}, 400, "format"),
    (
        "png not base64",
        "POST",
        "/v1/models/digits-cnn/classify",
        {"png": ["%%%"]},
        400,
        "png[0]: not valid base64",
    ),
    (
        "png not an image",
        "POST",
        "/v1/models/digits-cnn/classify",
        {"png": ["aGVsbG8="]},
        400,
        "not a readable image",
    ),
    (
        "task mismatch",
        "POST",
        "/v1/models/sunspots-lstm/classify",
        {"images": [[1.0]]},
        400,
        "does a forecast task",
    ),
    (
        "bad top_k",
        "POST",
        "/v1/models/digits-cnn/classify",
        {"images": infer_image(1)["inputs"][0]["data"], "top_k": 0},
        400,
        "top_k",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request(
    stack: Stack, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    with stack.client() as http:
        if callable(body):
            response = http.request(method, path, content=body(400_000))
        elif isinstance(body, bytes):
            response = http.request(method, path, content=body)
        elif body is None:
            response = http.request(method, path)
        else:
            response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert "Traceback" not in response.text


def test_timeout_header_must_be_a_number(stack: Stack) -> None:
    with stack.client(**{"X-Axon-Timeout-Ms": "soon"}) as http:
        response = http.post(IMAGE, json=infer_image(1))
    assert response.status_code == 400
    assert "X-Axon-Timeout-Ms" in response.json()["error"]


def test_still_healthy_after_bad_requests(stack: Stack) -> None:
    with stack.client() as http:
        assert http.get("/healthz/ready").status_code == 200
        assert http.post(IMAGE, json=infer_image(32)).status_code == 200
        metrics = http.get("/metrics").text
    assert 'axon_rejected_total{model="digits-cnn",reason="invalid"}' in metrics
    assert 'reason="too_large"' in metrics
