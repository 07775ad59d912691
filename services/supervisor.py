"""Pure decisions of the ``axon serve`` supervisor: when to restart a crashed child, when
to give up on it, and in which order to stop the stack.

Nothing here starts, signals or waits for a process, and nothing reads a clock: every
call that depends on time takes ``now`` (seconds on any monotonic clock), so the rules
are tested without sleeping. ``services/serve.py`` does the I/O and asks this module.

Rules:

- A child that exits while the stack is running is restarted after a delay that starts
  at ``RestartPolicy.first_delay_s`` and doubles with every crash in a row, up to
  ``max_delay_s`` (0.5, 1, 2, 4, 8, 10, 10 … s by default).
- A run that lasted at least ``stable_after_s`` ends the streak: the next crash waits
  ``first_delay_s`` again.
- After ``give_up_after`` crashes in a row (runs shorter than ``stable_after_s``) the
  supervisor gives up on the child (``0``: never); after ``give_up_before_ready`` already
  if the child has never been ready (a bad setting or a taken port does not fix itself,
  and the person who started it is waiting for the error).
- A child stopped for good while the stack runs (a model version that left the
  selection, ``services/runtime/versions.py``) is ``forget``-ten: never restarted.
- Stopping goes by kind: gateways first (no new requests come in), then the model
  services together (each drains what it already read), then Redis last.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["redis", "service", "gateway"]
"""What a child is; decides its place in the shutdown order."""

SHUTDOWN_ORDER: tuple[Kind, ...] = ("gateway", "service", "redis")
"""Kinds in the order they are stopped."""


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts of one child, and when to give up.

    Contract: ``delay(n)`` is ``first_delay_s * factor ** (n - 1)`` capped at
    ``max_delay_s`` for the ``n``-th crash in a row (``n >= 1``).
    """

    first_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 10.0
    stable_after_s: float = 30.0
    give_up_after: int = 8
    give_up_before_ready: int = 3

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("need 0 <= first_delay_s <= max_delay_s")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if self.give_up_after < 0 or self.give_up_before_ready < 0:
            raise ValueError("give_up_after and give_up_before_ready must be >= 0 (0: never)")

    def gives_up(self, crashes: int, *, ever_ready: bool) -> bool:
        """Whether ``crashes`` in a row are too many (``ever_ready``: the child has been
        ready at least once, so only ``give_up_after`` applies)."""
        limits = [self.give_up_after, 0 if ever_ready else self.give_up_before_ready]
        return any(limit and crashes >= limit for limit in limits)

    def delay(self, crashes: int) -> float:
        """Seconds to wait before restarting after the ``crashes``-th crash in a row."""
        if crashes < 1:
            raise ValueError("crashes counts from 1")
        delay = self.first_delay_s
        for _ in range(crashes - 1):
            delay *= self.factor
            if delay >= self.max_delay_s:
                return self.max_delay_s
        return min(delay, self.max_delay_s)


@dataclass(frozen=True)
class Restart:
    """Start the child again at ``at`` (``delay_s`` after it exited)."""

    name: str
    attempt: int
    """How many times this child has been restarted, this one included."""
    delay_s: float
    at: float
    crashes: int
    """Crashes in a row (runs shorter than ``stable_after_s``), this one included."""


@dataclass(frozen=True)
class GiveUp:
    """Do not restart the child: it crashed ``crashes`` times in a row."""

    name: str
    crashes: int


Decision = Restart | GiveUp


@dataclass
class _Record:
    started_at: float | None = None
    ever_ready: bool = False
    crashes: int = 0
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class RestartBook:
    """The restart state of every supervised child, keyed by name.

    Contract: ``started(name, now)`` when a child was (re)started; ``ready(name)`` when
    it answered its readiness probe; ``exited(name, now)`` when it was seen dead, which
    returns the decision and, for ``Restart``, makes the child ``due`` from
    ``decision.at`` on. A name never ``started`` is unknown (``KeyError``).
    """

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _records: dict[str, _Record] = field(default_factory=dict)

    def started(self, name: str, now: float) -> None:
        """Record that ``name`` was (re)started at ``now``."""
        record = self._records.setdefault(name, _Record())
        record.started_at = now
        record.restart_at = None

    def ready(self, name: str) -> None:
        """Record that ``name`` answered its readiness probe (at least once, ever)."""
        self._records[name].ever_ready = True

    def exited(self, name: str, now: float) -> Decision:
        """Record that ``name`` was seen dead at ``now``; restart it or give up."""
        record = self._records[name]
        ran_s = now - record.started_at if record.started_at is not None else 0.0
        record.crashes = 1 if ran_s >= self.policy.stable_after_s else record.crashes + 1
        record.started_at = None
        if self.policy.gives_up(record.crashes, ever_ready=record.ever_ready):
            record.restart_at = None
            return GiveUp(name, record.crashes)
        record.restarts += 1
        delay = self.policy.delay(record.crashes)
        record.restart_at = now + delay
        return Restart(name, record.restarts, delay, record.restart_at, record.crashes)

    def forget(self, name: str) -> None:
        """Drop ``name`` (a child stopped for good): never ``due``, not ``waiting``."""
        self._records.pop(name, None)

    def due(self, now: float) -> list[str]:
        """Names whose restart time has come, earliest first."""
        waiting = [
            (record.restart_at, name)
            for name, record in self._records.items()
            if record.restart_at is not None and record.restart_at <= now
        ]
        return [name for _, name in sorted(waiting)]

    def waiting(self) -> list[str]:
        """Names that exited and wait for their restart (not running now)."""
        return [name for name, record in self._records.items() if record.restart_at is not None]

    def uptime(self, name: str, now: float) -> float:
        """Seconds since ``name`` was last started (0 when it is not running)."""
        started = self._records[name].started_at
        return now - started if started is not None else 0.0


@dataclass(frozen=True)
class Stage:
    """Children stopped together, then waited on for up to ``grace_s`` seconds."""

    kind: Kind
    names: tuple[str, ...]
    grace_s: float


def shutdown_stages(
    children: Iterable[tuple[str, Kind]], grace_s: Mapping[Kind, float]
) -> list[Stage]:
    """The shutdown plan: one stage per kind present, in ``SHUTDOWN_ORDER``.

    Children keep their given order inside a stage; kinds with no child are left out.
    """
    listed = list(children)
    stages = []
    for kind in SHUTDOWN_ORDER:
        names = tuple(name for name, child_kind in listed if child_kind == kind)
        if names:
            stages.append(Stage(kind, names, grace_s[kind]))
    return stages


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal SIGKILL`` (Popen's negative return codes)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"
