"""Count every HTTP response in ``axon_requests_total`` / ``axon_request_duration_seconds``
(and refusals in ``axon_rejected_total``) with the labels the route left in
``scope["state"]`` (``protocol="http"``; ``metrics.RequestRecorder``)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contract.tracing import current_exemplar
from services.gateway.metrics import RequestRecorder


class MetricsMiddleware:
    """``exemplars``: tracing is on; each duration carries the request's trace id (the
    current span, ``middleware.tracing``)."""

    def __init__(self, app: ASGIApp, recorder: RequestRecorder, exemplars: bool = False) -> None:
        self.app = app
        self.recorder = recorder
        self.exemplars = exemplars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = state.get("started") or time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.recorder.observe(
                "http",
                state.get("model", ""),
                state.get("version", ""),
                state.get("endpoint", "other"),
                status,
                time.perf_counter() - started,
                current_exemplar() if self.exemplars else None,
            )
