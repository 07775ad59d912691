"""Refuse bodies over ``AXON_MAX_BODY_BYTES`` with 413: at once from Content-Length,
else while the body streams in (chunked uploads)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import PayloadTooLargeError
from services.gateway.responses import error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"request body over {self.max_bytes} bytes (AXON_MAX_BODY_BYTES); "
            "send fewer rows per request"
        )
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await error_response(413, message)(scope, receive, send)
                    return
                break
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            incoming = await receive()
            if incoming["type"] == "http.request":
                seen += len(incoming.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLargeError(message)
            return incoming

        await self.app(scope, limited_receive, send)
