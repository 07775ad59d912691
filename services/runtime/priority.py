"""The worker process's CPU priority (``AXON_WORKER_NICE``).

A shadow or candidate version whose workers share CPUs with the primary's takes CPU
time from the primary's requests; with a higher niceness the kernel's scheduler gives
the primary's processes the CPU first and the shadow the time left over
(docs/decisions.md, "Shadow traffic"). An unprivileged process can raise its niceness
but never lower it again, so this only ever raises it, once, at start-up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


def lower_priority(
    nice: int,
    *,
    get: Callable[[int, int], int] = os.getpriority,
    set_: Callable[[int, int, int], None] = os.setpriority,
) -> int:
    """Raise this process's niceness to ``nice`` (0–19) when it is lower; never lowers
    it (a process started at a higher one keeps it). Returns the niceness in effect.
    ``get``/``set_`` are ``os.getpriority``/``os.setpriority`` (injected in tests)."""
    current = get(os.PRIO_PROCESS, 0)
    if nice <= current:
        return current
    set_(os.PRIO_PROCESS, 0, nice)
    log.info("worker CPU priority lowered: niceness %d -> %d (AXON_WORKER_NICE)", current, nice)
    return nice
