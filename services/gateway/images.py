"""PNG ↔ pixel arrays for the task endpoints (pure, Pillow only).

Sizes are checked before a single pixel is decompressed: each image's width × height
comes from its header (a PNG's IHDR, else Pillow's lazy ``Image.open``) and must be
within ``PixelLimits.per_image`` (``AXON_MAX_IMAGE_PIXELS``), and their sum within
``PixelLimits.per_request`` (``AXON_MAX_REQUEST_PIXELS``); either refusal is a 413 that
names the setting. Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``,
``DecompressionBombError``, or ``DecompressionBombWarning`` where warnings are errors)
is answered with the same 413, never a 500.

Everything here is CPU-bound (a 4096×4096 RGB PNG takes ~0.2 s to decode): the routes
run it in the gateway's image thread pool, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.gateway.errors import BadRequestError, PayloadTooLargeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error)
"""What Pillow raises on a corrupt or truncated image."""
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@dataclass(frozen=True)
class PixelLimits:
    """Width × height allowed for one image and for all the images of one request."""

    per_image: int
    per_request: int


def png_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG's IHDR chunk; None when ``raw`` is not a PNG."""
    if len(raw) < 24 or raw[:8] != PNG_SIGNATURE or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return int(width), int(height)


def check_image_pixels(size: tuple[int, int], limit: int, where: str) -> None:
    """413 when one image's width × height is over ``limit`` (AXON_MAX_IMAGE_PIXELS)."""
    width, height = size
    if width * height > limit:
        raise PayloadTooLargeError(
            f"{where}: {width}x{height} image ({width * height} pixels) is over the limit of "
            f"{limit} pixels per image (AXON_MAX_IMAGE_PIXELS); resize it before sending"
        )


def check_request_pixels(sizes: Sequence[tuple[int, int]], limit: int, where: str) -> None:
    """413 when the images' width × height summed is over ``limit`` (AXON_MAX_REQUEST_PIXELS)."""
    total = sum(width * height for width, height in sizes)
    if total > limit:
        raise PayloadTooLargeError(
            f"{where}: {len(sizes)} images of {total} pixels in all, over the limit of {limit} "
            "pixels per request (AXON_MAX_REQUEST_PIXELS); send fewer or smaller images "
            "per request"
        )


def open_image(encoded: str, limit: int, where: str) -> Image.Image:
    """A base64 image opened lazily (header read, nothing decoded), within ``limit`` pixels.

    400 for bad base64 or an unreadable header; 413 for an image over ``limit`` or over
    Pillow's decompression-bomb limit. The caller closes the image.
    """
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{where}: not valid base64") from None
    declared = png_size(raw)
    if declared is not None:
        check_image_pixels(declared, limit, where)
    try:
        image = Image.open(io.BytesIO(raw))
    except _BOMB as exc:
        raise PayloadTooLargeError(
            f"{where}: image too large to decode safely ({exc}); at most {limit} pixels per "
            "image (AXON_MAX_IMAGE_PIXELS): resize it before sending"
        ) from None
    except _UNREADABLE as exc:
        raise BadRequestError(f"{where}: not a readable image ({exc})") from None
    try:
        check_image_pixels(image.size, limit, where)
    except PayloadTooLargeError:
        image.close()
        raise
    return image


def image_to_pixels(
    image: Image.Image, *, channels: int, height: int, width: int, value_range: Sequence[float],
    where: str,
) -> np.ndarray[Any, Any]:  # fmt: skip
    """An opened image → [C, H, W] float32 in ``value_range``: decoded, converted to grey
    or RGB, resized to the model's size, 0..255 mapped onto the range."""
    try:
        converted = image.convert("L" if channels == 1 else "RGB").resize(
            (width, height), Image.Resampling.BILINEAR
        )
        pixels = np.asarray(converted, dtype=np.float32)
    except _BOMB as exc:
        raise PayloadTooLargeError(f"{where}: image too large to decode safely ({exc})") from None
    except _UNREADABLE as exc:
        raise BadRequestError(f"{where}: not a readable image ({exc})") from None
    pixels = pixels[None, :, :] if channels == 1 else pixels.transpose(2, 0, 1)
    lo, hi = float(value_range[0]), float(value_range[1])
    return (lo + pixels / 255.0 * (hi - lo)).astype(np.float32)


def pngs_to_pixels(
    encoded: Sequence[str], *, channels: int, height: int, width: int,
    value_range: Sequence[float], limits: PixelLimits, field: str = "png",
) -> np.ndarray[Any, Any]:  # fmt: skip
    """Base64 PNGs (or any Pillow-readable images) → [N, C, H, W] float32.

    Every header is read and every limit checked before the first image is decoded; each
    image is closed as soon as it is resized, so one decoded image at a time is in memory.
    """
    with contextlib.ExitStack() as stack:
        images = []
        for i, item in enumerate(encoded):
            images.append(stack.enter_context(open_image(item, limits.per_image, f"{field}[{i}]")))
        check_request_pixels([image.size for image in images], limits.per_request, field)
        rows = []
        for i, image in enumerate(images):
            rows.append(
                image_to_pixels(image, channels=channels, height=height, width=width,
                                value_range=value_range, where=f"{field}[{i}]")
            )  # fmt: skip
            image.close()  # frees its decoded pixels now (closing again on exit is a no-op)
        return np.stack(rows)


def pixels_to_png(image: np.ndarray[Any, Any], value_range: Sequence[float]) -> str:
    """[C, H, W] in ``value_range`` → base64 PNG (grey for C = 1, RGB for C = 3)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).round().astype(np.uint8)
    if scaled.shape[0] == 1:
        picture = Image.fromarray(scaled[0])
    else:
        picture = Image.fromarray(np.ascontiguousarray(scaled.transpose(1, 2, 0)[:, :, :3]))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pixels_to_pngs(images: np.ndarray[Any, Any], value_range: Sequence[float]) -> list[str]:
    """[N, C, H, W] → N base64 PNGs."""
    return [pixels_to_png(image, value_range) for image in images]
