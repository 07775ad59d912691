"""Gateway settings: one frozen object built from ``AXON_*`` variables at start-up.

A bad value raises ``SettingsError`` naming the variable; nothing reads the environment
while serving a request. The table is in docs/gateway.md.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.contract import redis_client
from services.contract.env import parse_bool
from services.contract.errors import SettingsError
from services.contract.metadata import MODEL_NAME
from services.contract.tracing import TracingConfig
from services.gateway.hold import NO_HOLD, HoldPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs (see docs/gateway.md for the variables)."""

    redis_url: str
    instance: str
    redis_mode: str = "auto"
    """``AXON_REDIS_MODE``: standalone | cluster | sentinel, or auto (the URL's scheme;
    ``services.contract.redis_client``)."""
    redis_fast: bool = True
    """``AXON_REDIS_FAST``: the request path's Redis commands over Axon's own RESP
    connections (``services.contract.fast_redis``); 0 = redis-py's for all."""
    models_dir: Path | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    """Keys for changing routing rules (PUT/DELETE /v1/models/{m}/routing); unset: an
    API key (or nothing, without API keys) is enough (docs/gateway.md)."""
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 256
    timeout_ms: int = 30_000
    model_timeouts_ms: Mapping[str, int] = field(default_factory=dict)
    max_timeout_ms: int = 300_000
    backlog_limit: int = 1_000
    model_backlog_limits: Mapping[str, int] = field(default_factory=dict)
    retry_after_s: int = 1
    registry_refresh_ms: int = 500
    reply_block_s: float = 1.0
    redis_timeout_s: float = 5.0
    max_inflight_bytes: int = 32 * 1024 * 1024
    """Request bodies held at once (``middleware/inflight_bytes``); beyond it, 503."""
    backlog_bytes: int = 64 * 1024 * 1024
    """Encoded request bytes queued per model version in Redis; beyond it, 429 (a
    single request over it, 413)."""
    no_worker_wait_ms: int = 15_000
    """A model version whose workers all vanished less than this long ago still takes
    requests (queued, durable; they wait for a worker until their deadline): a worker
    restart costs no failed requests. After it, 503 at once."""
    hold_without_workers: HoldPolicy = NO_HOLD
    """``AXON_HOLD_WITHOUT_WORKERS``: model versions whose requests are queued and wait
    for a worker (until their deadline) even when none serves them and none did within
    ``no_worker_wait_ms``: scale from zero (``hold``, docs/gateway.md)."""
    grpc_port: int = 8001
    """Port of the OIP gRPC server in the gateway process (Triton's 8001); 0 = none."""
    grpc_host: str = "127.0.0.1"
    """Address the gRPC server binds: ``python -m services.gateway`` sets its ``--host``."""
    idempotency_ttl_s: int = 3600
    """How long an ``Idempotency-Key``'s response is kept for retries."""
    idempotency_max_bytes: int = 1024 * 1024
    """Responses larger than this are not kept (a retry with the key runs again)."""
    job_ttl_s: int = 3600
    """How long an async job (``Prefer: respond-async``) and its result are kept: from
    submission, and again from its answer."""
    job_timeout_ms: int = 600_000
    """An async job's deadline (ms from submission); at most ``job_ttl_s``."""
    job_backlog_limit: int = 10_000
    """Jobs allowed in a model version's job stream before new ones get 429."""
    job_backlog_bytes: int = 64 * 1024 * 1024
    """Encoded request bytes of jobs queued per model version; beyond it, 429."""
    shadow_max_inflight: int = 64
    """Shadow copies (``services.gateway.shadow``) one gateway process has in flight at
    most; a request sampled beyond it is not copied (counted ``dropped``)."""
    shadow_timeout_ms: int = 10_000
    """A shadow copy's own deadline (ms from its submission); past it, ``timeout``."""
    shadow_backlog_limit: int = 100
    """A shadow copy is not queued while the shadow version's job stream holds this many
    entries (counted ``refused``): below the job limit, so shadows never take the last
    places of clients' async jobs."""
    shadow_poll_ms: int = 10
    """How often the stored replies of shadow copies in flight are read back (one round
    trip per shadow version): the resolution of the shadow's measured latency."""
    capture_fraction: float = 0.0
    """Share of each model's synchronous requests captured with their replies for
    ``axon replay`` (``services.gateway.capture``); 0 = off."""
    capture_max_entries: int = 10_000
    """Captures kept per model (its stream is trimmed to about this many, oldest first)."""
    capture_max_bytes: int = 1024 * 1024
    """A request whose entry body is larger is not captured."""
    capture_max_age_s: int = 7 * 24 * 3600
    """Captures older than this are dropped, and a model's capture stream expires this
    long after its last capture (``services.contract.capture``)."""
    reuse_port: bool = False
    """Share the HTTP and gRPC ports with other gateway processes (SO_REUSEPORT):
    ``python -m services.gateway --reuse-port``, which ``axon serve --gateway-workers N``
    passes when N > 1."""
    # --- Slow clients, connections, images (server.py, images.py) -----------------
    header_timeout_s: float = 10.0
    """A connection must complete a request's headers within this (from open or from
    the end of the previous response) or it is closed."""
    body_timeout_s: float = 60.0
    """A request's body must be complete this long after its headers or it gets 408 and
    the connection is closed: 8 MiB (AXON_MAX_BODY_BYTES) needs ≥ 140 KB/s."""
    max_connections: int = 512
    """Open connections served normally; beyond it (and a small reserve for health
    probes) new connections are refused (see server.py)."""
    max_image_pixels: int = 4096 * 4096
    """Width × height of one image, read from its header before decoding."""
    max_request_pixels: int = 64 * 1024 * 1024
    """Width × height summed over a request's images (256 of 512², or 4 of 4096²)."""
    image_threads: int = 2
    """Threads that decode and encode images (off the event loop)."""
    # --- end of slow clients, connections, images ---------------------------------
    gc_threshold: int = 10_000
    """``AXON_GC_THRESHOLD``: allocations between collections of the garbage collector's
    youngest generation, with start-up's objects frozen (``gc_tuning``); 0
    leaves CPython's collector as it is (700)."""
    tracing: TracingConfig = field(default_factory=TracingConfig)
    """OpenTelemetry tracing, from the standard ``OTEL_*`` variables (off by default;
    ``services.contract.tracing``, docs/observability.md)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        """Build settings from ``env`` (``os.environ`` in production, a dict in tests)."""
        read = _Reader(env)
        redis_url = read("AXON_REDIS_URL", str, "")
        if not redis_url:
            raise SettingsError(
                "AXON_REDIS_URL: is required (for example redis://127.0.0.1:6379/0)"
            )
        models_dir = read("AXON_MODELS_DIR", str, "")
        settings = cls(
            redis_url=redis_url,
            redis_mode=read("AXON_REDIS_MODE", redis_client.parse_mode, "auto"),
            redis_fast=read("AXON_REDIS_FAST", parse_bool, True),
            instance=read(
                "AXON_GATEWAY_INSTANCE",
                str,
                f"gw-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            ),
            models_dir=Path(models_dir) if models_dir else None,
            api_keys=read("AXON_API_KEYS", _keys, ()),
            admin_keys=read("AXON_ADMIN_KEYS", _keys, ()),
            max_body_bytes=read("AXON_MAX_BODY_BYTES", _positive_int, 8 * 1024 * 1024),
            max_rows=read("AXON_MAX_ROWS", _positive_int, 256),
            timeout_ms=read("AXON_TIMEOUT_MS", _positive_int, 30_000),
            model_timeouts_ms=read("AXON_MODEL_TIMEOUTS_MS", _model_map, {}),
            max_timeout_ms=read("AXON_MAX_TIMEOUT_MS", _positive_int, 300_000),
            backlog_limit=read("AXON_BACKLOG_LIMIT", _positive_int, 1_000),
            model_backlog_limits=read("AXON_MODEL_BACKLOG_LIMITS", _model_map, {}),
            retry_after_s=read("AXON_RETRY_AFTER_S", _positive_int, 1),
            registry_refresh_ms=read("AXON_REGISTRY_REFRESH_MS", _positive_int, 500),
            reply_block_s=read("AXON_REPLY_BLOCK_S", _positive_float, 1.0),
            redis_timeout_s=read("AXON_REDIS_TIMEOUT_S", _positive_float, 5.0),
            max_inflight_bytes=read("AXON_MAX_INFLIGHT_BYTES", _positive_int, 32 * 1024 * 1024),
            idempotency_ttl_s=read("AXON_IDEMPOTENCY_TTL_S", _positive_int, 3600),
            idempotency_max_bytes=read("AXON_IDEMPOTENCY_MAX_BYTES", _positive_int, 1024 * 1024),
            backlog_bytes=read("AXON_BACKLOG_BYTES", _positive_int, 64 * 1024 * 1024),
            job_ttl_s=read("AXON_JOB_TTL_S", _positive_int, cls.job_ttl_s),
            job_timeout_ms=read("AXON_JOB_TIMEOUT_MS", _positive_int, cls.job_timeout_ms),
            job_backlog_limit=read("AXON_JOB_BACKLOG_LIMIT", _positive_int, cls.job_backlog_limit),
            job_backlog_bytes=read("AXON_JOB_BACKLOG_BYTES", _positive_int, cls.job_backlog_bytes),
            shadow_max_inflight=read(
                "AXON_SHADOW_MAX_INFLIGHT", _positive_int, cls.shadow_max_inflight
            ),
            shadow_timeout_ms=read("AXON_SHADOW_TIMEOUT_MS", _positive_int, cls.shadow_timeout_ms),
            shadow_backlog_limit=read(
                "AXON_SHADOW_BACKLOG_LIMIT", _positive_int, cls.shadow_backlog_limit
            ),
            shadow_poll_ms=read("AXON_SHADOW_POLL_MS", _positive_int, cls.shadow_poll_ms),
            capture_fraction=read("AXON_CAPTURE_FRACTION", _fraction, cls.capture_fraction),
            capture_max_entries=read(
                "AXON_CAPTURE_MAX_ENTRIES", _positive_int, cls.capture_max_entries
            ),
            capture_max_bytes=read("AXON_CAPTURE_MAX_BYTES", _positive_int, cls.capture_max_bytes),
            capture_max_age_s=read("AXON_CAPTURE_MAX_AGE_S", _positive_int, cls.capture_max_age_s),
            no_worker_wait_ms=read("AXON_NO_WORKER_WAIT_MS", _non_negative_int, 15_000),
            hold_without_workers=read("AXON_HOLD_WITHOUT_WORKERS", HoldPolicy.parse, NO_HOLD),
            grpc_port=read("AXON_GRPC_PORT", _port, cls.grpc_port),
            # --- slow clients, connections, images ---
            header_timeout_s=read("AXON_HEADER_TIMEOUT_S", _positive_float, cls.header_timeout_s),
            body_timeout_s=read("AXON_BODY_TIMEOUT_S", _positive_float, cls.body_timeout_s),
            max_connections=read("AXON_MAX_CONNECTIONS", _positive_int, cls.max_connections),
            max_image_pixels=read("AXON_MAX_IMAGE_PIXELS", _positive_int, cls.max_image_pixels),
            max_request_pixels=read(
                "AXON_MAX_REQUEST_PIXELS", _positive_int, cls.max_request_pixels
            ),
            image_threads=read("AXON_IMAGE_THREADS", _positive_int, cls.image_threads),
            gc_threshold=read("AXON_GC_THRESHOLD", _non_negative_int, cls.gc_threshold),
            tracing=TracingConfig.from_env(env),
        )
        if set(settings.admin_keys) & set(settings.api_keys):
            raise SettingsError(
                "AXON_ADMIN_KEYS: a key is also in AXON_API_KEYS; every API key holder "
                "could then change routing rules. Use separate keys"
            )
        for model, value in settings.model_timeouts_ms.items():
            if value > settings.max_timeout_ms:
                raise SettingsError(
                    f"AXON_MODEL_TIMEOUTS_MS: {model}={value} must not exceed "
                    f"AXON_MAX_TIMEOUT_MS ({settings.max_timeout_ms})"
                )
        if settings.timeout_ms > settings.max_timeout_ms:
            raise SettingsError(
                f"AXON_TIMEOUT_MS={settings.timeout_ms}: must not exceed "
                f"AXON_MAX_TIMEOUT_MS ({settings.max_timeout_ms})"
            )
        if settings.job_timeout_ms > settings.job_ttl_s * 1000:
            raise SettingsError(
                f"AXON_JOB_TIMEOUT_MS={settings.job_timeout_ms}: must not exceed "
                f"AXON_JOB_TTL_S ({settings.job_ttl_s} s): a job would expire before its "
                "deadline"
            )
        redis_client.parse_target(settings.redis_url, settings.redis_mode)  # fails early
        return settings

    def timeout_for(self, model: str) -> int:
        """Default deadline (ms from arrival) of a request for ``model``."""
        return self.model_timeouts_ms.get(model, self.timeout_ms)

    def backlog_limit_for(self, model: str) -> int:
        """Entries allowed in a model version's stream before new work gets 429."""
        return self.model_backlog_limits.get(model, self.backlog_limit)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r}: {exc}") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port 1..65535, or 0 for none")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not 0.0 < value < float("inf"):
        raise ValueError("must be a finite number > 0")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError("must be a number from 0 to 1")
    return value


def _keys(raw: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    if any(len(key) < 8 for key in keys):
        raise ValueError("every API key must have at least 8 characters")
    return keys


def _model_map(raw: str) -> dict[str, int]:
    """``model=value,model=value`` → dict (values positive integers)."""
    result: dict[str, int] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not MODEL_NAME.match(name):
            raise ValueError(f"expected model=value pairs separated by commas, got {item!r}")
        result[name] = _positive_int(value.strip())
    return result
