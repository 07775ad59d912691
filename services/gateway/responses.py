"""JSON responses of the gateway (compact, no NaN) and the ``{"error": ...}`` body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSON:
    return JSON({"error": message}, status_code=status, headers=headers)
