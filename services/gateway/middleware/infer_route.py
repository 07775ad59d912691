"""The innermost middleware: ``POST /v2/models/{m}[/versions/{v}]/infer`` goes straight
to ``oip.infer`` — the same handler and the same error mapping as through the router,
without the router's matching, ``ExceptionMiddleware`` and the per-request wrappers of
Starlette's ``request_response`` (the hot path: measured ~15-20 µs a request on the
2-core bench machine). Anything else, including other methods on the same paths (405),
goes on to the router unchanged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.contract.errors import AxonError
from services.gateway import oip
from services.gateway.errors import GatewayError

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def infer_path_params(path: str) -> dict[str, str] | None:
    """``{"model"[, "version"]}`` for an infer path (as the routes' patterns match), else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer":
        _, v2, models, model, _infer = parts
        if v2 == "v2" and models == "models" and model:
            return {"model": model}
    elif len(parts) == 7 and parts[6] == "infer":
        _, v2, models, model, versions, version, _infer = parts
        if v2 == "v2" and models == "models" and versions == "versions" and model and version:
            return {"model": model, "version": version}
    return None


class InferRouteMiddleware:
    def __init__(self, app: ASGIApp, error_handler: ErrorHandler) -> None:
        self.app = app
        self.error_handler = error_handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            params = infer_path_params(scope["path"])
        if params is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = params
        scope["endpoint"] = oip.infer
        request = Request(scope, receive, send)
        try:
            response = await oip.infer(request)
        except (GatewayError, AxonError) as exc:  # what ExceptionMiddleware would map
            response = await self.error_handler(request, exc)
        await response(scope, receive, send)
