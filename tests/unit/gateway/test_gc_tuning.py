"""``gateway.gc_tuning.tune`` in a child process (the collector's state is the whole
interpreter's: a test must not leave it changed for the others)."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import gc, json, sys
from services.gateway import gc_tuning
kept = [[n] for n in range(1000)]  # start-up objects, tracked by the collector
before = gc.get_threshold()
gc_tuning.tune(int(sys.argv[1]))
cycle = []
cycle.append(cycle)  # garbage only the collector can free
del cycle
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "collected": gc.collect()}))
"""


def tuned(threshold: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(threshold)], capture_output=True, check=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_tune_freezes_start_up_and_raises_the_thresholds() -> None:
    result = tuned(5000)
    assert result["before"] == [700, 10, 10]
    assert result["after"] == [5000, 20, 20]
    frozen = result["frozen"]
    assert isinstance(frozen, int) and frozen > 1000  # the start-up lists among them
    assert result["collected"] == 1  # cyclic garbage made later is still collected


def test_zero_leaves_cpython_defaults() -> None:
    result = tuned(0)
    assert result["after"] == [700, 10, 10] and result["frozen"] == 0
