"""The gateway application factory: routes, middlewares, error handling and the lifespan
that opens the queue (``transport``), starts its reply listener, the registry refresher
and the OIP gRPC server (``grpc_server``, same loop and state)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from services.contract.errors import AxonError
from services.contract.resilience import cancel_and_wait
from services.contract.tracing import Tracing
from services.gateway import job_endpoints, oip, openapi, routing_admin, task_endpoints
from services.gateway.capture import Capturer
from services.gateway.console import routes as console
from services.gateway.console.assets import ConsoleFiles
from services.gateway.dispatcher import Dispatcher
from services.gateway.docs_ui import SwaggerFiles
from services.gateway.errors import BacklogFullError, GatewayError, client_message, status_for
from services.gateway.grpc_server import start_grpc, stop_grpc
from services.gateway.idempotency import IdempotencyConfig, IdempotencyMiddleware
from services.gateway.metrics import GatewayMetrics, RequestRecorder, metrics_response
from services.gateway.middleware.auth import ApiKeys, presented_key
from services.gateway.middleware.body_limit import BodyLimit
from services.gateway.middleware.edge import Edge
from services.gateway.middleware.inflight_bytes import ByteBudget
from services.gateway.middleware.tracing import TracingMiddleware
from services.gateway.registry import Registry
from services.gateway.responses import error_response
from services.gateway.routing import DirectRoute, ErrorHandler, HotRoutes
from services.gateway.settings import GatewaySettings
from services.gateway.shadow import Shadows
from services.gateway.state import GatewayState, tag
from services.gateway.transport import Transport
from services.gateway.transport_redis import RedisTransport

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    transport: Callable[[GatewaySettings], Transport] = RedisTransport.connect,
    *,
    draw: Callable[[], float] = random.random,
    shadow_draw: Callable[[], float] | None = None,
) -> Starlette:
    """A gateway app for ``settings``. The queue is ``transport(settings)``, built when
    the app starts (lifespan) and closed when it stops: Redis by default; tests pass a
    ``MemoryTransport``. ``draw``: points in [0, 1) for weighted routing (tests pass a
    seeded one); ``shadow_draw``: those of shadow sampling (default: a random source of
    its own, so sampling never shifts the routing draws)."""
    shadow_draw = shadow_draw or random.Random().random
    metrics = GatewayMetrics.create()
    recorder = RequestRecorder(metrics)
    inflight = ByteBudget(settings.max_inflight_bytes)
    tracing = Tracing.start(
        settings.tracing, "axon-gateway", {"service.instance.id": settings.instance}
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        queue = transport(settings)
        registry = Registry(
            queue,
            refresh_ms=settings.registry_refresh_ms,
            no_worker_wait_ms=settings.no_worker_wait_ms,
            hold=settings.hold_without_workers,
            draw=draw,
        )
        if settings.models_dir is not None:
            registry.add_repository(settings.models_dir)
        dispatcher = Dispatcher(queue, settings, metrics, registry, tracing)
        shadows = Shadows(queue, registry, dispatcher, settings, metrics, draw=shadow_draw)
        capture = Capturer(queue, settings, metrics)
        app.state.gateway = GatewayState(
            settings=settings,
            transport=queue,
            registry=registry,
            dispatcher=dispatcher,
            shadows=shadows,
            capture=capture,
            tracing=tracing,
            metrics=metrics,
            recorder=recorder,
            inflight=inflight,
            docs=SwaggerFiles.installed(),
            console=ConsoleFiles.installed(),
            image_pool=ThreadPoolExecutor(
                max_workers=settings.image_threads, thread_name_prefix="axon-image"
            ),
        )
        background = [
            asyncio.create_task(registry.run(), name="axon-registry"),
            asyncio.create_task(queue.receive(registry.mark_down), name="axon-reply-listener"),
        ]
        app.state.gateway.tasks = tuple(background)
        with contextlib.suppress(TimeoutError):  # start even when the queue is down
            await asyncio.wait_for(registry.refreshed.wait(), timeout=settings.redis_timeout_s)
        grpc_server = await start_grpc(app.state.gateway)
        draining = app.state.gateway.draining

        async def drain_grpc() -> None:
            await draining.wait()
            await stop_grpc(grpc_server, settings)

        # gRPC stops taking calls when the stop signal arrives (``begin_drain``), while
        # uvicorn drains HTTP; its calls in flight run to their deadlines.
        drainer = asyncio.create_task(drain_grpc(), name="axon-grpc-drain")
        try:
            log.info("gateway %s serving", settings.instance)
            yield
        finally:
            draining.set()
            await drainer
            await cancel_and_wait(background, log)
            await shadows.aclose()
            await capture.aclose()
            await queue.aclose()
            pool = app.state.gateway.image_pool
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # exports what is buffered

    async def metrics_endpoint(request: Request) -> Response:
        tag(request, "metrics")
        return metrics_response(metrics.registry, request.headers.get("accept", ""))

    routes = [
        *oip.routes,
        *task_endpoints.routes,
        *job_endpoints.routes,
        *routing_admin.routes,
        DirectRoute("/metrics", metrics_endpoint, methods=["GET"]),
        *openapi.routes,
        *console.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            *([Middleware(TracingMiddleware, tracing=tracing)] if tracing is not None else []),
            Middleware(
                Edge,
                recorder=recorder,
                keys=ApiKeys(settings.api_keys, settings.admin_keys),
                body_limit=BodyLimit(settings.max_body_bytes),
                budget=inflight,
                retry_after_s=settings.retry_after_s,
                exemplars=tracing is not None,
            ),
            Middleware(IdempotencyMiddleware, config=idempotency_config(settings)),
            Middleware(HotRoutes, routes=routes, handlers=EXCEPTION_HANDLERS),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    return app


def idempotency_config(settings: GatewaySettings) -> IdempotencyConfig:
    """``Idempotency-Key`` handling: records for ``AXON_IDEMPOTENCY_TTL_S``; a retry
    waits for the first request's answer up to its own deadline (``X-Axon-Timeout-Ms``,
    else the default, capped); records are scoped by the API key presented."""

    def wait_s(scope: Scope) -> float:
        for name, value in scope["headers"]:
            if name == b"x-axon-timeout-ms" and value.isdigit():
                return min(int(value), settings.max_timeout_ms) / 1000
        return settings.timeout_ms / 1000

    def principal(scope: Scope) -> bytes:
        return (presented_key(scope["headers"]) or b"") if settings.api_keys else b""

    return IdempotencyConfig(
        ttl_s=settings.idempotency_ttl_s,
        max_bytes=settings.idempotency_max_bytes,
        wait_s=wait_s,
        principal=principal,
    )


def begin_drain(app: Starlette) -> None:
    """The gateway is stopping: stop taking gRPC calls now (those in flight finish).
    Safe from a signal handler: it only schedules the change on the app's loop."""
    state = getattr(app.state, "gateway", None)
    if state is not None:
        state.loop.call_soon_threadsafe(state.draining.set)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such route; see /docs" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def _error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    if status >= 500 and status not in (503, 504):
        log.error("request %s failed", getattr(request.state, "request_id", "?"), exc_info=exc)
    headers = {}
    if isinstance(exc, BacklogFullError):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif status == 503:  # no live worker, the queue down: worth retrying shortly
        state = getattr(request.app.state, "gateway", None)
        headers["Retry-After"] = str(state.settings.retry_after_s if state else 1)
    return error_response(status, client_message(exc), headers=headers)


EXCEPTION_HANDLERS: dict[type[BaseException], ErrorHandler] = {
    HTTPException: _http_error,
    GatewayError: _error,
    AxonError: _error,
    Exception: _error,  # last resort: logged with its traceback, client gets 500
}
"""The one error → response mapping: registered on the app, and used by ``HotRoutes``."""
