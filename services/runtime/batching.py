"""Pure batch collation: which pending entries run now, which expired, how long to wait.

No I/O and no clock: the caller passes ``now_ms``. Rows, not requests, fill a batch
(a request may carry several rows). The rules (DESIGN.md, "Batching"):

- An entry whose deadline is at or before ``now_ms`` is expired: answered with a
  deadline error, never computed.
- Live entries are taken in arrival order while their rows fit in ``max_batch_rows``;
  the first one is always taken, even when it alone has more rows than the limit.
- Low-priority entries (``low``: async jobs and shadow copies) fill at most
  ``max_low_rows`` of a batch: one that would pass it is left for a later batch and the
  entries after it are still considered, so a request never waits behind jobs that do
  not fit (unless it is first, a low entry is taken whatever its rows, as above).
- The batch is *ready* when it is full (the limit is reached, or an entry was left
  out), when ``max_queue_delay_ms`` has passed since the oldest pending entry arrived,
  when the earliest deadline among live entries is reached, or when ``flush`` is set
  (draining on shutdown). Otherwise ``wait_ms`` says how long more entries may be awaited.
- ``due_ms`` is when the batch is ready without more entries; it does not depend on
  ``now_ms``. A batch that is not ready stays so until ``due_ms`` (every live deadline is at
  or after it, so nothing expires before): collating its ``remaining`` again at a later
  ``t < due_ms`` gives the same answer with ``wait_ms = due_ms - t``. The worker relies on
  this to collate once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Schedulable(Protocol):
    """What collation needs to know about a pending entry."""

    @property
    def rows(self) -> int: ...

    @property
    def arrived_ms(self) -> float:
        """When the worker received the entry (unix ms, the same clock as ``now_ms``)."""
        ...

    @property
    def deadline_ms(self) -> float | None:
        """Unix ms after which the entry must not be computed; None = no deadline."""
        ...


E = TypeVar("E", bound=Schedulable)


@dataclass(frozen=True)
class Collation(Generic[E]):
    """Result of ``collate``: ``batch`` to run now (may be empty), ``expired`` to answer
    with a deadline error, ``remaining`` to keep pending, ``wait_ms`` (> 0 only when
    the batch is not ready) for how long more entries may be awaited, and ``due_ms``
    (unix ms; ``math.inf`` when nothing is live) when the batch is ready at the latest:
    the oldest arrival plus the queue delay, or the earliest live deadline if sooner."""

    batch: list[E]
    expired: list[E]
    remaining: list[E]
    wait_ms: float
    due_ms: float

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.batch)


def is_expired(entry: Schedulable, now_ms: float) -> bool:
    """True when ``entry``'s deadline is at or before ``now_ms``."""
    return entry.deadline_ms is not None and entry.deadline_ms <= now_ms


def collate(
    pending: Sequence[E],
    *,
    max_batch_rows: int,
    max_queue_delay_ms: float,
    now_ms: float,
    flush: bool = False,
    low: Callable[[E], bool] | None = None,
    max_low_rows: int | None = None,
) -> Collation[E]:
    """Split ``pending`` (in arrival order) into batch / expired / remaining (see module
    doc); ``low`` tells the low-priority entries, of which a batch takes at most
    ``max_low_rows`` rows (None: no separate limit)."""
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be >= 1")
    if max_low_rows is not None and max_low_rows < 1:
        raise ValueError("max_low_rows must be >= 1")
    expired = [entry for entry in pending if is_expired(entry, now_ms)]
    live = [entry for entry in pending if not is_expired(entry, now_ms)]
    if not live:
        return Collation(batch=[], expired=expired, remaining=[], wait_ms=0.0, due_ms=math.inf)

    taken: list[E] = []
    left: list[E] = []
    rows = low_rows = 0
    for index, entry in enumerate(live):
        if taken and rows + entry.rows > max_batch_rows:
            left.extend(live[index:])
            break
        if low is not None and max_low_rows is not None and low(entry):
            if taken and low_rows + entry.rows > max_low_rows:
                left.append(entry)
                continue
            low_rows += entry.rows
        taken.append(entry)
        rows += entry.rows
    full = rows >= max_batch_rows or bool(left)

    due_ms = min(entry.arrived_ms for entry in live) + max_queue_delay_ms
    deadlines = [entry.deadline_ms for entry in live if entry.deadline_ms is not None]
    if deadlines:
        due_ms = min(due_ms, min(deadlines))
    if flush or full or now_ms >= due_ms:
        return Collation(
            batch=taken,
            expired=expired,
            remaining=left,
            wait_ms=0.0,
            due_ms=due_ms,
        )
    return Collation(
        batch=[], expired=expired, remaining=live, wait_ms=due_ms - now_ms, due_ms=due_ms
    )
