"""The gateway's one route class: a Starlette ``Route`` whose endpoint is called
directly, ``async def endpoint(request) -> Response``.

Starlette's ``Route`` wraps each endpoint in ``request_response``, which builds a second
``Request`` and a second exception-handling wrapper (with its own ``send`` hop) inside
the one ``ExceptionMiddleware`` already puts around the router. The gateway's handlers
are all async and its error mapping is registered once on the app (``app._error``), so
that inner wrapper only repeats the outer one: errors raised here propagate to
``ExceptionMiddleware`` and are mapped there, exactly as before. Matching, 404 and 405
stay the router's. Measured: docs/decisions.md, "One router".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoute(Route):
    """``Route(path, endpoint, methods=…)`` without ``request_response``'s wrapper."""

    def __init__(self, path: str, endpoint: Endpoint, *, methods: Sequence[str]) -> None:
        super().__init__(path, endpoint, methods=list(methods))

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app
