"""Triton-style counters a worker adds to its heartbeat (summed by the gateway for
``/v2/models/{m}/stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Duration:
    """A count and the total nanoseconds spent."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, ns)


@dataclass
class WorkerStats:
    """Cumulative counters since the worker started.

    - ``inference_count``: rows computed successfully; ``execution_count``: ONNX Runtime
      runs (a batch with several shape groups makes several runs).
    - ``success`` / ``fail``: requests answered ok / with an error; ns = enqueue → reply.
    - ``queue``: per computed request, enqueue → its batch started.
    - ``compute_infer``: per run, the ONNX Runtime time.
    - ``expired``, ``redeliveries``, ``dead_letters``: entries in each situation.
    """

    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    expired: int = 0
    redeliveries: int = 0
    dead_letters: int = 0
    last_inference_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
