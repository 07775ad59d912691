"""Every HTTP request's own checks and bookkeeping, in ONE ASGI layer (five layers
before; measured in docs/decisions.md, "One edge layer"). In order:

1. its id (``request_id.assign``): the current request id of log lines
   (``logs.REQUEST_ID``), echoed as ``X-Request-ID``, one access log line at the end;
2. its metrics: ``axon_requests_total`` / ``axon_request_duration_seconds`` (and
   refusals in ``axon_rejected_total``) with the labels the route left in
   ``scope["state"]`` (``protocol="http"``; ``metrics.RequestRecorder``), status 500
   when no response was started;
3. API keys (``auth.ApiKeys``): 401/403;
4. the body limit (``body_limit.BodyLimit``): 413 from Content-Length at once, else
   while a chunked body is read;
5. the gateway's bytes in flight (``inflight_bytes.ByteBudget``): the body's size is
   reserved until the response is sent; a request that does not fit gets 503 +
   ``Retry-After`` before its body is read.

A refusal of 3–5 is answered through 1–2: it carries the id and is counted.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contract.logs import REQUEST_ID
from services.contract.tracing import current_exemplar
from services.gateway.metrics import RequestRecorder
from services.gateway.middleware import request_id
from services.gateway.middleware.auth import ApiKeys
from services.gateway.middleware.body_limit import BodyLimit
from services.gateway.middleware.inflight_bytes import ByteBudget
from services.gateway.responses import error_response


class Edge:
    """``exemplars``: tracing is on; each duration carries the request's trace id (the
    current span, ``middleware.tracing``, installed outside this layer)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        recorder: RequestRecorder,
        keys: ApiKeys,
        body_limit: BodyLimit,
        budget: ByteBudget,
        retry_after_s: int,
        exemplars: bool = False,
    ) -> None:
        self.app = app
        self.recorder = recorder
        self.keys = keys
        self.body_limit = body_limit
        self.budget = budget
        """Shared with the gRPC service: one bound over both protocols."""
        self.retry_after_s = retry_after_s
        self.exemplars = exemplars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id.assign(scope)
        header = (request_id.HEADER, rid.encode())
        status = 0

        async def send_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self._checked(scope, receive, send_edge)
        finally:
            state = scope["state"]
            self.recorder.observe(
                "http",
                state.get("model", ""),
                state.get("version", ""),
                state.get("endpoint", "other"),
                status or 500,
                time.perf_counter() - state["started"],
                current_exemplar() if self.exemplars else None,
            )
            request_id.log_access(scope, status)
            REQUEST_ID.reset(token)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Steps 3–5 of the module docstring, then the app."""
        refusal = self.keys.refusal(scope)
        if refusal is None:
            refusal, receive, size = self.body_limit.admit(scope, receive)
            if refusal is None and (not size or self.budget.try_reserve(size)):
                try:
                    await self.app(scope, receive, send)
                finally:
                    self.budget.release(size)
                return
            refusal = refusal or error_response(
                503,
                self.budget.refusal(self.retry_after_s),
                headers={"Retry-After": str(self.retry_after_s)},
            )
        await refusal(scope, receive, send)
