"""Accept the client's ``X-Request-ID`` (or make one), keep it in ``scope["state"]``,
echo it on the response, make it the current request id of log lines
(``logs.REQUEST_ID``), and log one line per request with it."""

from __future__ import annotations

import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contract.logs import REQUEST_ID
from services.gateway.fields import request_id

log = logging.getLogger("services.gateway.access")

HEADER = b"x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope["headers"]:
            if key == HEADER:
                given = request_id(value.decode("latin-1"))
                break
        rid = given or os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, 2x cheaper
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["started"] = time.perf_counter()
        state["arrived"] = time.monotonic()  # the request's deadline counts from here
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %d %.1fms request_id=%s",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - state["started"]) * 1000,
                    rid,
                )
            REQUEST_ID.reset(token)
