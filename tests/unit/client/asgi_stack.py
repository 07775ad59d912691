"""The in-process gateway (``tests.support.inprocess``) for the async client: the same
real app, memory queue and ONNX Runtime workers, with its lifespan run on the test's
own event loop and requests sent through ``httpx.ASGITransport`` (Starlette's
TestClient runs the app on a thread of its own, which an ``httpx.AsyncClient`` cannot
share)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.contract.protocol import WorkerInfo
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.transport_memory import MemoryTransport
from services.runtime.repository import ModelRepository
from tests.support.inprocess import OnnxHandler, tiny_repository

BASE_URL = "http://testserver"


@dataclass
class AsyncStack:
    http: httpx.AsyncClient
    queue: MemoryTransport
    repository: ModelRepository

    def info(self, model: str, instance: str) -> WorkerInfo:
        metadata = self.repository.load(model).metadata
        return WorkerInfo(
            instance, model, metadata.version, "CPUExecutionProvider", 64, metadata.raw, {}, 0, 0
        )

    def serve(self, model: str) -> None:
        """A worker computing ``model``'s requests (call it on the test's loop)."""
        handler = OnnxHandler(self.repository.load(model))
        self.queue.serve(self.info(model, f"{model}-w1"), handler)

    def register(self, model: str) -> None:
        """A heartbeat for ``model`` with no worker behind it: entries stay queued."""
        self.queue.register(self.info(model, f"{model}-idle"))


@contextlib.asynccontextmanager
async def async_stack(
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    serve: Sequence[str] = (),
    register: Sequence[str] = (),
) -> AsyncIterator[AsyncStack]:
    repo = tiny_repository(root / "models")
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": "redis://unused.invalid", "AXON_MODELS_DIR": str(repo),
         "AXON_GATEWAY_INSTANCE": "inproc", "AXON_GRPC_PORT": "0", **(env or {})}
    )  # fmt: skip
    queue = MemoryTransport("inproc")
    app = create_app(settings, transport=lambda _settings: queue)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        result = AsyncStack(http, queue, ModelRepository(repo))
        for model in serve:
            result.serve(model)  # before the lifespan: the registry's first read sees it
        for model in register:
            result.register(model)
        async with app.router.lifespan_context(app):
            yield result
