"""Python's cyclic garbage collector, tuned for a long-running serving process.

A request allocates a few hundred container objects (dicts, lists, futures, frames), so
with CPython's default first threshold (700 allocations) a collection of the youngest
generation runs every few requests, and every 100th of them a full collection walks
every object the process holds: the imported modules, numpy, the registry, the metric
families. Almost none of that is garbage; request data is freed by reference counting,
not by the collector. ``tune`` (called once start-up is done):

- ``gc.freeze()``: what exists now (the imports and the app's start-up state) moves to
  the permanent generation, which no collection walks again;
- ``gc.set_threshold(young, 20, 20)``: the youngest generation is collected every
  ``young`` allocations net of frees, the older ones after 20 collections of the one
  below instead of 10.

Cyclic garbage is still collected, just in larger, rarer steps. Measured:
docs/decisions.md, "One write per response, and the garbage collector".
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

OLDER_THRESHOLD = 20
"""Collections of a generation before the next older one is collected (CPython: 10)."""


def tune(young_threshold: int) -> None:
    """Freeze what start-up built and raise the collector's thresholds; a
    ``young_threshold`` of 0 leaves the collector as CPython sets it."""
    if young_threshold <= 0:
        return
    gc.freeze()
    gc.set_threshold(young_threshold, OLDER_THRESHOLD, OLDER_THRESHOLD)
    log.info(
        "garbage collector: %d start-up objects frozen, thresholds %s",
        gc.get_freeze_count(),
        gc.get_threshold(),
    )
