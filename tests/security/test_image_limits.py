"""Hostile images against a real gateway (real Redis, real workers): decompression bombs
and oversized requests are refused with 413 naming the setting, before decoding; large
allowed images are decoded off the event loop, so health probes answer meanwhile."""

from __future__ import annotations

import base64
import functools
import io
import struct
import threading
import time
import zlib
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.chaos.harness import GatewayProc
from tests.security.conftest import SecurityStack

CLASSIFY = "/v1/models/digits-cnn/classify"
SIDE = 4096
DECODING_IMAGES = 24
"""4096×4096 grey PNGs in the request decoded while probes run (~0.1 s each here)."""
PROBES_MID_FLIGHT = 3
"""Probes answered in the middle half of the image request's flight (measured: ~40 on
a 2-core machine; with decoding on the event loop: none, since it spans that window)."""
PROBE_TIMEOUT_S = 2.0
"""The Kubernetes liveness probe's timeoutSeconds (k8s/base/gateway.yaml)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def bomb_png(side: int) -> bytes:
    """A real decompression bomb: a valid all-black ``side``×``side`` grey PNG (400 MB of
    pixels for 20000, a few hundred KB of PNG)."""
    deflate = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then black pixels
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def bmp_header(side: int) -> bytes:
    """A 24-bit BMP declaring ``side``×``side``: only Pillow's own bomb check sees its size."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def png(side: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, "PNG")
    return buffer.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def classify(url: str, images: list[bytes], timeout_s: float = 60.0) -> httpx.Response:
    return httpx.post(url + CLASSIFY, json={"png": [b64(i) for i in images]}, timeout=timeout_s)


def error_of(response: httpx.Response) -> str:
    message: Any = response.json()["error"]
    return str(message)


@pytest.fixture(scope="module")
def small_gw(stack: SecurityStack) -> GatewayProc:
    return stack.gateway("sec-img-small", max_image_pixels="500000", max_request_pixels="1000000")


@pytest.fixture(scope="module")
def big_gw(stack: SecurityStack) -> GatewayProc:
    """Default per-image limit; a request budget that allows DECODING_IMAGES; one thread."""
    budget = DECODING_IMAGES * SIDE * SIDE
    return stack.gateway("sec-img-big", max_request_pixels=str(budget), image_threads="1")


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(lambda: bomb_png(20_000), id="png-20000-bomb"),
        pytest.param(lambda: bomb_png(10_000), id="png-10000-over-pillow-warning"),
        pytest.param(lambda: bmp_header(20_000), id="bmp-20000-pillow-error"),
        pytest.param(lambda: bmp_header(10_000), id="bmp-10000-pillow-warning"),
    ],
)
def test_bombs_are_413_naming_the_setting(big_gw: GatewayProc, image: Any) -> None:
    response = classify(big_gw.url, [png(8), image()])
    assert response.status_code == 413, response.text
    assert error_of(response).startswith("png[1]: ")
    assert "AXON_MAX_IMAGE_PIXELS" in error_of(response)
    assert httpx.get(big_gw.url + "/v2/health/live", timeout=10).status_code == 200


def test_request_pixel_budget(small_gw: GatewayProc) -> None:
    over = classify(small_gw.url, [png(512)] * 4)  # 4 × 262144 > 1000000
    assert over.status_code == 413, over.text
    assert "4 images of 1048576 pixels in all" in error_of(over)
    assert "AXON_MAX_REQUEST_PIXELS" in error_of(over)
    within = classify(small_gw.url, [png(512)] * 3)
    assert within.status_code == 200, within.text
    assert len(within.json()["predictions"]) == 3
    one_too_big = classify(small_gw.url, [png(1024)])
    assert one_too_big.status_code == 413, one_too_big.text
    assert "1024x1024 image (1048576 pixels)" in error_of(one_too_big)
    assert "AXON_MAX_IMAGE_PIXELS" in error_of(one_too_big)


def test_health_answers_while_large_images_decode(big_gw: GatewayProc) -> None:
    images = [png(SIDE, value) for value in range(DECODING_IMAGES)]
    outcome: dict[str, Any] = {}

    def send() -> None:
        outcome["response"] = classify(big_gw.url, images, timeout_s=300)
        outcome["finished"] = time.monotonic()

    sender = threading.Thread(target=send)
    probes: list[tuple[float, float]] = []  # (sent, answered)
    with httpx.Client(base_url=big_gw.url, timeout=30) as client:
        started = time.monotonic()
        sender.start()
        while sender.is_alive():
            sent = time.monotonic()
            assert client.get("/v2/health/live").status_code == 200
            probes.append((sent, time.monotonic()))
            time.sleep(0.02)
    sender.join()
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == DECODING_IMAGES
    flight = outcome["finished"] - started
    mid = [a for _, a in probes if started + flight / 4 < a < started + 3 * flight / 4]
    assert len(mid) >= PROBES_MID_FLIGHT, (
        f"{len(mid)} probes answered in the middle of a {flight:.1f} s request of "
        f"{DECODING_IMAGES} large images: is decoding blocking the event loop?"
    )
    slowest = max(a - s for s, a in probes if a < outcome["finished"])
    assert slowest < PROBE_TIMEOUT_S, f"a probe took {slowest:.2f} s during decoding"
