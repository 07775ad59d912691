"""The client's errors: a gateway answer other than success (``AxonHTTPError``, with the
status and the gateway's ``{"error": "…"}`` message), or a body that is not what the
protocol says (``codec.ResponseFormatError``). Network failures stay httpx's own
(``httpx.TransportError``, ``httpx.TimeoutException``)."""

from __future__ import annotations

import json

from .retry import parse_retry_after


class AxonHTTPError(Exception):
    """The gateway answered ``status`` (after any retries); ``message`` is its ``error``
    field (the field that is wrong and why), else the start of the body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        method: str = "",
        path: str = "",
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        where = f" {method} {path}" if method or path else ""
        super().__init__(f"{status}{where}: {message}")
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        self.retry_after_s = retry_after_s
        """The answer's ``Retry-After`` in seconds (429, some 503), else None."""
        self.request_id = request_id
        """The gateway's ``X-Request-ID`` of the request: the key to its log lines."""


def error_message(content: bytes) -> str:
    """The ``error`` of a gateway error body, else the body's first 200 characters."""
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        doc = None
    message = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(message, str):
        return message
    text = content[:200].decode("utf-8", errors="replace").strip()
    return text or "(empty body)"


def http_error(
    status: int,
    content: bytes,
    *,
    method: str,
    path: str,
    retry_after: str | None = None,
    request_id: str | None = None,
) -> AxonHTTPError:
    return AxonHTTPError(
        status,
        error_message(content),
        method=method,
        path=path,
        retry_after_s=parse_retry_after(retry_after),
        request_id=request_id,
    )
