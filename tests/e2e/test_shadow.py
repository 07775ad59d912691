"""Shadow traffic end to end: a real ``axon serve --versions latest:2`` (its own private
Redis) serving digits-cnn v1 and v2 (a copy of v1) in separate model services, and a
rule ``{"weights": {"1": 100}, "shadow": {"version": 2, "fraction": 1}}``:

1. Every request is answered by version 1 with no error while the shadow's counters
   grow (``/metrics`` and ``GET /v1/models/digits-cnn/routing``): same model, so top-1
   agreement is 1. Version 2 runs with ``--nice digits-cnn:2=19``: its worker process
   is at niceness 19, version 1's at the one it inherited.
2. Version 2's service hangs (SIGSTOP), then crashes (SIGKILL): clients still get only
   version 1's answers, every one 200; the copies end as ``timeout`` or
   ``unavailable``, never as a client error. Once ``axon serve`` has restarted the
   crashed service, copies are compared again.

Latency is not asserted here (``make bench-shadow`` measures it: docs/decisions.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV
from tests.e2e.payloads import images
from tests.e2e.test_versions import _add_version
from tests.support.redis import wait_for

MODEL = "digits-cnn"
CLASSIFY = f"/v1/models/{MODEL}/classify"
ROUTING = f"/v1/models/{MODEL}/routing"
ENV = {
    **STACK_ENV,
    "AXON_HEARTBEAT_TTL_MS": "3000",
    "AXON_CLAIM_TIMEOUT_MS": "2000",
    "AXON_PROVIDER": "cpu",
    "AXON_SHADOW_TIMEOUT_MS": "1500",
}


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log_dir: Path

    @property
    def out(self) -> str:
        return (self.log_dir / "serve.out").read_text(errors="replace")

    def version_processes(self, version: int) -> list[psutil.Process]:
        """The processes of the model service pinned to ``version`` (its BentoML server
        and workers)."""
        found = []
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if proc.environ().get("AXON_CLASSIFIER_MODEL_VERSION") == str(version):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found


@pytest.fixture(scope="module")
def served(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    repo = tmp_path_factory.mktemp("shadow-repo")
    source = model_repo / MODEL / "1"
    shutil.copytree(source, repo / MODEL / "1")
    _add_version(repo, source, 2)
    log_dir = tmp_path_factory.mktemp("shadow-logs")
    port = free_port()
    env = {**os.environ, **ENV}
    for name in ("AXON_REDIS_URL", "AXON_API_KEYS", "AXON_ADMIN_KEYS", "AXON_VERSION_POLICY"):
        env.pop(name, None)
    out = (log_dir / "serve.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
         "--grpc-port", "0", "--models-dir", str(repo), "--log-dir", str(log_dir),
         "--versions", "latest:2", "--nice", f"{MODEL}:2=19"],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    running = Served(f"http://127.0.0.1:{port}", process, log_dir)
    try:
        wait_for(
            lambda: "Axon is ready" in running.out or process.poll() is not None,
            timeout_s=180,
            what="axon serve ready",
        )
        assert process.poll() is None, running.out[-3000:]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            status = process.wait()
        out.close()
    assert status == 0, running.out[-3000:]


def shadow_stats(http: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = http.get(ROUTING).json()["shadow"]["stats"] or {
        "outcomes": {}, "compared": 0,
    }  # fmt: skip
    return stats


def copies(http: httpx.Client) -> int:
    return sum(shadow_stats(http)["outcomes"].values())


def client_errors(http: httpx.Client) -> float:
    """Answers of the classify endpoint with a status >= 400, from ``/metrics``."""
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("axon_requests_total{") and 'endpoint="classify"' in line:
            code = line.split('code="', 1)[1].split('"', 1)[0]
            if int(code) >= 400:
                total += float(line.split()[-1])
    return total


def classify(http: httpx.Client, count: int, seed: int) -> None:
    """``count`` classify requests, each answered 200 by version 1."""
    for i in range(count):
        answer = http.post(CLASSIFY, json={"images": images(1 + i % 3, seed + i)})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-axon-model-version"] == "1"
        assert answer.json()["version"] == 1


def test_1_a_shadow_at_100_percent_leaves_clients_alone_while_its_counters_grow(
    served: Served,
) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        rule = {"weights": {"1": 100}, "shadow": {"version": 2, "fraction": 1.0}}
        put = http.put(ROUTING, json=rule)
        assert put.status_code == 200, put.text
        assert put.json()["shadow"]["ready"] is True
        classify(http, 40, seed=0)
        wait_for(lambda: copies(http) >= 40, timeout_s=60, what="40 shadow copies finished")
        stats = shadow_stats(http)
        assert stats["outcomes"]["compared"] == 40, stats["outcomes"]
        assert stats["top1_agreement"] == 1.0 and stats["mean_difference"] == 0.0
        assert client_errors(http) == 0
        metrics = http.get("/metrics").text
        assert (
            'axon_shadow_requests_total{model="digits-cnn",outcome="compared",version="2"} 40.0'
            in metrics
        )
        # --nice digits-cnn:2=19: the process running version 2's queue worker (BentoML's
        # service worker; its arbiter keeps the niceness it started with) is at 19.
        assert 19 in {proc.nice() for proc in served.version_processes(2)}
        inherited = os.getpriority(os.PRIO_PROCESS, 0)  # what this test runs at
        assert {proc.nice() for proc in served.version_processes(1)} == {inherited}
        primary, shadow = stats["latency_ms"]["primary"], stats["latency_ms"]["shadow"]
        print(f"primary p50 {primary['p50']} ms, shadow p50 {shadow['p50']} ms (40 requests)")


def test_2_a_shadow_that_hangs_or_crashes_changes_nothing_for_clients(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        before = shadow_stats(http)
        v2 = served.version_processes(2)
        assert v2, "no process of version 2's model service found"
        for proc in v2:
            proc.send_signal(signal.SIGSTOP)  # hung: its copies wait in its job lane
        try:
            classify(http, 10, seed=100)
            wait_for(lambda: copies(http) >= 50, timeout_s=60, what="the hung copies ended")
        finally:
            for proc in v2:
                proc.send_signal(signal.SIGKILL)  # and now it crashed
        hung = shadow_stats(http)
        assert hung["outcomes"]["compared"] == before["outcomes"]["compared"]
        assert hung["outcomes"]["timeout"] + hung["outcomes"]["unavailable"] >= 10
        classify(http, 10, seed=200)  # while version 2 is down or restarting
        assert client_errors(http) == 0
        # axon serve restarts the crashed service; then copies are compared again.
        compared = shadow_stats(http)["outcomes"]["compared"]

        def compared_again() -> bool:
            classify(http, 1, seed=300)
            return bool(shadow_stats(http)["outcomes"]["compared"] > compared)

        wait_for(compared_again, timeout_s=180, what="copies compared again after a restart")
        assert client_errors(http) == 0
        assert http.delete(ROUTING).status_code == 200
