"""Scenario 7: ``axon serve`` restarts what crashes, mid-load.

One ``axon serve`` (its own private Redis, one ``bentoml serve`` for ``chaos-cnn``, the
gateway) under a closed-loop load of 4 clients. Two faults, one after the other:

a. SIGKILL of the model service (the ``bentoml serve`` process the supervisor started).
   Its worker process, in a session of its own, is orphaned; the supervisor adopts it
   (child subreaper) and kills it, then restarts the service after 0.5 s on the same
   port with the same worker instance name. Requests queued meanwhile wait in the stream
   (the old heartbeat is still live) and are answered by the restarted worker; entries
   the killed worker held are claimed after the claim timeout (1 s here).
b. SIGKILL of Redis. The supervisor restarts it after 0.5 s on the same port (empty: no
   persistence); requests waiting and arriving meanwhile get 503; 2xx resumes when the
   worker's heartbeat is back.

Measured: from the kill to the first 200 answering a request *sent after the old
process was gone* (so the orphaned worker cannot have answered it), and the
supervisor's own "ready again" time.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import psutil

from services.runtime.redis_server import free_port
from tests.chaos.common import BODY, INFER
from tests.chaos.harness import ROOT, Load, Procs, ReplyTap, Result, Table, publish
from tests.chaos.slow_model import NAME
from tests.support.redis import wait_for

SETTINGS = {
    "AXON_CLASSIFIER_MODEL": NAME,
    "AXON_PROVIDER": "cpu",
    "AXON_BACKLOG_LIMIT": "500",
    "AXON_MAX_QUEUE_DELAY_MS": "0",
    "AXON_MAX_BATCH_ROWS": "4",
    "AXON_READ_BLOCK_MS": "100",
    "AXON_HEARTBEAT_INTERVAL_MS": "300",
    "AXON_HEARTBEAT_TTL_MS": "3000",
    "AXON_CLAIM_TIMEOUT_MS": "1000",
    "AXON_CLAIM_INTERVAL_MS": "200",
    "AXON_REGISTRY_REFRESH_MS": "100",
    "AXON_REPLY_BLOCK_S": "0.5",
    "AXON_REDIS_TIMEOUT_S": "2",
    "AXON_LOG_LEVEL": "WARNING",
}
"""The worker and gateway settings the other scenarios use (harness.py)."""


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _first_ok_after(results: list[Result], t: float) -> float | None:
    return min((r.ended for r in list(results) if r.ok and r.started > t), default=None)


class Serve:
    """``axon serve`` owned by ``procs`` (its output in ``axon-serve.log``)."""

    def __init__(self, procs: Procs, repo: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = procs.log_dir / "axon-serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
        env.update(SETTINGS, PYTHONPATH=str(ROOT))
        self.process = procs.spawn(
            "axon-serve",
            [sys.executable, "-m", "services.cli", "serve", "--port", str(self.port),
             "--models-dir", str(repo), "--log-dir", str(log_dir)],
            env,
        )  # fmt: skip
        wait_for(lambda: self.saw("Axon is ready at"), timeout_s=150, what="axon serve ready")
        redis_url = self.saw(r"redis\s+redis://127\.0\.0\.1:(\d+)/0")
        assert redis_url, self.text()
        self.redis_port = int(redis_url.group(1))

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def saw(self, pattern: str) -> re.Match[str] | None:
        assert self.process.poll() is None, self.text()[-3000:]
        return re.search(pattern, self.text())

    def child(self, needle: str) -> psutil.Process:
        found = [
            c
            for c in psutil.Process(self.process.pid).children()
            if not _gone(c) and needle in " ".join(c.cmdline())
        ]
        assert len(found) == 1, (needle, found)
        return found[0]


def _fault(
    serve: Serve, victim: psutil.Process, prefix: str
) -> tuple[list[Result], float, float, float, int]:
    """SIGKILL ``victim`` (and wait for its orphans to go) under load; returns the
    results, the kill time, the time the last old process was gone, the first-200 time
    and how many requests had two replies pushed in Redis."""
    load = Load(lambda: serve.url, INFER, BODY, prefix=prefix, timeout_ms=10_000, concurrency=4)
    old = [victim, *victim.children(recursive=True)]
    with ReplyTap(serve.redis_port) as tap, load:
        wait_for(lambda: load.count(lambda r: r.ok) >= 30, timeout_s=60, what="warm load")
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: all(_gone(p) for p in old), timeout_s=10, what="old processes gone")
        gone = time.monotonic()
        first = wait_for(
            lambda: _first_ok_after(load.results, gone), timeout_s=90, what="200 again"
        )
        wait_for(
            lambda: load.count(lambda r: r.ok and r.started > first) >= 30,
            timeout_s=60,
            what="steady 2xx after the restart",
        )
    return load.results, killed, gone, first, len(tap.twice())


def test_supervisor_restarts_service_and_redis(
    procs: Procs, chaos_repo: Path, tmp_path: Path
) -> None:
    serve = Serve(procs, chaos_repo, tmp_path / "serve-logs")

    results, killed, gone, first, twice = _fault(serve, serve.child("bentoml"), "sup-svc")
    ready = serve.saw(r"classifier ready again, ([\d.]+) s after its restart")
    assert ready, serve.text()[-3000:]
    service = Table(
        "7a. axon serve: model service (bentoml serve) SIGKILLed mid-load",
        results,
        killed,
        twice=twice,
        recovery=first - killed,
        notes=[
            f"old service and its orphaned worker gone {gone - killed:.2f} s after the kill "
            "(the supervisor adopts and kills the orphan)",
            f"supervisor: restart after 0.5 s backoff; service ready again "
            f"{float(ready.group(1)):.2f} s after its restart",
            "time to recover = kill → first 200 to a request sent after the old processes "
            "were gone",
        ],
    )
    publish(service)

    results, killed, gone, first, twice = _fault(serve, serve.child("redis-server"), "sup-redis")
    back = serve.saw(r"redis ready again, ([\d.]+) s after its restart")
    assert back, serve.text()[-3000:]
    store = Table(
        "7b. axon serve: its Redis SIGKILLed mid-load (restarted empty, same port)",
        results,
        killed,
        twice=twice,
        recovery=first - killed,
        notes=[
            f"supervisor: restart after 0.5 s backoff; Redis answering PING "
            f"{float(back.group(1)):.2f} s after its restart; then the worker re-registers",
            "time to recover = kill → first 200 to a request sent after the kill",
        ],
    )
    publish(store)

    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(timeout=90) == 0, serve.text()[-3000:]
    for table in (service, store):
        assert table.lost == 0, table.render()
        assert set(table.codes) <= {"200", "503", "504"}, table.codes
        assert table.recovery_s() < 60, table.render()
        assert table.twice == 0, table.render()
