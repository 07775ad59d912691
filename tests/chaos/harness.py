"""Real processes for fault injection: Redis, standalone workers, gateways, a load
driver that records every request's fate, and a tap that counts worker replies.

Everything here starts real OS processes (``redis-server``, ``python -m
services.runtime.standalone``, ``python -m services.gateway``) and the ``Procs`` owner
kills whatever is still running at the end (stopped processes are continued first).

The outcome of each request, as the client saw it:
- an HTTP status (``200``, ``429``, ``503``, ``504``, …): an explicit answer;
- ``conn_refused``: the TCP connection was refused (nothing was sent);
- ``conn_reset``: the connection broke after the request was sent (the server died);
- ``lost``: no answer at all within the client's timeout (deadline + a wide margin).

``ReplyTap`` reads Redis' MONITOR stream and decodes every reply a worker RPUSHes, so a
request answered twice *inside* the system (two replies for one id, e.g. computed by
two workers) is seen even though the gateway delivers at most one to its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import psutil
import redis

from services.contract import protocol
from services.runtime.redis_server import find_redis_server, free_port
from tests.support.redis import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Procs:
    """Owns every process a scenario starts; ``close`` kills what is left."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._started.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        for process in self._started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


# --------------------------------------------------------------------------- Redis


class ChaosRedis:
    """A redis-server on a fixed port whose data folder survives restarts.

    ``persistent``: ``appendonly yes`` with ``appendfsync always`` (every acknowledged
    write is on disk before Redis answers), so a SIGKILL loses nothing Redis confirmed.
    Otherwise no persistence at all: a restart starts empty.
    """

    def __init__(self, procs: Procs, data_dir: Path, *, persistent: bool) -> None:
        self.procs = procs
        self.port = free_port()
        self.data_dir = data_dir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:  # type: ignore[type-arg]
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        argv = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
        ]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self.process = self.procs.spawn(f"redis-{self.port}", argv, _env())
        wait_for(self._ping, timeout_s=15, what="redis-server answering PING")

    def _ping(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.procs.log(
            f"redis-{self.port}"
        )
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what the persistence mode wrote."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


# --------------------------------------------------------------------------- workers


@dataclass
class WorkerProc:
    """``python -m services.runtime.standalone`` serving one model (the BentoML services
    run this same worker loop)."""

    instance: str
    process: subprocess.Popen[bytes]

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.process.pid, signum)

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


def start_worker(
    procs: Procs,
    redis_server: ChaosRedis,
    models_dir: Path,
    model: str,
    instance: str,
    *,
    wait: bool = True,
    **settings: str,
) -> WorkerProc:
    """A standalone worker; with ``wait``, once its heartbeat is in Redis."""
    env = _env(
        AXON_REDIS_URL=redis_server.url,
        AXON_MODELS_DIR=str(models_dir),
        AXON_MODEL=model,
        AXON_INSTANCE=instance,
        AXON_PROVIDER="cpu",
        AXON_MAX_QUEUE_DELAY_MS="0",
        AXON_READ_BLOCK_MS="100",
        AXON_HEARTBEAT_INTERVAL_MS="300",
        **{f"AXON_{k.upper()}": v for k, v in settings.items()},
    )
    process = procs.spawn(instance, [sys.executable, "-m", "services.runtime.standalone"], env)
    key = protocol.worker_key(model, 1, instance)
    if not wait:
        return WorkerProc(instance, process)

    def registered() -> bool:
        assert process.poll() is None, procs.log(instance)
        try:
            return bool(redis_server.client().exists(key))
        except redis.RedisError:
            return False

    wait_for(registered, timeout_s=60, what=f"worker {instance} registered")
    return WorkerProc(instance, process)


# --------------------------------------------------------------------------- gateway


@dataclass
class GatewayProc:
    url: str
    port: int
    instance: str
    process: subprocess.Popen[bytes]

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


