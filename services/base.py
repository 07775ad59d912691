"""What the three BentoML model services share: load the model at start, run the Redis
worker loop beside the HTTP API, drain on shutdown, expose readiness and metrics.

A concrete service is ``@bentoml.service`` on a subclass that sets ``family`` and adds
its batchable HTTP API. Lifecycle:

- ``__init__`` (once per BentoML worker process): settings from ``AXON_*`` (failing
  loudly), model validated, loaded and warmed up, ``axon_*`` metrics registered.
- ``start_queue_worker`` (``@bentoml.on_startup``): Redis client and the worker loop as
  an asyncio task; the heartbeat makes the model version ready at the gateway.
- ``stop_queue_worker`` (``@bentoml.on_shutdown``): stop reading, run and acknowledge
  what was already read, delete the heartbeat key, close Redis.
- ``__is_ready__``: ``/readyz`` answers 200 only while the worker is registered.
- ``__is_alive__``: ``/livez`` answers 503 once the worker loop or its heartbeat ended
  unasked (they survive every error, so only a bug ends them): Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import bentoml
import numpy as np
from redis.asyncio import Redis

from services.contract import logs, redis_client
from services.contract.errors import AxonError
from services.contract.inputs import validate_inputs
from services.contract.tracing import Tracing
from services.runtime.executor import BatchExecutor
from services.runtime.metrics import WorkerMetrics
from services.runtime.prepare import Tensors
from services.runtime.recorder import Recorder
from services.runtime.session import ModelSession
from services.runtime.settings import WorkerSettings
from services.runtime.stats import WorkerStats
from services.runtime.worker import load_model, start_tracing
from services.runtime.worker_group import WorkerGroup

log = logging.getLogger(__name__)

_metrics: WorkerMetrics | None = None

REDIS_TIMEOUT_MARGIN_S = 10.0
"""Socket timeout beyond the longest blocking read: no Redis call can hang forever."""

DRAIN_TIMEOUT_S = 20.0
"""Longest graceful drain on shutdown; unacknowledged entries are claimed by others."""


def _configure_logging() -> None:
    """BentoML configures only its own loggers; give ``services.*`` a handler of its own
    (JSON lines by default; ``logs.configure``)."""
    if not logging.getLogger("services").handlers:
        logs.configure(os.environ, "services")


def _process_metrics() -> WorkerMetrics:
    """The worker metrics, registered once per process with BentoML's metrics backend."""
    global _metrics
    if _metrics is None:
        _metrics = WorkerMetrics.create(bentoml.metrics)
    return _metrics


class ModelServiceBase:
    """Shared body of the classifier, forecaster and generator services."""

    family: ClassVar[str]

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        _configure_logging()
        self.settings = WorkerSettings.from_env(os.environ if env is None else env, self.family)
        self.session: ModelSession = load_model(self.settings)
        self.metadata = self.session.metadata
        self.metrics = _process_metrics()
        # The HTTP API's runs: the same metrics as the queue worker's, counters of their
        # own (the heartbeat publishes the queue worker's only).
        self._http_recorder = Recorder(
            WorkerStats(),
            self.metrics,
            model=self.metadata.name,
            version=self.metadata.version,
            provider=self.session.provider,
        )
        self._executor = BatchExecutor(self.session.run)
        self._redis: Redis[bytes] | None = None
        self._worker: WorkerGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._tracing: Tracing | None = None
        self._stopping = False
        log.info(
            "%s service: %s version %d on %s",
            self.family,
            self.metadata.name,
            self.metadata.version,
            self.session.provider,
        )

    @bentoml.on_startup  # type: ignore[untyped-decorator]
    async def start_queue_worker(self) -> None:
        """Start the Redis worker loop as a task beside the HTTP API."""
        self._redis = redis_client.connect(
            self.settings.redis_url,
            mode=self.settings.redis_mode,
            fast=self.settings.redis_fast,
            socket_timeout_s=self.settings.read_block_ms / 1000 + REDIS_TIMEOUT_MARGIN_S,
            connect_timeout_s=REDIS_TIMEOUT_MARGIN_S,
        )
        self._tracing = start_tracing(self.settings, f"axon-{self.family}")
        self._worker = WorkerGroup(
            self._redis, self.session, self.settings, metrics=self.metrics, tracing=self._tracing
        )
        self._task = asyncio.create_task(self._worker.run(), name="axon-queue-worker")
        self._task.add_done_callback(_log_worker_exit)

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    async def stop_queue_worker(self) -> None:
        """Graceful stop: no more reads; finish, answer and acknowledge; deregister."""
        self._stopping = True
        if self._worker is not None and self._task is not None:
            self._worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=DRAIN_TIMEOUT_S)
            except TimeoutError:
                stack = io.StringIO()
                self._task.print_stack(file=stack)
                log.error(
                    "queue worker did not drain within %ss; cancelling it. Where it was:\n%s",
                    DRAIN_TIMEOUT_S,
                    stack.getvalue(),
                )
                self._task.cancel()
            except Exception:  # already logged by the done callback
                log.debug("queue worker ended with an error")
        if self._redis is not None:
            await redis_client.close(self._redis)
        if self._tracing is not None:
            await asyncio.to_thread(self._tracing.shutdown)  # exports what is buffered

    def __is_ready__(self) -> bool:
        return self._worker is not None and self._worker.ready

    def __is_alive__(self) -> bool:
        """``/livez``: false once the queue worker's loop or heartbeat has ended without
        a stop being asked. They survive every error (logged, retried), so this means a
        bug; Kubernetes' liveness probe then restarts the pod instead of leaving a
        process that serves nothing while its HTTP API looks healthy."""
        if self._stopping or self._worker is None or self._task is None:
            return True
        return not self._task.done() and self._worker.alive

    def run_requests(self, requests: list[Tensors]) -> list[Tensors]:
        """Validate each request's inputs and run them all with the batch executor
        (one ONNX Runtime run per shape group). HTTP API path; BentoML's adaptive
        batching has already gathered ``requests``.

        Raises ``bentoml.exceptions.InvalidArgument`` (HTTP 400) for bad input.
        """
        try:
            for inputs in requests:
                validate_inputs(self.metadata, inputs)
        except AxonError as exc:
            raise bentoml.exceptions.InvalidArgument(str(exc)) from None
        result = self._executor.execute(requests)
        for run in result.runs:
            self._http_recorder.ran(run.rows, run.seconds)
        outputs = []
        for outcome in result.outcomes:
            if outcome.outputs is None:
                raise bentoml.exceptions.InternalServerError(str(outcome.error))
            outputs.append(outcome.outputs)
        return outputs

    def describe(self) -> dict[str, Any]:
        """The metadata the worker publishes, plus provider and worker state."""
        stats = self._worker.stats() if self._worker is not None else {}
        return {
            "model": self.metadata.name,
            "version": self.metadata.version,
            "provider": self.session.provider,
            "instance": self.settings.instance,
            "ready": self.__is_ready__(),
            "metadata": dict(self.metadata.raw),
            "stats": stats,
        }


def as_float32(value: Any, what: str) -> np.ndarray[Any, Any]:
    """Convert a JSON-decoded value to float32, or raise a 400 naming ``what``."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise bentoml.exceptions.InvalidArgument(f"{what}: not a numeric array ({exc})") from None


def _log_worker_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("queue worker stopped with an error", exc_info=task.exception())
