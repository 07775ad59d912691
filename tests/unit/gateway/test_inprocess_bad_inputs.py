"""A table of bad requests against the real gateway app, in-process (memory queue, real
ONNX workers): each gets the right 4xx and a message naming the problem, and the
gateway keeps answering good requests. (tests/e2e keeps one such case over real
processes.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, infer_image, stack

IMAGE = f"/v2/models/{CLASSIFIER}/infer"
FORECAST = f"/v1/models/{FORECASTER}/forecast"
GENERATE = f"/v1/models/{GENERATOR}/generate"
CLASSIFY = f"/v1/models/{CLASSIFIER}/classify"
ENV = {"AXON_MAX_ROWS": "32", "AXON_MAX_BODY_BYTES": str(256 * 1024)}


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"inputs": [{**infer_image(1)["inputs"][0], **overrides}]}


def chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b" " * 65536
        sent += 65536


HISTORY = [1.0, 2.0, 3.0, 4.0, 5.0]

CASES: list[tuple[str, str, str, Any, int, str]] = [
    # (case, method, path, body (dict = JSON, bytes = raw), status, fragment of message)
    ("malformed json", "POST", IMAGE, b"{not json", 400, "not valid JSON"),
    ("empty body", "POST", IMAGE, b"", 400, "empty"),
    ("body not an object", "POST", IMAGE, [1, 2], 400, "JSON object"),
    ("deep json", "POST", IMAGE, b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("inputs not a list", "POST", IMAGE, {"inputs": {"image": 1}}, 400, "inputs: must be a list"),
    ("wrong input name", "POST", IMAGE, tensor(name="img"), 400, "unknown input"),
    ("missing inputs", "POST", IMAGE, {"inputs": []}, 400, "missing input"),
    ("wrong datatype", "POST", IMAGE, tensor(datatype="INT64", data=[0] * 4), 400,
     "datatype INT64, expected FP32"),
    ("unknown datatype", "POST", IMAGE, tensor(datatype="FP128"), 400, "is not one of"),
    ("wrong shape", "POST", IMAGE, tensor(shape=[1, 1, 2, 3], data=[0.0] * 6), 400,
     "axis 3 must be 2"),
    ("wrong rank", "POST", IMAGE, tensor(shape=[1, 4], data=[0.0] * 4), 400, "rank"),
    ("shape/data mismatch", "POST", IMAGE, tensor(data=[0.0] * 10), 400, "10 values"),
    ("ragged data", "POST", IMAGE, tensor(shape=[2, 2], data=[[1.0, 2.0], [3.0]]), 400,
     "rectangular"),
    ("strings in data", "POST", IMAGE, tensor(data=["a"] * 4), 400, "got str"),
    ("bools in data", "POST", IMAGE, tensor(data=[True] * 4), 400, "got bool"),
    ("NaN", "POST", IMAGE,
     b'{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"FP32","data":[NaN,0,0,0]}]}',
     400, "NaN"),
    ("Infinity", "POST", IMAGE,
     b'{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"FP32","data":[0,-Infinity,0,0]}]}',
     400, "Infinity at char"),
    ("number beyond a double", "POST", IMAGE,
     b'{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"FP32","data":[0,1e999,0,0]}]}',
     400, "not valid JSON"),
    ("too many rows", "POST", IMAGE, infer_image(33), 400, "at most 32"),
    ("unknown output", "POST", IMAGE, {**infer_image(1), "outputs": [{"name": "x"}]}, 400,
     "not an output"),
    ("empty id", "POST", IMAGE, {**infer_image(1), "id": ""}, 400, "id: must be a non-empty"),
    ("negative timeout", "POST", IMAGE, {**infer_image(1), "parameters": {"timeout_ms": -5}},
     400, "timeout_ms"),
    ("timeout over the maximum", "POST", IMAGE,
     {**infer_image(1), "parameters": {"timeout_ms": 10**9}}, 400, "timeout_ms"),
    ("huge body", "POST", IMAGE, b"[" + b"0," * 200_000 + b"0]", 413, "AXON_MAX_BODY_BYTES"),
    ("huge chunked body", "POST", IMAGE, chunks, 413, "AXON_MAX_BODY_BYTES"),
    ("unknown model", "POST", "/v2/models/nope/infer", infer_image(1), 404, "'nope'"),
    ("unknown version", "POST", f"/v2/models/{CLASSIFIER}/versions/9/infer", infer_image(1),
     404, "no version '9'"),
    ("bad version", "GET", f"/v2/models/{CLASSIFIER}/versions/abc", None, 404,
     "positive integer"),
    ("unknown route", "GET", "/v3/whatever", None, 404, "no such route"),
    ("wrong method", "GET", IMAGE, None, 405, "Method Not Allowed"),
    ("negative horizon", "POST", FORECAST, {"history": HISTORY, "horizon": -1}, 400,
     "horizon: -1 is outside"),
    ("huge horizon", "POST", FORECAST, {"history": HISTORY, "horizon": 10_000}, 400,
     "horizon: 10000 is outside"),
    ("empty history", "POST", FORECAST, {"history": []}, 400, "history"),
    ("2-d history", "POST", FORECAST, {"history": [[1.0]]}, 400, "flat list"),
    ("history and histories", "POST", FORECAST, {"history": HISTORY, "histories": [HISTORY]},
     400, "exactly one of"),
    ("history over max_history", "POST", FORECAST, {"history": [1.0] * 65}, 400,
     "at most 64"),
    ("zero count", "POST", GENERATE, {"count": 0}, 400, "count: 0 is outside"),
    ("huge count", "POST", GENERATE, {"count": 10**6}, 400, "count: 1000000 is outside"),
    ("count over max rows", "POST", GENERATE, {"count": 33}, 400, "count: 33 is outside 1..32"),
    ("negative seed", "POST", GENERATE, {"seed": -1}, 400, "seed"),
    ("label out of range", "POST", GENERATE, {"label": 3}, 400, "label: 3 is outside 0..2"),
    ("bad format", "POST", GENERATE, {"format": "gif"}, 400, "format"),
    ("png not base64", "POST", CLASSIFY, {"png": ["%%%"]}, 400, "png[0]: not valid base64"),
    ("png not an image", "POST", CLASSIFY, {"png": ["aGVsbG8="]}, 400, "not a readable image"),
    ("images and png", "POST", CLASSIFY, {"png": ["x"], "images": [[[1.0]]]}, 400, "not both"),
    ("task mismatch", "POST", f"/v1/models/{FORECASTER}/classify", {"images": [[1.0]]}, 400,
     "does a forecast task"),
    ("bad top_k", "POST", CLASSIFY, {"images": infer_image(1)["inputs"][0]["data"], "top_k": 0},
     400, "top_k"),
    ("bad task version", "POST", CLASSIFY, {"images": [[[1.0]]], "version": True}, 400,
     "version: must be an integer"),
]  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(
        tmp_path_factory.mktemp("bad"), ENV, serve=[CLASSIFIER, FORECASTER, GENERATOR]
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request(
    gateway: Stack, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    http = gateway.client
    if callable(body):
        response = http.request(method, path, content=body(400_000))
    elif isinstance(body, bytes):
        response = http.request(method, path, content=body)
    elif body is None:
        response = http.request(method, path)
    else:
        response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"], response.json()
    assert "Traceback" not in response.text


def test_timeout_header_must_be_a_number(gateway: Stack) -> None:
    response = gateway.client.post(IMAGE, json=infer_image(1), headers={"X-Axon-Timeout-Ms": "x"})
    assert response.status_code == 400
    assert "X-Axon-Timeout-Ms" in response.json()["error"]


def test_still_healthy_after_bad_requests(gateway: Stack) -> None:
    http = gateway.client
    assert http.post(IMAGE, content=b"{").status_code == 400
    assert http.post(IMAGE, content=b"[" + b"0," * 200_000 + b"0]").status_code == 413
    assert http.get("/healthz/ready").status_code == 200
    assert http.post(IMAGE, json=infer_image(32)).status_code == 200
    metrics = http.get("/metrics").text
    assert f'axon_rejected_total{{model="{CLASSIFIER}",reason="invalid"}}' in metrics
    assert 'reason="too_large"' in metrics


def test_a_request_the_model_cannot_run_is_500_naming_the_failure(gateway: Stack) -> None:
    """The poison classifier fails in ONNX Runtime for pixel (0, 0) >= 17; the model's
    declared range does not forbid it, so the worker's run fails: 500, the gateway's
    message says so, and the next request is served."""
    poison = tensor(data=[17.0, 0.0, 0.0, 0.0])
    response = gateway.client.post(IMAGE, json=poison)
    assert response.status_code == 500, response.text
    assert "Traceback" not in response.text
    assert gateway.client.post(IMAGE, json=infer_image(1)).status_code == 200
