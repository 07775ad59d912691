"""The gateway's routing: one route table, one route class, one error mapping.

``DirectRoute`` is a Starlette ``Route`` whose endpoint (``async def endpoint(request)
-> Response``) is called directly: Starlette's ``Route`` wraps each endpoint in
``request_response``, which builds a second ``Request`` and a second exception wrapper
inside the one ``ExceptionMiddleware`` already puts around the router; errors raised
here propagate to it and are mapped there by the app's handlers.

A route of the table can be declared ``hot=True`` (the infer routes). ``HotRoutes``, the
innermost middleware, tries the hot routes first with the routes' own ``matches`` and
calls their endpoint before ``ExceptionMiddleware`` and the router, mapping an error
with the app's own handler table (the same mapping object the app registers). Anything
else, including a hot path with another method (405), goes on to the router unchanged.
Measured: docs/decisions.md, "One router".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


_LAST_RESORT = (Exception, BaseException)
"""Handlers Starlette runs in ``ServerErrorMiddleware``, not ``ExceptionMiddleware``."""


class DirectRoute(Route):
    """``Route(path, endpoint, methods=…)`` without ``request_response``'s wrapper;
    ``hot`` routes are also served by ``HotRoutes``."""

    def __init__(
        self, path: str, endpoint: Endpoint, *, methods: Sequence[str], hot: bool = False
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.hot = hot

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app


class HotRoutes:
    """Serve the table's ``hot`` routes ahead of the router (see the module docstring).

    ``handlers`` is the app's exception-handler table (exception class → handler); an
    error is mapped by the handler of the nearest class in its MRO, as Starlette's
    ``ExceptionMiddleware`` does; one with no handler below ``Exception`` propagates to
    ``ServerErrorMiddleware`` (the app's last-resort 500), as from any other route.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        handlers: Mapping[type[BaseException], ErrorHandler],
    ) -> None:
        self.app = app
        self.routes = [r for r in routes if isinstance(r, DirectRoute) and r.hot]
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    scope["route"] = route  # as Starlette's router does (http.route)
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
        except Exception as exc:
            handler = next(
                (
                    self.handlers[c]
                    for c in type(exc).__mro__
                    if c in self.handlers and c not in _LAST_RESORT
                ),
                None,
            )
            if handler is None:  # unexpected: Starlette's last-resort path, as for any route
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
