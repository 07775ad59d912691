"""Scale from zero with real processes: a gateway (``python -m services.gateway``) with
``AXON_HOLD_WITHOUT_WORKERS`` on a Redis of its own, where no worker has ever run, holds a
request for a model from its repository; a worker process started after the request was
queued (its consumer group created after the entry) answers it with 200. Without the
setting the same request is 503 at once; a held request whose deadline passes is 504;
the backlog limit still gives 429."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from services.contract import protocol
from services.runtime.redis_server import RedisServer, free_port
from tests.e2e.payloads import history, images
from tests.support.redis import wait_for

GATEWAY_ENV = {
    "AXON_REGISTRY_REFRESH_MS": "100",
    "AXON_REPLY_BLOCK_S": "0.5",
    "AXON_NO_WORKER_WAIT_MS": "0",
    "AXON_MODEL_BACKLOG_LIMITS": "digits-gan=2",
    "AXON_LOG_LEVEL": "INFO",
}


@dataclass
class Gateway:
    url: str
    redis: redis_sync.Redis[bytes]

    def backlog(self, model: str) -> int:
        return int(self.redis.xlen(protocol.stream_key(model, 1)))

    def groups(self, model: str) -> list[object]:
        key = protocol.stream_key(model, 1)
        return list(self.redis.xinfo_groups(key)) if self.redis.exists(key) else []


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis of this module's own: no stream or consumer group exists before a test."""
    with RedisServer() as server:
        yield server.url


def _start_gateway(
    redis_url: str, repo: Path, log: Path, hold: str
) -> tuple[subprocess.Popen[bytes], Gateway]:
    port = free_port()
    env = {**os.environ, **GATEWAY_ENV, "AXON_REDIS_URL": redis_url,
           "AXON_MODELS_DIR": str(repo), "AXON_HOLD_WITHOUT_WORKERS": hold}  # fmt: skip
    env.pop("AXON_API_KEYS", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway", "--port", str(port), "--grpc-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/healthz/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout_s=60, what="the gateway ready")
    return process, Gateway(url, redis_sync.Redis.from_url(redis_url))


@pytest.fixture(scope="module")
def held(
    redis_url: str, model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway holding every version of its repository (model_repo), no worker."""
    log = tmp_path_factory.mktemp("gateway-held") / "gateway.log"
    process, gateway = _start_gateway(redis_url, model_repo, log, "true")
    try:
        yield gateway
    finally:
        process.terminate()
        process.wait(timeout=30)
        gateway.redis.close()


def _post(url: str, path: str, body: Mapping[str, object], timeout_ms: int) -> httpx.Response:
    headers = {"X-Axon-Timeout-Ms": str(timeout_ms)}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=120)


def _worker(redis_url: str, repo: Path, family: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AXON_REDIS_URL": redis_url, "AXON_MODELS_DIR": str(repo),
           "AXON_READ_BLOCK_MS": "100", "AXON_HEARTBEAT_INTERVAL_MS": "300"}  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.runtime.standalone", family],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_held_request_is_answered_by_a_worker_started_after_it(
    held: Gateway, redis_url: str, model_repo: Path, tmp_path: Path
) -> None:
    ready = httpx.get(f"{held.url}/v2/models/digits-cnn/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["ready"] is False  # the truth
    index = httpx.post(f"{held.url}/v2/repository/index", timeout=10).json()
    (entry,) = [e for e in index if e["name"] == "digits-cnn"]
    assert entry["state"] == "UNAVAILABLE" and "held" in entry["reason"], entry
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            _post, held.url, "/v1/models/digits-cnn/classify", {"images": images(1)}, 90_000
        )
        wait_for(lambda: held.backlog("digits-cnn") == 1, timeout_s=30, what="the entry queued")
        # Queued before any worker, so before the stream had a consumer group: the first
        # worker's group (created at id 0) must still read it.
        assert held.groups("digits-cnn") == []
        assert not answer.done()
        worker = _worker(redis_url, model_repo, "classifier", tmp_path / "worker.log")
        try:
            response = answer.result(timeout=120)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-Axon-Model-Version"] == "1"
    assert len(response.json()["predictions"]) == 1
    assert held.backlog("digits-cnn") == 0


def test_without_the_setting_the_same_request_is_503_and_nothing_is_queued(
    redis_url: str, model_repo: Path, tmp_path: Path
) -> None:
    process, gateway = _start_gateway(redis_url, model_repo, tmp_path / "gw.log", "false")
    try:
        before = gateway.backlog("sunspots-lstm")
        body = {"history": history(), "horizon": 3}
        response = _post(gateway.url, "/v1/models/sunspots-lstm/forecast", body, 90_000)
        assert response.status_code == 503, response.text
        assert "no live worker" in response.json()["error"]
        assert gateway.backlog("sunspots-lstm") == before
    finally:
        process.terminate()
        process.wait(timeout=30)
        gateway.redis.close()


def test_a_held_request_whose_deadline_passes_is_504(held: Gateway) -> None:
    body = {"history": history(), "horizon": 3}
    response = _post(held.url, "/v1/models/sunspots-lstm/forecast", body, 500)
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]


def test_the_backlog_limit_still_applies_to_held_requests(held: Gateway) -> None:
    # digits-gan's limit is 2 (AXON_MODEL_BACKLOG_LIMITS): two held, the third refused.
    body = {"count": 1, "seed": 1, "format": "array"}
    path = "/v1/models/digits-gan/generate"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(_post, held.url, path, body, 5_000) for _ in range(2)]
        wait_for(lambda: held.backlog("digits-gan") == 2, timeout_s=30, what="two held")
        refused = _post(held.url, path, body, 5_000)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert [w.result(timeout=60).status_code for w in waiting] == [504, 504]
