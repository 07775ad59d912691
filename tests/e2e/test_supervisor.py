"""``axon serve`` as a supervisor, on real processes: its own private Redis on a free
port, ``bentoml serve`` for digits-cnn and the gateway, with API keys on.

1. With ``AXON_API_KEYS`` set it becomes ready and answers an authenticated infer.
2. SIGKILL of the model service → logged, its orphaned worker killed, restarted, 200 again.
3. SIGKILL of its Redis → restarted on the same port, the model ready again, 200 again.
4. Ctrl-C (SIGINT to its process group, as a terminal sends it) → the gateway exits
   before the service, Redis last; status 0.
5. SIGKILL of the supervisor (two replicas, each its own instance) → every process it
   started is gone within seconds and the gateway's port is free.
6. A taken gateway port → status 1 at once, naming the port, nothing started.
7. A child that keeps crashing (a bad gateway setting) → restarted with backoff, then
   given up on: its error shown, the rest stopped in order, status 1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from services.contract import protocol
from services.runtime.redis_server import free_port
from tests.e2e.payloads import infer_image
from tests.support.redis import wait_for

MODEL = "digits-cnn"
KEY = "supervisor-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENV = {
    "AXON_API_KEYS": f"{KEY},other-key-4567",
    "AXON_REGISTRY_REFRESH_MS": "100",
    "AXON_REPLY_BLOCK_S": "0.5",
    "AXON_READ_BLOCK_MS": "100",
    "AXON_HEARTBEAT_INTERVAL_MS": "300",
    "AXON_HEARTBEAT_TTL_MS": "3000",
    "AXON_CLAIM_TIMEOUT_MS": "2000",
    "AXON_CLAIM_INTERVAL_MS": "200",
    "AXON_REDIS_TIMEOUT_S": "2",
    "AXON_PROVIDER": "cpu",
    "AXON_LOG_LEVEL": "INFO",
}
RECOVERY_BOUND_S = 60.0
"""Generous bound on a restart (a 2-core CI machine); the chaos scenario measures it."""
KILL_BOUND_S = 30.0
"""Bound on the children's exit after ``kill -9`` of the supervisor (about 1 s here; the
model services stop their workers gracefully, which may drain for up to 20 s)."""


@dataclass
class Served:
    """A running ``axon serve`` (session leader) and where its output goes."""

    process: subprocess.Popen[bytes]
    url: str
    log_dir: Path

    @property
    def out(self) -> str:
        return (self.log_dir / "serve.out").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.*"))
        )

    def alive(self) -> bool:
        assert self.process.poll() is None, f"axon serve exited:\n{self.logs()}"
        return True

    def child(self, needle: str) -> psutil.Process:
        """The one direct child whose command line contains ``needle``."""
        found = [
            c
            for c in psutil.Process(self.process.pid).children()
            if _running(c) and needle in " ".join(c.cmdline())
        ]
        assert len(found) == 1, (needle, found)
        return found[0]

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def saw(self, pattern: str) -> re.Match[str] | None:
        self.alive()
        return re.search(pattern, self.out)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=AUTH)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _answered(http: httpx.Client) -> bool:
    try:
        response = http.post(
            f"/v2/models/{MODEL}/infer",
            json=infer_image(1),
            headers={"X-Axon-Timeout-Ms": "3000"},
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _start(repo: Path, log_dir: Path, *extra: str) -> Served:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    env.update(ENV)
    with (log_dir / "serve.out").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
             "--models-dir", str(repo), "--log-dir", str(log_dir), "--ready-timeout", "150",
             *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    served = Served(process, f"http://127.0.0.1:{port}", log_dir)
    try:
        wait_for(lambda: served.saw("Axon is ready at"), timeout_s=150, what="axon serve ready")
    except BaseException:
        _kill(served)
        raise
    return served


def _kill(served: Served) -> None:
    """Test clean-up: SIGKILL the supervisor and everything below it."""
    tree = served.tree() if served.process.poll() is None else []
    if served.process.poll() is None:
        served.process.kill()
        served.process.wait()
    for proc in tree:
        if _running(proc):
            proc.kill()


@pytest.fixture(scope="module")
def repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only digits-cnn: one model service (quick to start)."""
    root = tmp_path_factory.mktemp("supervised-models")
    shutil.copytree(model_repo / MODEL, root / MODEL)
    return root


@pytest.fixture(scope="module")
def served(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = _start(repo, tmp_path_factory.mktemp("supervised-logs"))
    try:
        yield running
    finally:
        _kill(running)


def test_1_ready_with_api_keys(served: Served) -> None:
    with served.client() as http:
        assert http.get(f"/v2/models/{MODEL}/ready").status_code == 200
        answer = http.post(f"/v2/models/{MODEL}/infer", json=infer_image(1))
        assert answer.status_code == 200, answer.text
        refused = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json=infer_image(1))
        assert refused.status_code == 401
    assert "API keys are on" in served.out
    assert KEY not in served.out, "the supervisor must not print the key"


