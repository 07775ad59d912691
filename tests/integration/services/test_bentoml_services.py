"""Each BentoML service as a real ``bentoml serve`` process: it answers a request queued
in Redis, its batchable HTTP API, health, ``/metrics`` with axon_* metrics, and on
SIGTERM it stops and deregisters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from redis.asyncio import Redis

from services.contract import protocol
from services.contract.codec import Reply
from services.runtime.redis_server import free_port
from tests.support.redis import RedisServer, wait_for
from tests.support.workers import FAST, Client

SERVICES = {
    "classifier": ("services.classifier.service:ClassifierService", "digits-cnn"),
    "forecaster": ("services.forecaster.service:ForecasterService", "sunspots-lstm"),
    "generator": ("services.generator.service:GeneratorService", "digits-gan"),
}


class ServiceProcess:
    def __init__(self, family: str, redis_url: str, model_repo: Path, log_path: Path) -> None:
        target, self.model = SERVICES[family]
        self.port = free_port()
        self.instance = f"bento-{family}-{self.port}"
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            **FAST,
            "AXON_REDIS_URL": redis_url,
            "AXON_MODELS_DIR": str(model_repo),
            "AXON_INSTANCE": self.instance,
            "BENTOML_HOME": str(log_path.parent / "bentoml-home"),
        }
        self.log_path = log_path
        self.children: list[psutil.Process] = []
        self._log = log_path.open("wb")
        bentoml = Path(sys.executable).with_name("bentoml")
        self.process = subprocess.Popen(
            [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is not None:
            raise AssertionError(f"service exited: {self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, route: str, payload: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}/{route}", json=payload, timeout=30)

    def stop(self) -> int:
        """SIGTERM the server (its arbiter stops its workers) and wait; kill after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server and every process it started (BentoML's workers run in
        their own process groups, so killing the group alone would orphan them)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for proc in [*children, psutil.Process(self.process.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.process.wait()


@pytest.fixture(params=sorted(SERVICES))
def service(
    request: pytest.FixtureRequest, redis_server: RedisServer, model_repo: Path, tmp_path: Path
) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(request.param, redis_server.url, model_repo, tmp_path / "service.log")
    try:
        wait_for(proc.ready, timeout_s=120, what=f"{request.param} service readiness")
        yield proc
    finally:
        if proc.process.poll() is None:
            proc.kill()
        # Nothing the service started may outlive the test.
        for child in proc.children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def queued_and_http(
    service: ServiceProcess, redis_url: str
) -> tuple[Reply, np.ndarray, np.ndarray]:
    """One request through Redis and the same one through the HTTP API."""
    if service.model == "digits-cnn":
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 16, (2, 1, 8, 8)).astype(np.float32)
        inputs, parameters = {"image": x}, None
        response = service.post("classify", {"images": x.tolist()})
        output = "probabilities"
    elif service.model == "sunspots-lstm":
        x = np.linspace(10, 120, 24, dtype=np.float32).reshape(2, 12)
        inputs, parameters = {"history": x}, None
        response = service.post("forecast", {"histories": x.tolist()})
        output = "forecast"
    else:
        inputs, parameters = {}, {"seed": 5, "count": 2, "label": 3}
        response = service.post("generate", {"requests": [{"seed": 5, "count": 2, "label": 3}]})
        output = "image"
    assert response.status_code == 200, response.text
    http_result = np.asarray(response.json(), dtype=np.float32)
    if service.model == "digits-gan":
        http_result = http_result[0]

    async def through_redis() -> tuple[Reply, list[protocol.WorkerInfo]]:
        redis: Redis[bytes] = Redis.from_url(redis_url)
        client = Client(redis, service.model)
        await client.send(inputs, parameters)
        reply = (await client.replies(1))[0]
        workers = await protocol.live_workers(redis, service.model, 1)
        await redis.aclose()
        return reply, workers

    reply, workers = asyncio.run(through_redis())
    assert [w.instance for w in workers] == [service.instance]
    assert workers[0].metadata["name"] == service.model
    assert reply.ok and reply.outputs is not None, reply.error
    return reply, reply.outputs[output], http_result


def test_service_answers_queue_http_health_and_metrics(
    service: ServiceProcess, redis_server: RedisServer
) -> None:
    _reply, queued, http_result = queued_and_http(service, redis_server.url)
    np.testing.assert_allclose(queued, http_result, rtol=1e-5, atol=1e-4)

    assert httpx.get(f"{service.url}/livez", timeout=5).status_code == 200
    described = service.post("model", {}).json()
    assert described["model"] == service.model and described["ready"] is True
    assert described["stats"]["execution_count"] >= 1

    metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
    for name in ("axon_batch_rows", "axon_inference_duration_seconds", "axon_backlog"):
        assert f"{name}" in metrics and f'model="{service.model}"' in metrics, name

    bad = service.post(
        {"digits-cnn": "classify", "sunspots-lstm": "forecast", "digits-gan": "generate"}[
            service.model
        ],
        {
            "digits-cnn": {"images": [[[[1.0, 2.0]]]]},
            "sunspots-lstm": {"histories": [[]]},
            "digits-gan": {"requests": [{"seed": 1, "count": 1, "label": 99}]},
        }[service.model],
    )
    assert bad.status_code == 400, bad.text

    assert service.stop() == 0, service.log_path.read_text()[-5000:]

    async def registered() -> list[protocol.WorkerInfo]:
        redis: Redis[bytes] = Redis.from_url(redis_server.url)
        workers = await protocol.live_workers(redis, service.model, 1)
        await redis.aclose()
        return workers

    assert asyncio.run(registered()) == [], "the stopped service did not deregister"
