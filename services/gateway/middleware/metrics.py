"""Count every response in ``axon_requests_total`` / ``axon_request_duration_seconds``
(and refusals in ``axon_rejected_total``) with the labels the route left in
``scope["state"]``."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.metrics import REJECT_REASONS, GatewayMetrics


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children, looked up once per label set (labels() takes a lock and
        # builds a tuple each call). Label values are bounded: known models only.
        self._counters: dict[tuple[str, str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

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
            key = (model, state.get("version", ""), endpoint, status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(*key)
            counter.inc()
            duration = self._durations.get((model, endpoint))
            if duration is None:
                duration = self.metrics.request_duration.labels(model, endpoint)
                self._durations[(model, endpoint)] = duration
            duration.observe(time.perf_counter() - started)
            if status in REJECT_REASONS:
                self.metrics.rejected.labels(model, REJECT_REASONS[status]).inc()
