"""Optional API keys (``AXON_API_KEYS``): ``Authorization: Bearer KEY`` or
``X-API-Key: KEY`` (HTTP headers here; the same gRPC metadata in ``grpc_service``); 401
otherwise. Compared in constant time against every key.
Health, metrics and the API docs stay open."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.responses import error_response

OPEN_PATHS = ("/v2/health/", "/healthz/", "/metrics", "/docs", "/openapi.json")


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or scope["path"].startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        if self._allowed(_presented(scope)):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, presented: bytes | None) -> bool:
        return key_allowed(presented, self._keys)


def key_allowed(presented: bytes | None, keys: Sequence[bytes]) -> bool:
    """Whether ``presented`` is one of ``keys``, compared in constant time against every
    key (HTTP and gRPC share it)."""
    if presented is None:
        return False
    matched = False
    for key in keys:  # no early exit: time does not depend on which key matched
        matched |= hmac.compare_digest(presented, key)
    return matched


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (lower-case
    names, as ASGI and gRPC metadata give them), else None."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:].strip())
        if name == b"x-api-key":
            return bytes(value.strip())
    return None


def _presented(scope: Scope) -> bytes | None:
    return presented_key(scope["headers"])
