"""Worker settings: one frozen object built from ``AXON_*`` variables at start-up.

Every key ``AXON_X`` may be overridden per model family by ``AXON_{FAMILY}_X`` (for
example ``AXON_FORECASTER_MAX_BATCH_ROWS``), so one environment can configure the three
services that ``axon serve`` starts. A bad value raises ``SettingsError`` naming the
variable; nothing reads the environment after start-up.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.contract import redis_client
from services.contract.env import parse_bool
from services.contract.errors import SettingsError
from services.contract.tracing import TracingConfig

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")

DEFAULT_MODELS: dict[str, str] = {
    "classifier": "digits-cnn",
    "forecaster": "sunspots-lstm",
    "generator": "digits-gan",
}
"""Model served by each family's service when ``AXON_{FAMILY}_MODEL`` is unset."""

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a model worker needs; see docs/services.md for the table."""

    redis_url: str
    model: str
    model_version: int | None  # None = latest
    models_dir: Path
    instance: str
    provider: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_batch_rows: int = 64
    job_batch_rows: int = 16
    """``AXON_JOB_BATCH_ROWS``: the most rows of async jobs (and shadow copies) one batch
    carries, default a quarter of ``max_batch_rows``: a synchronous request that arrives
    while a batch of jobs runs waits for at most this many job rows."""
    nice: int = 0
    """``AXON_WORKER_NICE`` (0–19): the worker process's CPU priority, raised to this
    niceness at start-up (``priority``); for a shadow or candidate version sharing CPUs
    with the primary."""
    max_queue_delay_ms: float = 0.0
    read_block_ms: int = 500
    claim_timeout_ms: int = 30_000
    claim_interval_ms: int = 1_000
    max_deliveries: int = 3
    heartbeat_interval_ms: int = 2_000
    heartbeat_ttl_ms: int = 6_000
    reply_ttl_s: int = 60
    dlq_maxlen: int = 10_000
    warmup: bool = True
    partitions: int = 1
    """``AXON_PARTITIONS``: stream partitions of the model version this process reads
    (one worker loop each); the gateway spreads requests over them."""
    redis_mode: str = "auto"
    """``AXON_REDIS_MODE``: standalone | cluster | sentinel, or auto (the URL's scheme;
    ``services.contract.redis_client``)."""
    redis_fast: bool = True
    """``AXON_REDIS_FAST``: the request path's Redis commands (the stream read, the
    completion scripts) over Axon's own RESP connections
    (``services.contract.fast_redis``); 0 = redis-py's for all."""
    tracing: TracingConfig = field(default_factory=TracingConfig)
    """OpenTelemetry tracing, from the standard ``OTEL_*`` variables (off by default;
    ``services.contract.tracing``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], family: str | None = None) -> WorkerSettings:
        """Build settings from ``env`` (``os.environ`` in production, a dict in tests).

        ``family`` (``classifier`` | ``forecaster`` | ``generator``) enables the
        ``AXON_{FAMILY}_*`` overrides and the family's default model name.
        """
        reader = _Reader(env, family)
        default_model = DEFAULT_MODELS.get(family or "")
        model = reader.get("MODEL", str, default_model)
        if not model:
            raise SettingsError(f"{reader.names('MODEL')}: is required (the model name to serve)")
        max_batch_rows = reader.get("MAX_BATCH_ROWS", _positive_int, 64)
        settings = cls(
            redis_url=reader.get("REDIS_URL", str, None) or _missing(reader, "REDIS_URL"),
            redis_mode=reader.get("REDIS_MODE", redis_client.parse_mode, "auto"),
            redis_fast=reader.get("REDIS_FAST", parse_bool, True),
            partitions=reader.get("PARTITIONS", _partitions, 1),
            model=model,
            model_version=reader.get("MODEL_VERSION", _parse_version, None),
            models_dir=Path(reader.get("MODELS_DIR", str, "exported_models")),
            instance=reader.get("INSTANCE", str, f"{socket.gethostname()}-{os.getpid()}"),
            provider=reader.get("PROVIDER", _parse_provider, "auto"),
            intra_op_threads=reader.get("INTRA_OP_THREADS", _positive_int, 1),
            inter_op_threads=reader.get("INTER_OP_THREADS", _positive_int, 1),
            max_batch_rows=max_batch_rows,
            job_batch_rows=reader.get("JOB_BATCH_ROWS", _positive_int, max(1, max_batch_rows // 4)),
            nice=reader.get("WORKER_NICE", _niceness, 0),
            max_queue_delay_ms=reader.get("MAX_QUEUE_DELAY_MS", _non_negative_float, 0.0),
            read_block_ms=reader.get("READ_BLOCK_MS", _positive_int, 500),
            claim_timeout_ms=reader.get("CLAIM_TIMEOUT_MS", _positive_int, 30_000),
            claim_interval_ms=reader.get("CLAIM_INTERVAL_MS", _positive_int, 1_000),
            max_deliveries=reader.get("MAX_DELIVERIES", _positive_int, 3),
            heartbeat_interval_ms=reader.get("HEARTBEAT_INTERVAL_MS", _positive_int, 2_000),
            heartbeat_ttl_ms=reader.get("HEARTBEAT_TTL_MS", _positive_int, 6_000),
            reply_ttl_s=reader.get("REPLY_TTL_S", _positive_int, 60),
            dlq_maxlen=reader.get("DLQ_MAXLEN", _positive_int, 10_000),
            warmup=reader.get("WARMUP", parse_bool, True),
            tracing=TracingConfig.from_env(env),
        )
        if settings.heartbeat_ttl_ms <= settings.heartbeat_interval_ms:
            raise SettingsError(
                f"{reader.names('HEARTBEAT_TTL_MS')}: must be greater than "
                f"AXON_HEARTBEAT_INTERVAL_MS ({settings.heartbeat_interval_ms}), "
                f"got {settings.heartbeat_ttl_ms}"
            )
        if settings.job_batch_rows > settings.max_batch_rows:
            raise SettingsError(
                f"{reader.names('JOB_BATCH_ROWS')}: must be at most AXON_MAX_BATCH_ROWS "
                f"({settings.max_batch_rows}), got {settings.job_batch_rows}"
            )
        redis_client.parse_target(settings.redis_url, settings.redis_mode)  # fails early
        return settings


class _Reader:
    """Looks a key up as ``AXON_{FAMILY}_{KEY}`` first, then ``AXON_{KEY}``."""

    def __init__(self, env: Mapping[str, str], family: str | None) -> None:
        self._env = env
        self._prefixes = [f"AXON_{family.upper()}_"] if family else []
        self._prefixes.append("AXON_")

    def names(self, key: str) -> str:
        return " or ".join(prefix + key for prefix in self._prefixes)

    def get(self, key: str, parse: Callable[[str], T], default: T) -> T:
        for prefix in self._prefixes:
            name = prefix + key
            raw = self._env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                return parse(raw.strip())
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r}: {exc}") from None
        return default


def _missing(reader: _Reader, key: str) -> str:
    raise SettingsError(f"{reader.names(key)}: is required (for example redis://127.0.0.1:6379/0)")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def _parse_version(raw: str) -> int | None:
    if raw == "latest":
        return None
    if not raw.isdigit() or raw.startswith("0"):
        raise ValueError("must be 'latest' or a positive integer without leading zeros")
    return int(raw)


def _parse_provider(raw: str) -> str:
    value = raw.lower()
    if value not in PROVIDERS:
        raise ValueError(f"must be one of {', '.join(PROVIDERS)}")
    return value


def _niceness(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 19:
        raise ValueError("must be a niceness from 0 (normal) to 19 (lowest CPU priority)")
    return value


def _partitions(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_PARTITIONS:
        raise ValueError(f"must be at most {MAX_PARTITIONS}")
    return value


MAX_PARTITIONS = 64
"""``AXON_PARTITIONS`` upper bound (each partition is a worker loop and a connection)."""
