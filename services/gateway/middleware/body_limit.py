"""Refuse bodies over ``AXON_MAX_BODY_BYTES`` with 413: at once from Content-Length,
else while the body streams in (chunked uploads). ``edge.Edge`` applies it."""

from __future__ import annotations

from typing import NamedTuple

from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from services.gateway.errors import PayloadTooLargeError
from services.gateway.responses import error_response


class Admission(NamedTuple):
    """What ``BodyLimit.admit`` decided for a request."""

    refusal: Response | None
    """413 when the Content-Length is over the limit, else None."""
    receive: Receive
    """The ``receive`` to read the body with."""
    size: int
    """Bytes the request may bring, what ``inflight_bytes.ByteBudget`` reserves: its
    Content-Length; the limit for a chunked body (or an unreadable Content-Length); 0
    without a body."""


class BodyLimit:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.message = (
            f"request body over {max_bytes} bytes (AXON_MAX_BODY_BYTES); "
            "send fewer rows per request"
        )

    def admit(self, scope: Scope, receive: Receive) -> Admission:
        """One pass over the headers. Under a Content-Length the limit allows the body is
        read with ``receive`` itself (the server hands the app exactly that many bytes);
        otherwise (a chunked upload) with ``limited(receive)``."""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = max(int(value), 0)
                except ValueError:
                    return Admission(None, self.limited(receive), self.max_bytes)
                if length > self.max_bytes:
                    return Admission(error_response(413, self.message), receive, 0)
                return Admission(None, receive, length)
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        return Admission(None, self.limited(receive), self.max_bytes if chunked else 0)

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