def test_2_killed_model_service_is_restarted(served: Served) -> None:
    service = served.child("bentoml")
    workers = service.children(recursive=True)
    assert workers, "bentoml serve runs its worker in a child process"
    service.kill()
    killed = time.monotonic()
    wait_for(
        lambda: served.saw(rf"classifier \(pid {service.pid}\) exited with signal SIGKILL"),
        timeout_s=10,
        what="the exit logged",
    )
    line = served.saw(r"classifier \(pid \d+\) exited .*; restart 1 in ([\d.]+) s")
    assert line and float(line.group(1)) == 0.5, served.out
    with served.client() as http:
        wait_for(lambda: _answered(http), timeout_s=RECOVERY_BOUND_S, what="200 again")
    recovered = time.monotonic() - killed
    assert served.saw(r"classifier restarted \(pid \d+\)")
    new = served.child("bentoml")
    assert new.pid != service.pid
    # Its worker was orphaned (BentoML runs it in its own session); the supervisor
    # adopted and killed it, so the restarted service got the port back.
    assert not [w for w in workers if _running(w)], workers
    print(f"\nmodel service SIGKILL → first 200 again: {recovered:.2f} s")


def test_3_killed_redis_is_restarted_on_the_same_port(served: Served) -> None:
    url = re.search(r"redis\s+(redis://127\.0\.0\.1:(\d+)/0)", served.out)
    assert url, served.out
    old = served.child("redis-server")
    old.kill()
    killed = time.monotonic()
    wait_for(
        lambda: served.saw(r"redis ready again"), timeout_s=RECOVERY_BOUND_S, what="Redis back"
    )
    new = served.child("redis-server")
    assert new.pid != old.pid
    assert f":{url.group(2)}" in " ".join(new.cmdline())  # redis-server shows host:port
    with redis.Redis.from_url(url.group(1), socket_timeout=5) as client:
        assert client.ping()
    assert served.saw(rf"redis \(pid {old.pid}\) exited with signal SIGKILL after [\d.]+ s; ")
    assert served.saw(r"redis \(pid \d+\) exited .*; restart 1 in 0.5 s")
    with served.client() as http:
        wait_for(
            lambda: http.get(f"/v2/models/{MODEL}/ready").status_code == 200,
            timeout_s=RECOVERY_BOUND_S,
            what="the model ready again (worker re-registered in the new Redis)",
        )
        wait_for(lambda: _answered(http), timeout_s=RECOVERY_BOUND_S, what="200 again")
    print(f"\nRedis SIGKILL → first 200 again: {time.monotonic() - killed:.2f} s")


def test_4_ctrl_c_stops_gateway_then_services_then_redis(served: Served) -> None:
    watched = {
        "gateway": served.child("services.gateway"),
        "service": served.child("bentoml"),
        "redis": served.child("redis-server"),
    }
    os.killpg(served.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    gone: dict[str, float] = {}
    deadline = time.monotonic() + 90
    while len(gone) < len(watched) and time.monotonic() < deadline:
        for name, proc in watched.items():
            if name not in gone and not _running(proc):
                gone[name] = time.monotonic()
        time.sleep(0.005)
    assert served.process.wait(timeout=30) == 0, served.out
    assert sorted(gone, key=gone.__getitem__) == ["gateway", "service", "redis"], gone
    stopped = re.findall(r"axon serve: (\S+) stopped", served.out)
    assert stopped == ["gateway", "classifier", "redis"], served.out
    assert "exited with" not in served.out.split("axon serve: stopping\n", 1)[1]


def test_5_sigkill_of_the_supervisor_takes_every_child_along(repo: Path, tmp_path: Path) -> None:
    running = _start(repo, tmp_path, "--replicas", f"{MODEL}=2")
    try:
        redis_url = re.search(r"redis\s+(redis://\S+)", running.out)
        assert redis_url, running.out
        with redis.Redis.from_url(redis_url.group(1), socket_timeout=5) as client:
            keys = sorted(k.decode() for k in client.keys(protocol.worker_key(MODEL, 1, "*")))
        assert len(keys) == 2 and keys[0].endswith("-classifier-1"), keys
        assert keys[1].endswith("-classifier-2"), keys
        tree = running.tree()
        assert len([p for p in tree if "bentoml" in " ".join(p.cmdline())]) >= 4, tree
        port = int(running.url.rsplit(":", 1)[1])
        running.process.kill()
        running.process.wait()
        killed = time.monotonic()
        wait_for(
            lambda: not [p for p in tree if _running(p)],
            timeout_s=KILL_BOUND_S,
            what="every child gone after the supervisor's SIGKILL",
        )
        took = time.monotonic() - killed
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "the gateway port still answers"
        print(f"\nsupervisor SIGKILL → all {len(tree)} processes gone in {took:.2f} s")
    finally:
        _kill(running)


def test_6_a_taken_port_is_an_error_before_anything_starts(repo: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
             "--models-dir", str(repo), "--log-dir", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert not list(tmp_path.glob("*.log")), "nothing should have been started"


def test_7_a_child_that_keeps_crashing_is_given_up_on(repo: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    env["AXON_TIMEOUT_MS"] = "soon"  # the gateway refuses it at start; the services ignore it
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(free_port()),
         "--models-dir", str(repo), "--log-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    restarts = re.findall(r"gateway \(pid \d+\) exited with exit code 2 after [\d.]+ s; (.*)", out)
    assert restarts[:2] == [
        f"restart 1 in 0.5 s (log: {tmp_path}/gateway.log)",
        f"restart 2 in 1.0 s (log: {tmp_path}/gateway.log)",
    ], out
    assert "3 crashes in a row, giving up" in out
    assert "AXON_TIMEOUT_MS" in out, "the gateway's own error is shown"
    assert re.findall(r"axon serve: (\S+) stopped", out) == ["classifier", "redis"], out
    print(f"\ngave up on a crashing gateway and stopped everything in {took:.1f} s")
