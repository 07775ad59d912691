"""API keys, body size limit and rows limit, through a real gateway and real workers."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.chaos.harness import raw_connection, read_until_closed
from tests.e2e.payloads import history, infer_image
from tests.security.conftest import SecurityStack

KEYS = ("first-key-0123456789", "second-key-abcdefgh")
MAX_BODY = 64 * 1024
MAX_ROWS = 8


@pytest.fixture(scope="module")
def guarded(stack: SecurityStack) -> str:
    gw = stack.gateway(
        "sec-guarded",
        api_keys=",".join(KEYS),
        max_body_bytes=str(MAX_BODY),
        max_rows=str(MAX_ROWS),
    )
    return gw.url


def _post(url: str, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=30)


INFER = "/v2/models/digits-cnn/infer"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key-0123456789"},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {KEYS[0]}"},
        {"X-API-Key": KEYS[0][:-1]},
        {"X-API-Key": KEYS[0] + "x"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "wrong-bearer", "basic", "prefix", "longer", "empty"],
)
def test_refused_without_a_valid_key(guarded: str, headers: dict[str, str]) -> None:
    for method, path in (
        ("POST", INFER),
        ("GET", "/v1/models"),
        ("GET", "/v2/models/stats"),
        ("POST", "/v1/models/digits-cnn/classify"),
        ("GET", "/v2/models/digits-cnn"),
    ):
        response = httpx.request(
            method, guarded + path, json=infer_image(1), headers=headers, timeout=30
        )
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]


@pytest.mark.parametrize("key", KEYS)
def test_every_key_works_both_ways(guarded: str, key: str) -> None:
    assert _post(guarded, INFER, infer_image(1), **{"X-API-Key": key}).status_code == 200
    response = _post(guarded, INFER, infer_image(1), Authorization=f"Bearer {key}")
    assert response.status_code == 200, response.text


def test_health_metrics_docs_stay_open(guarded: str) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(guarded + path, timeout=30).status_code == 200, path


def test_body_over_the_limit_is_413(guarded: str) -> None:
    auth = {"X-API-Key": KEYS[0]}
    big = b'{"inputs": [' + b" " * MAX_BODY + b"]}"
    response = httpx.post(guarded + INFER, content=big, headers=auth, timeout=30)
    assert response.status_code == 413, response.text
    assert "AXON_MAX_BODY_BYTES" in response.json()["error"]

    def chunks() -> object:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    chunked = httpx.post(guarded + INFER, content=chunks(), headers=auth, timeout=30)  # type: ignore[arg-type]
    assert chunked.status_code == 413, chunked.text
    # Just under the limit is parsed (and refused as JSON, not as size).
    small = b" " * (MAX_BODY - 10) + b"{}"
    assert httpx.post(guarded + INFER, content=small, headers=auth, timeout=30).status_code == 400


def test_rows_limit(guarded: str) -> None:
    auth = {"X-API-Key": KEYS[0]}
    assert _post(guarded, INFER, infer_image(MAX_ROWS), **auth).status_code == 200
    over = _post(guarded, INFER, infer_image(MAX_ROWS + 1), **auth)
    assert over.status_code == 400 and "AXON_MAX_ROWS" in over.json()["error"], over.text
    images = infer_image(MAX_ROWS + 1)["inputs"][0]["data"]
    classify = _post(guarded, "/v1/models/digits-cnn/classify", {"images": images}, **auth)
    assert classify.status_code == 400, classify.text
    histories = {"histories": [history(12)] * (MAX_ROWS + 1)}
    forecast = _post(guarded, "/v1/models/sunspots-lstm/forecast", histories, **auth)
    assert forecast.status_code == 400, forecast.text
    generate = _post(guarded, "/v1/models/digits-gan/generate", {"count": MAX_ROWS + 1}, **auth)
    assert generate.status_code == 400, generate.text
    assert httpx.get(guarded + "/v2/health/ready", timeout=30).status_code == 200


def test_a_body_cannot_pass_the_limit_by_misstating_its_length(guarded: str) -> None:
    """The edge layer reads a body under an allowed Content-Length without counting it
    (``body_limit.BodyLimit.admit``), so the HTTP parser must never hand the app more
    than that. Content-Length with Transfer-Encoding (either order) is a 400 before the
    app runs; bytes past a Content-Length are the next request (refused as malformed),
    never a body over the limit."""
    port = urlsplit(guarded).port
    assert port is not None
    big = b" " * (2 * MAX_BODY)
    chunked = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(big[i : i + 8192]), big[i : i + 8192])
            for i in range(0, len(big), 8192)
        )
        + b"0\r\n\r\n"
    )
    start = f"POST {INFER} HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {KEYS[0]}\r\n"
    for framing in (
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
    ):
        sock = raw_connection(port, (start + framing + "\r\n").encode() + chunked)
        data, closed_after = read_until_closed(sock, 30)
        sock.close()
        assert closed_after is not None and data.startswith(b"HTTP/1.1 400 "), data[:200]
        assert b"AXON_MAX_BODY_BYTES" not in data
    sock = raw_connection(port, (start + "Content-Length: 2\r\n\r\n{}").encode() + big)
    data, closed_after = read_until_closed(sock, 30)
    sock.close()
    assert closed_after is not None and data.startswith(b"HTTP/1.1 4"), data[:200]
    assert b"AXON_MAX_BODY_BYTES" not in data and b" 413 " not in data
