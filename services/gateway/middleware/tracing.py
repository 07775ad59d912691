"""The SERVER span of every HTTP request (installed only while tracing is on;
``services.gateway.spans``): its parent is the client's ``traceparent`` when it sent
one, it is the current span while the request is handled (the dispatcher's spans and
the log lines of the request carry its trace id), and it ends with the response's
status, the matched route template (``http.route``) and the model version."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contract.tracing import Tracing
from services.gateway.spans import ServerSpan, http_attributes


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        span = ServerSpan(
            self.tracing,
            method,
            self.tracing.extract_headers(scope["headers"]),
            http_attributes(scope),
        )
        status = 500
        error: BaseException | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            state = scope.get("state", {})
            route = getattr(scope.get("route"), "path", None)
            attributes: dict[str, str | int] = {"http.response.status_code": status}
            if route:
                attributes["http.route"] = route
            if state.get("request_id"):
                attributes["axon.request_id"] = state["request_id"]
            if state.get("model"):
                attributes["axon.model"] = state["model"]
                attributes["axon.version"] = int(state.get("version") or 0)
            span.finish(
                status, attributes, name=f"{method} {route}" if route else None, error=error
            )
