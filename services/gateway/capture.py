"""Capture (``AXON_CAPTURE_FRACTION``): an opt-in sample of each model's synchronous
requests with their replies, appended to the model's capped capture stream
(``services.contract.capture``) for ``axon replay``.

Contracts:

- **Off by default** (fraction 0: nothing is drawn, encoded or stored).
- **Never in the request's way.** ``record`` is called once the primary answered; it
  draws, encodes the reply and appends to an in-process buffer (no await). One writer
  task per process sends what gathered in an event-loop tick in one round trip per
  model. At most ``BUFFER`` captures wait in the buffer; beyond it (Redis slow or
  down) they are dropped and counted, and a failed write is counted, never raised.
- **Capped.** Each model's stream keeps about its newest ``AXON_CAPTURE_MAX_ENTRIES``;
  a request whose entry body is over ``AXON_CAPTURE_MAX_BYTES`` is not captured
  (``too_large``).
- What is captured: the request's stream entry body as queued (its inputs and
  parameters, a generator's seed included), the reply, the version that answered and
  the gateway's queue round trip (submission to reply). Every synchronous inference
  request (REST, task endpoints, gRPC) is a candidate, versioned or not; async jobs and
  shadow copies are not.

Counted in ``axon_captured_total{model,outcome}``: ``stored``, ``dropped``,
``too_large``, ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from services.contract.capture import Captured
from services.contract.codec import Reply, encode_reply
from services.contract.resilience import FailureLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import ModelVersion
from services.gateway.settings import GatewaySettings
from services.gateway.transport import Transport

log = logging.getLogger(__name__)

BUFFER = 1000
"""Captures waiting to be written, at most (per gateway process)."""


class Capturer:
    """Samples answered requests into the capture streams (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        *,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._transport = transport
        self._settings = settings
        self._metrics = metrics
        self._draw = draw
        self._buffer: dict[str, list[Captured]] = {}
        self._buffered = 0
        self._writer: asyncio.Task[None] | None = None
        self._failures = FailureLog(log, "capture writer", time.monotonic)

    @property
    def enabled(self) -> bool:
        return self._settings.capture_fraction > 0.0

    def record(
        self,
        mv: ModelVersion,
        body: bytes,
        request_id: str,
        outputs: Mapping[str, np.ndarray[Any, Any]],
        seconds: float,
    ) -> None:
        """Maybe capture one answered request (``seconds``: its queue round trip)."""
        if self._draw() >= self._settings.capture_fraction:
            return
        if len(body) > self._settings.capture_max_bytes:
            self._count(mv.name, "too_large")
            return
        if self._buffered >= BUFFER:
            self._count(mv.name, "dropped")
            return
        reply = encode_reply(Reply.success(request_id, dict(outputs)))
        item = Captured(
            request_id, mv.version, mv.metadata.task, body, reply, int(seconds * 1e6),
            int(time.time() * 1000),
        )  # fmt: skip
        self._buffer.setdefault(mv.name, []).append(item)
        self._buffered += 1
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="axon-capture-writer"
            )

    async def _write(self) -> None:
        """Write the buffer, one ``Transport.capture`` per model, until it is empty."""
        try:
            while self._buffer:
                buffer, self._buffer = self._buffer, {}
                self._buffered = 0
                await asyncio.gather(*(self._send(m, items) for m, items in buffer.items()))
        finally:
            self._writer = None

    async def _send(self, model: str, items: list[Captured]) -> None:
        try:
            await self._transport.capture(
                model,
                items,
                maxlen=self._settings.capture_max_entries,
                max_age_s=self._settings.capture_max_age_s,
            )
        except Exception as exc:  # Redis down or refusing: counted, never raised
            self._failures.failed(exc, retry_in_s=0.0)
            self._count(model, "failed", len(items))
            return
        self._failures.recovered()
        self._count(model, "stored", len(items))

    def _count(self, model: str, outcome: str, n: int = 1) -> None:
        self._metrics.captured.labels(model, outcome).inc(n)

    async def aclose(self) -> None:
        """Write what is buffered (at shutdown; the transport is still open)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
