"""Count every response in ``axon_requests_total`` / ``axon_request_duration_seconds``
(and refusals in ``axon_rejected_total``) with the labels the route left in
``scope["state"]``."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.metrics import REJECT_REASONS, GatewayMetrics


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            model = state.get("model", "")
            endpoint = state.get("endpoint", "other")
            self.metrics.requests.labels(model, state.get("version", ""), endpoint, status).inc()
            self.metrics.request_duration.labels(model, endpoint).observe(
                time.perf_counter() - started
            )
            if status in REJECT_REASONS:
                self.metrics.rejected.labels(model, REJECT_REASONS[status]).inc()
