"""JSON responses of the gateway (compact, no NaN), the binary tensor data response (JSON
header + raw tensor bytes) and the ``{"error": ...}`` body."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


class FastJSON(JSON):
    """``JSON`` rendered with orjson (several times faster on float lists). orjson writes
    NaN and infinities as ``null``; so that a response never silently carries them,
    ``finite`` lists the float arrays the content was built from, checked when the
    rendered body holds a ``null``: a non-finite value raises ``ValueError`` as ``JSON``
    does."""

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        finite: Iterable[np.ndarray[Any, Any]] = (),
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, background=background)
        check_finite(finite, self.body)

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def check_finite(arrays: Iterable[np.ndarray[Any, Any]], rendered: bytes | memoryview) -> None:
    """``ValueError`` (a 500, as ``json.dumps``) if a float array sent as JSON in
    ``rendered`` (orjson's output) holds NaN or an infinity. orjson writes those as
    ``null``, so a body without one has none and the arrays are not looked at (a numpy
    call per array, ~1 µs each, saved on nearly every response)."""
    if b"null" not in rendered:
        return
    for array in arrays:
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise ValueError("Out of range float values are not JSON compliant")


class BinaryTensors(Response):
    """An OIP response with binary tensor data (the binary tensor data extension):
    ``header`` as JSON (orjson), then the raw bytes of ``raw`` (arrays in output
    order, each its buffer as is: no copy before the body's), with
    ``Inference-Header-Content-Length`` giving the JSON's length. ``finite`` lists the
    float arrays sent as JSON in ``header`` (checked as ``FastJSON`` checks); raw bytes
    may be any value, NaN included."""

    media_type = "application/octet-stream"

    def __init__(
        self,
        header: Mapping[str, Any],
        raw: Iterable[np.ndarray[Any, Any]],
        *,
        finite: Iterable[np.ndarray[Any, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        head = orjson.dumps(header)
        check_finite(finite, head)
        body = b"".join([head, *(array.data for array in raw)])
        extra = {**(headers or {}), "inference-header-content-length": str(len(head))}
        super().__init__(body, 200, extra)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSON:
    return JSON({"error": message}, status_code=status, headers=headers)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """True when an ``If-None-Match`` header names ``etag`` (weak or strong) or ``*``:
    the static files (Swagger UI, the console) then answer 304."""
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
