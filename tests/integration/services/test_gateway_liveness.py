"""The gateway's liveness follows its background tasks (issue 9, item 1): a real app
with its real lifespan against a real Redis, served by a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.state import GatewayState
from services.runtime.redis_server import RedisServer, free_port


@contextlib.asynccontextmanager
async def serving(redis_url: str, models_dir: Path) -> AsyncIterator[tuple[str, GatewayState]]:
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": redis_url, "AXON_MODELS_DIR": str(models_dir),
         "AXON_REGISTRY_REFRESH_MS": "100", "AXON_REPLY_BLOCK_S": "0.2"}
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app.state.gateway
    finally:
        server.should_exit = True
        await task


def test_liveness_turns_red_when_a_background_task_ends(
    redis_server: RedisServer, model_repo: Path
) -> None:
    async def scenario() -> None:
        async with (
            serving(redis_server.url, model_repo) as (url, state),
            httpx.AsyncClient(base_url=url) as http,
        ):
            assert (await http.get("/v2/health/live")).json() == {"live": True}
            ready = await http.get("/healthz/ready")
            assert ready.status_code == 200, ready.text
            # No worker serves any model here: the OIP server is not ready.
            assert (await http.get("/v2/health/ready")).status_code == 503
            registry = next(t for t in state.tasks if t.get_name() == "axon-registry")
            registry.cancel()  # stands for a bug that ends the task
            await asyncio.sleep(0.05)
            for path in ("/v2/health/live", "/healthz/live"):
                dead = await http.get(path)
                assert dead.status_code == 503
                assert dead.json() == {"live": False, "stopped": ["axon-registry"]}

    asyncio.run(scenario())
