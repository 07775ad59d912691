"""Several gateway processes on one port (``--reuse-port``, what ``axon serve
--gateway-workers N`` starts): the kernel spreads new connections over them, each
answers inference, and the port keeps serving while one of them is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV, ManagedRedis, Stack
from tests.support.redis import wait_for

IMAGE = {"images": [[[0.0] * 8 for _ in range(8)]]}


@pytest.fixture
def shared_port(
    stack: Stack, redis: ManagedRedis, e2e_repo: Path, tmp_path: Path
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """Two ``python -m services.gateway --reuse-port`` on one free port, on the stack's
    Redis (its workers answer)."""
    port = free_port()
    env = {**os.environ, **STACK_ENV, "AXON_REDIS_URL": redis.url,
           "AXON_MODELS_DIR": str(e2e_repo)}  # fmt: skip
    env.pop("AXON_API_KEYS", None)
    argv = [sys.executable, "-m", "services.gateway", "--port", str(port),
            "--grpc-port", "0", "--reuse-port"]  # fmt: skip
    processes = []
    for n in range(2):
        with (tmp_path / f"gateway-{n}.log").open("wb") as log:
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(_instances(url, 20)) == 2, timeout_s=60, what="both gateways up")
        yield url, processes
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def _instances(url: str, tries: int) -> set[str]:
    """Gateway instances answering ``/v1/fleet``, one new connection per request."""
    seen = set()
    for _ in range(tries):
        try:
            answer = httpx.get(f"{url}/v1/fleet", timeout=5)
        except httpx.HTTPError:
            continue
        if answer.status_code == 200:
            seen.add(answer.json()["gateway"]["instance"])
    return seen


def test_two_gateway_processes_share_one_port(
    shared_port: tuple[str, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    url, processes = shared_port
    for n in range(2):  # each tuned its garbage collector once started (AXON_GC_THRESHOLD)
        log = (tmp_path / f"gateway-{n}.log").read_text()
        assert "start-up objects frozen, thresholds (10000, 20, 20)" in log, log[-2000:]
    answered = set()
    for _ in range(40):  # a new connection each time: the kernel picks a process
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/v1/models/digits-cnn/classify", json=IMAGE)
            assert response.status_code == 200, response.text
            answered.add(client.get("/v1/fleet").json()["gateway"]["instance"])
    assert len(answered) == 2
    # One process gone: the port still answers every request (the other listens).
    processes[0].kill()
    processes[0].wait(timeout=10)
    for _ in range(20):
        response = httpx.post(f"{url}/v1/models/digits-cnn/classify", json=IMAGE, timeout=30)
        assert response.status_code == 200, response.text
    assert len(_instances(url, 10)) == 1
