"""``AXON_WORKER_NICE``: the worker raises its niceness, never lowers it. The pure
function with injected ``getpriority``/``setpriority``, then a real child process."""

from __future__ import annotations

import os
import subprocess
import sys

from services.runtime.priority import lower_priority


def test_raises_the_niceness_when_it_is_lower() -> None:
    calls: list[tuple[int, int, int]] = []
    got = lower_priority(19, get=lambda which, who: 0, set_=lambda *a: calls.append(a))
    assert got == 19 and calls == [(os.PRIO_PROCESS, 0, 19)]


def test_never_lowers_a_higher_niceness() -> None:
    calls: list[tuple[int, int, int]] = []
    got = lower_priority(5, get=lambda which, who: 10, set_=lambda *a: calls.append(a))
    assert got == 10 and calls == []


def test_a_real_process_ends_at_the_niceness() -> None:
    code = (
        "import os; from services.runtime.priority import lower_priority; "
        "lower_priority(7); print(os.getpriority(os.PRIO_PROCESS, 0))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) == max(7, os.getpriority(os.PRIO_PROCESS, 0))
