"""Async jobs across gateway processes on one Redis, with a real worker process: 1,000
jobs (``Prefer: respond-async``) submitted while synchronous requests run, the gateway
they go to is SIGKILLed half-way and a new one started; every accepted job completes
and its result, fetched from either gateway, is the synchronous answer for its input.
(The latency cost to synchronous requests is measured by benchmarks/bench_jobs.py.)"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis as redis_lib

from services.contract import jobs, protocol
from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV, ManagedRedis
from tests.support.redis import wait_for

MODEL = "digits-cnn"
JOBS = 1_000
KILL_AFTER = 400
IMAGES = [np.random.default_rng(n).uniform(0, 16, (1, 8, 8)).round(2).tolist() for n in range(10)]
"""Ten distinct inputs: job n classifies IMAGES[n % 10]."""


class Procs:
    """The processes this test starts; all killed at the end."""

    def __init__(self, log_dir: Path, redis_url: str, repo: Path) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, **STACK_ENV, "AXON_REDIS_URL": redis_url,
                    "AXON_MODELS_DIR": str(repo), "AXON_GRPC_PORT": "0",
                    "AXON_BACKLOG_LIMIT": "1000", "AXON_LOG_LEVEL": "WARNING"}  # fmt: skip
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def gateway(self, name: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        argv = [sys.executable, "-m", "services.gateway", "--port", str(port)]
        process = self.spawn(name, argv, AXON_GATEWAY_INSTANCE=name)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, self.log(name)
            try:
                return httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s=60, what=f"gateway {name} ready")
        return url, process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def procs(redis: ManagedRedis, e2e_repo: Path, tmp_path: Path) -> Iterator[Procs]:
    owner = Procs(tmp_path, redis.url, e2e_repo)
    try:
        yield owner
    finally:
        owner.close()


def _classify(n: int) -> dict[str, Any]:
    return {"images": [IMAGES[n % len(IMAGES)]], "top_k": 3}


def _same(result: dict[str, Any], expected: dict[str, Any]) -> bool:
    """The same answer (probabilities equal to float noise: batches of other sizes)."""
    if {k: v for k, v in result.items() if k != "predictions"} != {
        k: v for k, v in expected.items() if k != "predictions"
    }:
        return False
    (got,), (want,) = result["predictions"], expected["predictions"]
    return [p["index"] for p in got["top_k"]] == [p["index"] for p in want["top_k"]] and all(
        abs(a["probability"] - b["probability"]) < 1e-5
        for a, b in zip(got["top_k"], want["top_k"], strict=True)
    )


def test_a_thousand_jobs_survive_a_gateway_restart_while_sync_load_runs(
    procs: Procs, redis: ManagedRedis
) -> None:
    worker = f"jobs-w-{time.time_ns()}"
    procs.spawn(worker, [sys.executable, "-m", "services.runtime.standalone"],
                AXON_MODEL=MODEL, AXON_INSTANCE=worker, AXON_PROVIDER="cpu",
                AXON_MAX_BATCH_ROWS="64", AXON_MAX_QUEUE_DELAY_MS="2")  # fmt: skip
    client = redis_lib.Redis.from_url(redis.url)
    wait_for(lambda: client.exists(protocol.worker_key(MODEL, 1, worker)), what="worker up")
    first_url, first = procs.gateway("jobs-gw-a")
    other_url, _ = procs.gateway("jobs-gw-b")
    path = f"/v1/models/{MODEL}/classify"
    expected = [
        httpx.post(other_url + path, json=_classify(n), timeout=30).json()
        for n in range(len(IMAGES))
    ]

    sync_codes: list[int] = []
    stop = threading.Event()

    def sync_load() -> None:
        with httpx.Client(base_url=other_url, timeout=30) as sync_client:
            for n in itertools.count():
                if stop.is_set():
                    return
                response = sync_client.post(path, json=_classify(n))
                sync_codes.append(response.status_code)
                if response.status_code == 200:
                    assert _same(response.json(), expected[n % len(IMAGES)])

    current = {"url": first_url}
    accepted: dict[int, str] = {}
    lock = threading.Lock()
    killed = threading.Event()
    local = threading.local()
    clients: list[httpx.Client] = []

    def http() -> httpx.Client:
        """This thread's client (connections kept alive between its calls)."""
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
            with lock:
                clients.append(local.client)
        made: httpx.Client = local.client
        return made

    def submit(n: int) -> None:
        """Submit job n to the current first gateway; on a connection error (it was
        killed) to the other one. Only a 202 counts as accepted."""
        for url in itertools.chain([current["url"]], itertools.repeat(other_url)):
            try:
                response = http().post(
                    url + path, json=_classify(n), headers={"Prefer": "respond-async"}
                )
            except httpx.TransportError:
                continue
            assert response.status_code == 202, response.text
            with lock:
                accepted[n] = response.json()["id"]
                if len(accepted) >= KILL_AFTER and not killed.is_set():
                    killed.set()
            return

    loader = threading.Thread(target=sync_load, daemon=True)
    loader.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = [pool.submit(submit, n) for n in range(KILL_AFTER + 100)]
        killed.wait(timeout=120)
        first.send_signal(signal.SIGKILL)  # mid-way: jobs are queued and running
        first.wait(timeout=10)
        for future in done:
            future.result()
        current["url"], _ = procs.gateway("jobs-gw-a2")  # its replacement
        for future in [pool.submit(submit, n) for n in range(KILL_AFTER + 100, JOBS)]:
            future.result()
    assert len(accepted) == JOBS

    # Every job's entry answered (the stream empties as the worker acknowledges).
    wait_for(
        lambda: client.xlen(jobs.job_stream_key(MODEL, 1)) == 0,
        timeout_s=300,
        what="the job stream drained",
    )
    stop.set()
    loader.join(timeout=60)
    urls = [current["url"], other_url]

    def fetch(n: int) -> dict[str, Any]:
        doc: dict[str, Any] = http().get(f"{urls[n % 2]}/v1/jobs/{accepted[n]}").json()
        return doc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(enumerate(pool.map(fetch, range(JOBS))))
    for made in clients:
        made.close()
    failed = {n: doc for n, doc in results.items() if doc["status"] != "succeeded"}
    assert not failed, list(failed.items())[:3]
    wrong = [n for n, doc in results.items() if not _same(doc["result"], expected[n % 10])]
    assert not wrong, wrong[:5]
    assert sync_codes and set(sync_codes) == {200}, set(sync_codes)
    client.close()
