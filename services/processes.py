"""Child processes that cannot outlive ``axon serve`` (Linux; best effort elsewhere).

- ``spawn`` starts a child in its own session (so a terminal's Ctrl-C reaches only the
  supervisor, which then stops the children in order) with its output appended to a
  log file. On Linux the child asks the kernel for ``PR_SET_PDEATHSIG``: it gets
  ``death_signal`` when the supervisor dies, even by SIGKILL. The kernel ties this to
  the *thread* that forked, so children must be spawned from a thread that lives as
  long as the supervisor (``axon serve`` spawns from its main thread only).
- ``become_subreaper`` (``PR_SET_CHILD_SUBREAPER``): descendants orphaned by a dead
  child, such as the workers of a SIGKILLed ``bentoml serve`` (BentoML's process manager
  puts each worker in its own session, out of reach of ``killpg``), are reparented to
  the supervisor instead of init; ``orphans`` finds them and ``kill_tree`` ends them.
- ``kill_group`` signals a child's process group and ignores one that is already gone.
- ``terminate`` ends one child: SIGTERM, then SIGKILL if it outlives ``timeout_s``.

``descendants`` is pure (a pid → parent pid table in, pids out); ``process_table`` reads
that table from ``/proc`` and is empty where there is no ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

LINUX = sys.platform.startswith("linux")


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent (no dlopen after fork)."""
    if not LINUX:
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


_PRCTL = _prctl()


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux); returns whether the kernel agreed."""
    return _PRCTL is not None and _PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _die_with_parent(parent_pid: int, death_signal: int) -> Callable[[], None]:
    """A ``preexec_fn``: in the child, before exec, ask for ``death_signal`` when the
    parent dies; if it already died (between fork and prctl), signal ourselves now."""
    prctl = _PRCTL

    def preexec() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), death_signal)

    return preexec


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    log: IO[bytes],
    *,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, output to ``log``, stdin from /dev/null; on Linux
    the child receives ``death_signal`` when this process dies."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid(), death_signal) if _PRCTL else None,
    )


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM ``process`` and wait for it; SIGKILL it if it is still running after
    ``timeout_s``. Returns once it has exited (and was reaped)."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group led by ``pid`` (a ``spawn``ed child)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def process_table(proc: Path = Path("/proc")) -> dict[int, int]:
    """pid → parent pid of every process visible in ``proc`` (empty without /proc)."""
    table: dict[int, int] = {}
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid …": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 2:
            table[int(entry.name)] = int(fields[1])
    return table


def descendants(parents: Mapping[int, int], root: int) -> list[int]:
    """Every pid below ``root`` in the pid → parent table, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        if pid in found or pid == root:
            continue
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def orphans(known: Collection[int], parents: Mapping[int, int] | None = None) -> list[int]:
    """Adopted descendants: children of this process that it did not ``spawn``
    (``known``), each followed by its own descendants."""
    table = process_table() if parents is None else parents
    me = os.getpid()
    adopted = [pid for pid, parent in table.items() if parent == me and pid not in known]
    found: list[int] = []
    for pid in sorted(adopted):
        found += [pid, *descendants(table, pid)]
    return found


def kill_tree(pids: Sequence[int]) -> None:
    """SIGKILL ``pids`` and reap those that are our children (adopted orphans)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
