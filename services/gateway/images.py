"""PNG ↔ pixel arrays for the task endpoints (pure, Pillow only)."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.gateway.errors import BadRequestError

MAX_PNG_PIXELS = 4096 * 4096


def png_to_pixels(
    encoded: str, *, channels: int, height: int, width: int, value_range: Sequence[float],
    where: str,
) -> np.ndarray[Any, Any]:  # fmt: skip
    """A base64 PNG (or any Pillow-readable image) → [C, H, W] float32 in ``value_range``:
    converted to grey or RGB, resized to the model's size, 0..255 mapped onto the range."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{where}: not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PNG_PIXELS:
                raise BadRequestError(f"{where}: image of {image.width}x{image.height} is too big")
            converted = image.convert("L" if channels == 1 else "RGB").resize(
                (width, height), Image.Resampling.BILINEAR
            )
            pixels = np.asarray(converted, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequestError(f"{where}: not a readable image ({exc})") from None
    pixels = pixels[None, :, :] if channels == 1 else pixels.transpose(2, 0, 1)
    lo, hi = float(value_range[0]), float(value_range[1])
    return (lo + pixels / 255.0 * (hi - lo)).astype(np.float32)


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