def start_gateway(
    procs: Procs,
    redis_server: ChaosRedis,
    models_dir: Path,
    model: str,
    instance: str,
    *,
    port: int | None = None,
    headers: Mapping[str, str] | None = None,
    **settings: str,
) -> GatewayProc:
    port = port or free_port()
    env = _env(
        AXON_REDIS_URL=redis_server.url,
        AXON_MODELS_DIR=str(models_dir),
        AXON_GATEWAY_INSTANCE=instance,
        AXON_REGISTRY_REFRESH_MS="100",
        AXON_REPLY_BLOCK_S="0.5",
        AXON_REDIS_TIMEOUT_S="2",
        AXON_LOG_LEVEL="WARNING",
        AXON_GRPC_PORT="0",  # gRPC's default port is fixed; a test gives one if it needs it
        **{f"AXON_{k.upper()}": v for k, v in settings.items()},
    )
    process = procs.spawn(
        instance,
        [sys.executable, "-m", "services.gateway", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, procs.log(instance)
        try:
            response = httpx.get(f"{url}/v2/models/{model}/ready", headers=headers, timeout=2)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout_s=60, what=f"gateway {instance} ready for {model}")
    return GatewayProc(url, port, instance, process)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Result:
    """One request as its client saw it (times: ``time.monotonic()``)."""

    rid: str
    started: float
    ended: float
    outcome: str
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome.startswith("2")

    @property
    def latency(self) -> float:
        return self.ended - self.started


def classify_exception(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "conn_refused"
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.PoolTimeout):
        return "lost"
    if isinstance(exc, httpx.TransportError):
        return "conn_reset"
    raise exc


class Load:
    """Load against one URL from a background thread with its own event loop.

    Closed loop (``concurrency`` clients, each sending back to back) by default; open
    loop at ``rate`` requests/s when given (requests start on schedule whatever
    happens to earlier ones). Each request has a unique ``X-Request-ID``
    (``{prefix}-{n}``) and the header ``X-Axon-Timeout-Ms``. ``client_timeout_s`` is
    how long a client waits before counting a request as lost.
    """

    def __init__(
        self,
        url: Callable[[], str],
        path: str,
        body: Mapping[str, Any],
        *,
        prefix: str,
        timeout_ms: int,
        concurrency: int = 8,
        rate: float | None = None,
        client_timeout_s: float | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.body = dict(body)
        self.prefix = prefix
        self.timeout_ms = timeout_ms
        self.concurrency = concurrency
        self.rate = rate
        self.client_timeout_s = client_timeout_s or timeout_ms / 1000 + 10.0
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._counter = 0
        self._thread = threading.Thread(target=self._main, name=f"load-{prefix}", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Result]:
        """Stop sending; wait for every request in flight (bounded by its timeout)."""
        self._stop.set()
        self._thread.join(timeout=self.client_timeout_s + 30)
        assert not self._thread.is_alive(), "load thread did not finish"
        if self._error is not None:
            raise self._error
        return self.results

    def count(self, predicate: Callable[[Result], bool] = lambda r: True) -> int:
        return sum(1 for r in list(self.results) if predicate(r))

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def _next_id(self) -> str:
        self._counter += 1
        return f"{self.prefix}-{self._counter}"

    async def _one(self, client: httpx.AsyncClient) -> None:
        rid = self._next_id()
        started = time.monotonic()
        headers = {"X-Request-ID": rid, "X-Axon-Timeout-Ms": str(self.timeout_ms)}
        try:
            response = await client.post(self.url() + self.path, json=self.body, headers=headers)
            outcome, retry = str(response.status_code), response.headers.get("retry-after")
        except Exception as exc:
            outcome, retry = classify_exception(exc), None
        self.results.append(Result(rid, started, time.monotonic(), outcome, retry))

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        timeout = httpx.Timeout(self.client_timeout_s, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            if self.rate is None:
                await asyncio.gather(*(self._closed(client) for _ in range(self.concurrency)))
            else:
                await self._open(client, self.rate)

    async def _closed(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            before = len(self.results)
            await self._one(client)
            if self.results[before:] and not self.results[-1].ok:
                await asyncio.sleep(0.05)  # an error may come back at once: do not spin

    async def _open(self, client: httpx.AsyncClient, rate: float) -> None:
        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while not self._stop.is_set():
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)


# --------------------------------------------------------------------------- reply tap


def _unescape_monitor_arg(text: bytes) -> bytes:
    """Undo Redis' ``sdscatrepr`` quoting of one MONITOR argument (without quotes)."""
    out = bytearray()
    i = 0
    simple = {
        ord("n"): 10,
        ord("r"): 13,
        ord("t"): 9,
        ord("a"): 7,
        ord("b"): 8,
        ord("\\"): 92,
        ord('"'): 34,
    }
    while i < len(text):
        c = text[i]
        if c == 92 and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == ord("x") and i + 3 < len(text):
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out.append(simple.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


def parse_monitor_line(line: bytes) -> list[bytes]:
    """``+1.2 [0 127.0.0.1:5] "RPUSH" "k" "v\\x00"`` → ``[b"RPUSH", b"k", b"v\\x00"]``."""
    start = line.find(b'] "')
    if start < 0:
        return []
    args: list[bytes] = []
    i = start + 2
    while i < len(line):
        if line[i] != ord('"'):
            i += 1
            continue
        j = i + 1
        while j < len(line) and line[j] != ord('"'):
            j += 2 if line[j] == 92 else 1
        args.append(_unescape_monitor_arg(line[i + 1 : j]))
        i = j + 1
    return args


@dataclass
class ReplyTap:
    """Counts worker replies per request id by watching Redis' MONITOR (reconnects
    across Redis restarts). ``replies[rid]`` lists each reply's code (``ok`` or the
    error code) in arrival order."""

    port: int
    replies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _connected: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReplyTap:
        self._thread = threading.Thread(target=self._run, name="reply-tap", daemon=True)
        self._thread.start()
        wait_for(self._connected.is_set, timeout_s=10, what="MONITOR tap connected")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def twice(self) -> dict[str, list[str]]:
        return {rid: codes for rid, codes in self.replies.items() if len(codes) > 1}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"MONITOR\r\n")
                    self._read(sock)
            except OSError:
                self._stop.wait(0.05)

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                if line == b"+OK":
                    self._connected.set()
                    continue
                self._line(line)

    def _line(self, line: bytes) -> None:
        args = parse_monitor_line(line)
        if len(args) < 3 or args[0].upper() != b"RPUSH" or not args[1].startswith(b"axon:r:"):
            return
        for payload in args[2:]:
            try:
                message = msgpack.unpackb(payload, raw=False)
            except Exception:  # not a reply we can read; ignore it
                continue
            entry_id = str(message.get("id", ""))
            rid = entry_id.split(":", 1)[1] if ":" in entry_id else entry_id
            code = "ok" if message.get("ok") else str(message.get("error", {}).get("code"))
            self.replies[rid].append(code)


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """The end-of-scenario table: what the clients saw, and how long recovery took."""

    scenario: str
    results: list[Result]
    injected_at: float
    twice: int
    notes: list[str] = field(default_factory=list)
    recovery: float | None = None
    """Set when recovery is measured another way (e.g. backlog drained)."""

    @property
    def codes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.results)

    @property
    def lost(self) -> int:
        return self.codes["lost"]

    def recovery_s(self) -> float:
        """From the injection to the first 2xx answer after which every answer is 2xx."""
        if self.recovery is not None:
            return self.recovery
        ordered = sorted(self.results, key=lambda r: r.started)
        last_bad = max((r.started for r in ordered if not r.ok), default=None)
        if last_bad is None:
            return 0.0
        after = [r.ended for r in ordered if r.ok and r.started > last_bad]
        return (min(after) - self.injected_at) if after else float("nan")

    def accepted_p(self, q: float) -> float:
        times = sorted(r.latency for r in self.results if r.ok)
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    def render(self) -> str:
        codes = self.codes
        ok = sum(n for c, n in codes.items() if c.startswith("2"))
        errors = ", ".join(
            f"{c}: {n}" for c, n in sorted(codes.items()) if not c.startswith("2") and c != "lost"
        )
        rows = [
            ("sent", str(len(self.results))),
            ("answered 2xx", str(ok)),
            ("explicit errors", errors or "none"),
            ("lost (no answer)", str(self.lost)),
            ("answered twice (HTTP)", "0"),
            ("replies twice in Redis", str(self.twice)),
            ("time to recover", f"{self.recovery_s():.2f} s"),
            (
                "2xx latency p50 / p99",
                f"{self.accepted_p(0.5) * 1000:.0f} / {self.accepted_p(0.99) * 1000:.0f} ms",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [
            f"### {self.scenario}",
            "",
            f"| {'measure':<{width}} | value |",
            f"|{'-' * (width + 2)}|-------|",
        ]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def publish(table: Table) -> None:
    """Print the table and append it to ``$AXON_CHAOS_REPORT`` when set."""
    text = table.render()
    print("\n" + text, flush=True)
    target = os.environ.get("AXON_CHAOS_REPORT")
    if target:
        with Path(target).open("a") as report:
            report.write(text + "\n")


@contextlib.contextmanager
def closing(procs: Procs) -> Iterator[Procs]:
    try:
        yield procs
    finally:
        procs.close()


# --------------------------------------------------------------------------- raw sockets


def raw_connection(port: int, payload: bytes = b"", *, timeout_s: float = 30.0) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` that has sent ``payload`` (for a slow
    client: part of a request, then nothing)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    if payload:
        sock.sendall(payload)
    return sock


def read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float | None]:
    """What the server sends until it closes the connection (EOF or reset), and the
    seconds from this call until then; ``None`` when still open after ``timeout_s``."""
    start = time.monotonic()
    data = b""
    while True:
        remaining = start + timeout_s - time.monotonic()
        if remaining <= 0:
            return data, None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return data, None
        except ConnectionResetError:
            return data, time.monotonic() - start
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


# --------------------------------------------------------------------------- measures


def render_measures(scenario: str, rows: list[tuple[str, str]], notes: list[str]) -> str:
    """A scenario's table of free-form measures (``Table`` is for load results)."""
    width = max(len(k) for k, _ in rows)
    lines = [
        f"### {scenario}",
        "",
        f"| {'measure':<{width}} | value |",
        f"|{'-' * (width + 2)}|-------|",
    ]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def publish_measures(scenario: str, rows: list[tuple[str, str]], notes: list[str]) -> None:
    """Print ``render_measures`` and append it to ``$AXON_CHAOS_REPORT`` when set."""
    text = render_measures(scenario, rows, notes)
    print("\n" + text, flush=True)
    target = os.environ.get("AXON_CHAOS_REPORT")
    if target:
        with Path(target).open("a") as report:
            report.write(text + "\n")
