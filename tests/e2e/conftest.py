"""e2e fixtures: real processes over HTTP.

- ``redis``: a private redis-server on a free port that a test can stop and restart on
  the same port (``ManagedRedis``).
- ``e2e_repo``: the session's model repository plus ``spare-cnn/1`` (a copy of
  digits-cnn that no service serves: the gateway knows it, no worker is live → 503).
- ``stack``: ``axon serve`` as a child process against that Redis and repository,
  waited on until every model is ready; SIGTERMed at the end, and every process it
  started must be gone afterwards.
- ``start_gateway``: extra gateway processes (``python -m services.gateway``) with
  their own settings, e.g. API keys.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from services.processes import terminate
from services.runtime.redis_server import RedisServer, free_port
from tests.support.redis import wait_for

MODELS = ("digits-cnn", "sunspots-lstm", "digits-gan")
SPARE = "spare-cnn"

STACK_ENV = {
    "AXON_BACKLOG_LIMIT": "6",
    "AXON_MAX_ROWS": "32",
    "AXON_MAX_BODY_BYTES": str(256 * 1024),
    "AXON_REGISTRY_REFRESH_MS": "100",
    "AXON_REPLY_BLOCK_S": "0.5",
    "AXON_READ_BLOCK_MS": "100",
    "AXON_HEARTBEAT_INTERVAL_MS": "300",
    # Long enough that a SIGSTOPped worker stays registered (backlog/deadline tests).
    "AXON_HEARTBEAT_TTL_MS": "60000",
    "AXON_CLAIM_TIMEOUT_MS": "60000",
    "AXON_LOG_LEVEL": "INFO",
}
"""Settings of the e2e stack (small limits so the tests can reach them)."""


class ManagedRedis:
    """A real redis-server on a fixed free port; ``restart`` keeps the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: RedisServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._server = RedisServer(port=self.port).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def redis() -> Iterator[ManagedRedis]:
    server = ManagedRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def e2e_repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e-models")
    for model in MODELS:
        shutil.copytree(model_repo / model, root / model)
    spare = root / SPARE / "1"
    shutil.copytree(model_repo / "digits-cnn" / "1", spare)
    meta = json.loads((spare / "metadata.json").read_text())
    meta["name"] = SPARE
    (spare / "metadata.json").write_text(json.dumps(meta))
    return root


def _ok(url: str, headers: Mapping[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    """A running ``axon serve``: its gateway URL, process and the Redis it uses, and the
    gateway's gRPC address (``host:port``)."""

    url: str
    process: subprocess.Popen[bytes]
    redis: ManagedRedis
    log_dir: Path
    grpc: str = ""
    started: list[psutil.Process] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)

    def family_processes(self, service_class: str) -> list[psutil.Process]:
        """The processes of one BentoML service (its ``bentoml serve`` and workers)."""
        root = psutil.Process(self.process.pid)
        found = []
        for proc in root.children(recursive=True):
            try:
                if service_class in " ".join(proc.cmdline()):
                    found.append(proc)
                    found.extend(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return list({p.pid: p for p in found}.values())

    def wait_models_ready(self, timeout_s: float = 120.0) -> None:
        for model in MODELS:
            wait_for(
                lambda m=model: self._alive() and _ok(f"{self.url}/v2/models/{m}/ready"),
                timeout_s=timeout_s,
                what=f"{model} ready at the gateway",
            )

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                for p in sorted(self.log_dir.glob("*.log"))
            )
            raise AssertionError(f"axon serve exited ({self.process.returncode}):\n{logs}")
        return True


@pytest.fixture(scope="session")
def stack(
    redis: ManagedRedis, e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("serve-logs")
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, **STACK_ENV, "AXON_REDIS_URL": redis.url}
    env.pop("AXON_API_KEYS", None)
    out = (log_dir / "serve.out").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--models-dir",
            str(e2e_repo),
            "--log-dir",
            str(log_dir),
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Stack(
        f"http://127.0.0.1:{port}", process, redis, log_dir, grpc=f"127.0.0.1:{grpc_port}"
    )
    try:
        running.wait_models_ready(timeout_s=240)
        running.started = psutil.Process(process.pid).children(recursive=True)
        yield running
    finally:
        status = _stop(process)
        leftovers = [c for c in running.started if _running(c)]
        for child in leftovers:
            child.kill()
        out.close()
    # `axon serve` must stop everything it started, cleanly, on SIGTERM.
    assert status == 0, (log_dir / "serve.out").read_text()[-3000:]
    assert not leftovers, f"axon serve left processes behind: {leftovers}"


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return -9
    return process.returncode


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def start_gateway(
    redis: ManagedRedis, e2e_repo: Path, tmp_path: Path
) -> Iterator[Callable[[Mapping[str, str]], str]]:
    """Start ``python -m services.gateway`` with extra settings; returns its URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(extra: Mapping[str, str]) -> str:
        port = free_port()
        env = {
            **os.environ,
            **STACK_ENV,
            "AXON_REDIS_URL": redis.url,
            "AXON_MODELS_DIR": str(e2e_repo),
            **extra,
        }
        with (tmp_path / f"gateway-{port}.log").open("wb") as log:  # the child keeps its copy
            process = subprocess.Popen(
                [sys.executable, "-m", "services.gateway", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, (tmp_path / f"gateway-{port}.log").read_text()
            keys = env.get("AXON_API_KEYS", "")
            auth = {"X-API-Key": keys.split(",")[0]} if keys else None
            return _ok(f"{url}/healthz/ready") and _ok(
                f"{url}/v2/models/digits-cnn/ready", headers=auth
            )

        wait_for(up, timeout_s=60, what="gateway ready")
        return url

    yield start
    for process in processes:
        terminate(process, timeout_s=15)
