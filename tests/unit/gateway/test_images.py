"""images.py: sizes read from headers and checked before any decoding; bombs are 413."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.contract.errors import SettingsError
from services.gateway.errors import BadRequestError, PayloadTooLargeError, status_for
from services.gateway.images import (
    PixelLimits,
    check_request_pixels,
    open_image,
    pixels_to_pngs,
    png_size,
    pngs_to_pixels,
)
from services.gateway.settings import GatewaySettings

ROOMY = PixelLimits(per_image=4096 * 4096, per_request=64 * 1024 * 1024)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _png(width: int, height: int, value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A grey PNG declaring ``width``×``height`` whose pixel data is garbage: decoding it
    would fail (400), so a 413 proves the size was refused before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"not zlib at all")
        + _chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP declaring ``width``×``height`` (no pixel data: only Pillow's lazy
    open reads it, so its bomb check is what answers)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def test_png_size_reads_the_ihdr() -> None:
    assert png_size(_png(30, 20)) == (30, 20)
    assert png_size(header_only_png(20_000, 20_000)) == (20_000, 20_000)
    assert png_size(b"GIF89a" + b"\x00" * 30) is None
    assert png_size(b"\x89PNG") is None


def test_oversized_png_is_413_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        open_image(_b64(header_only_png(20_000, 20_000)), ROOMY.per_image, "png[0]")
    message = str(info.value)
    assert "png[0]: 20000x20000 image (400000000 pixels)" in message
    assert "AXON_MAX_IMAGE_PIXELS" in message
    assert status_for(info.value) == 413


@pytest.mark.parametrize("side", [20_000, 10_000], ids=["bomb-error", "bomb-warning"])
def test_pillow_bomb_checks_become_413(side: int) -> None:
    # Not a PNG, so only Pillow's own check sees the size: over 2 × MAX_IMAGE_PIXELS it
    # raises DecompressionBombError; over MAX_IMAGE_PIXELS it warns (an error here: the
    # test suite turns warnings into errors).
    assert Image.MAX_IMAGE_PIXELS is not None and side * side > Image.MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLargeError) as info:
        open_image(_b64(bmp_header(side, side)), side * side, "png[3]")
    assert "png[3]: image too large to decode safely" in str(info.value)
    assert "AXON_MAX_IMAGE_PIXELS" in str(info.value)


def test_bmp_within_pillow_limit_is_checked_against_ours() -> None:
    with pytest.raises(PayloadTooLargeError, match=r"3000x3000 image \(9000000 pixels\)"):
        open_image(_b64(bmp_header(3000, 3000)), 1_000_000, "png[0]")


def test_request_budget_is_checked_before_any_decoding() -> None:
    limits = PixelLimits(per_image=100 * 100, per_request=3 * 100 * 100)
    garbage = [_b64(header_only_png(100, 100))] * 4
    with pytest.raises(PayloadTooLargeError) as info:
        pngs_to_pixels(garbage, channels=1, height=8, width=8, value_range=[0, 1], limits=limits)
    assert "png: 4 images of 40000 pixels in all" in str(info.value)
    assert "AXON_MAX_REQUEST_PIXELS" in str(info.value)
    # Within the budget the same images are decoded, and fail as unreadable (400).
    with pytest.raises(BadRequestError, match=r"png\[0\]: not a readable image"):
        pngs_to_pixels(
            garbage[:3], channels=1, height=8, width=8, value_range=[0, 1], limits=limits
        )


def test_check_request_pixels_boundary() -> None:
    check_request_pixels([(10, 10), (5, 20)], 200, "png")
    with pytest.raises(PayloadTooLargeError):
        check_request_pixels([(10, 10), (5, 20), (1, 1)], 200, "png")


@pytest.mark.parametrize(
    ("encoded", "fragment"),
    [
        ("%%%", "png[0]: not valid base64"),
        (_b64(b"hello"), "png[0]: not a readable image"),
        (_b64(_png(64, 64, 7)[:60]), "png[0]: not a readable image"),
    ],
    ids=["base64", "not-an-image", "truncated"],
)
def test_unreadable_is_400(encoded: str, fragment: str) -> None:
    with pytest.raises(BadRequestError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pngs_to_pixels([encoded], channels=1, height=8, width=8, value_range=[0, 1], limits=ROOMY)


def test_decodes_resizes_and_scales() -> None:
    pixels = pngs_to_pixels(
        [_b64(_png(32, 32, 255)), _b64(_png(16, 16, 0))],
        channels=1, height=8, width=8, value_range=[0, 16], limits=ROOMY,
    )  # fmt: skip
    assert pixels.shape == (2, 1, 8, 8) and pixels.dtype == np.float32
    assert np.allclose(pixels[0], 16.0) and np.allclose(pixels[1], 0.0)
    rgb = pngs_to_pixels(
        [_b64(_png(8, 8, 255))], channels=3, height=4, width=4, value_range=[-1, 1], limits=ROOMY
    )
    assert rgb.shape == (1, 3, 4, 4) and np.allclose(rgb, 1.0)


def test_pixels_to_pngs_round_trip() -> None:
    images = np.zeros((2, 1, 8, 8), dtype=np.float32)
    images[1] = 1.0
    encoded = pixels_to_pngs(images, [0, 1])
    back = pngs_to_pixels(encoded, channels=1, height=8, width=8, value_range=[0, 1], limits=ROOMY)
    assert np.array_equal(back, images)


def test_image_settings_defaults_and_parsing() -> None:
    base = {"AXON_REDIS_URL": "redis://127.0.0.1:1/0"}
    defaults = GatewaySettings.from_env(base)
    assert defaults.max_image_pixels == 4096 * 4096
    assert defaults.max_request_pixels == 64 * 1024 * 1024
    assert defaults.image_threads == 2
    custom = GatewaySettings.from_env(
        {
            **base,
            "AXON_MAX_IMAGE_PIXELS": "1000",
            "AXON_MAX_REQUEST_PIXELS": "5000",
            "AXON_IMAGE_THREADS": "4",
        }
    )
    assert (custom.max_image_pixels, custom.max_request_pixels, custom.image_threads) == (
        1000,
        5000,
        4,
    )
    for name in ("AXON_MAX_IMAGE_PIXELS", "AXON_MAX_REQUEST_PIXELS", "AXON_IMAGE_THREADS"):
        with pytest.raises(SettingsError, match=name):
            GatewaySettings.from_env({**base, name: "0"})
