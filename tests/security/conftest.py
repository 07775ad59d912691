"""Security fixtures: one real stack (redis-server, a standalone worker per default model,
gateways started per test with their own settings). Processes are killed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosRedis, GatewayProc, Procs, start_gateway, start_worker

MODELS = ("digits-cnn", "sunspots-lstm", "digits-gan")


@dataclass
class SecurityStack:
    procs: Procs
    redis: ChaosRedis
    models_dir: Path

    def gateway(self, name: str, **settings: str) -> GatewayProc:
        headers: dict[str, str] = {}
        extra: dict[str, Any] = dict(settings)  # str values; Any keeps **extra off `port`
        if "api_keys" in settings:
            headers["X-API-Key"] = settings["api_keys"].split(",")[0]
        return start_gateway(
            self.procs, self.redis, self.models_dir, "digits-cnn", name, headers=headers, **extra
        )


@pytest.fixture(scope="module")
def stack(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityStack]:
    logs = tmp_path_factory.mktemp("security-logs")
    procs = Procs(logs)
    try:
        server = ChaosRedis(procs, logs / "redis", persistent=False)
        server.start()
        for model in MODELS:
            start_worker(procs, server, model_repo, model, f"sec-{model}")
        yield SecurityStack(procs, server, model_repo)
    finally:
        procs.close()


GatewayFactory = Callable[..., GatewayProc]
