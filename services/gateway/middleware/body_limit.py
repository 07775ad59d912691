"""Refuse bodies over ``AXON_MAX_BODY_BYTES`` with 413: at once from Content-Length,
else while the body streams in (chunked uploads). ``edge.Edge`` applies it."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from services.gateway.errors import PayloadTooLargeError
from services.gateway.responses import error_response


class BodyLimit:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.message = (
            f"request body over {max_bytes} bytes (AXON_MAX_BODY_BYTES); "
            "send fewer rows per request"
        )

    def admit(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        """(413 response, ``receive``) when the request's Content-Length is over the
        limit; else (None, the ``receive`` to read the body with): ``receive`` itself
        under a Content-Length the limit allows (the server hands the app exactly that
        many bytes), else ``limited(receive)`` (a chunked upload)."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    return None, self.limited(receive)
                return (error_response(413, self.message) if too_large else None), receive
        return None, self.limited(receive)

    def limited(self, receive: Receive) -> Receive:
        """``receive`` that raises ``PayloadTooLargeError`` (413) once the body read so
        far is over the limit (a chunked upload, or more than its Content-Length)."""
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            incoming = await receive()
            if incoming["type"] == "http.request":
                seen += len(incoming.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLargeError(self.message)
            return incoming

        return limited_receive
