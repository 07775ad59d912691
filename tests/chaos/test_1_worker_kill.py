"""Scenario 1: SIGKILL one of two classifier replicas mid-load.

The killed worker's unacknowledged entries stay in the consumer group's pending list;
the surviving replica XAUTOCLAIMs them once they have been idle for the claim timeout
(``AXON_CLAIM_TIMEOUT_MS``, 30 s in production, 1 s here) and answers them. Nothing is
lost and no entry is answered twice. The clients' deadline (10 s) is longer than the
claim timeout, so the claimed entries are computed rather than expired.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.chaos.common import BODY, INFER, backlog, pending_of, request_ids, worker_stats
from tests.chaos.harness import (
    ChaosRedis,
    Load,
    Procs,
    ReplyTap,
    Table,
    publish,
    start_gateway,
    start_worker,
)
from tests.chaos.slow_model import NAME
from tests.support.redis import wait_for

WORKER = {
    "claim_timeout_ms": "1000",
    "claim_interval_ms": "200",
    "heartbeat_ttl_ms": "3000",
    "max_batch_rows": "4",
}


def test_sigkill_one_of_two_replicas(procs: Procs, chaos_repo: Path, tmp_path: Path) -> None:
    server = ChaosRedis(procs, tmp_path / "redis", persistent=False)
    server.start()
    victim = start_worker(procs, server, chaos_repo, NAME, "chaos-kill-a", **WORKER)
    start_worker(procs, server, chaos_repo, NAME, "chaos-kill-b", **WORKER)
    gw = start_gateway(procs, server, chaos_repo, NAME, "chaos-kill-gw", backlog_limit="500")
    client = server.client()
    with ReplyTap(server.port) as tap:
        load = Load(lambda: gw.url, INFER, BODY, prefix="kill", timeout_ms=10_000, concurrency=12)
        with load:
            wait_for(lambda: load.count(lambda r: r.ok) >= 40, timeout_s=60, what="warm load")
            wait_for(
                lambda: pending_of(client, victim.instance),
                timeout_s=30,
                what="the victim holding unacknowledged entries",
            )
            victim.signal(signal.SIGKILL)
            killed = time.monotonic()
            victim.process.wait(timeout=10)
            orphans = request_ids(client, pending_of(client, victim.instance))
            wait_for(
                lambda: not pending_of(client, victim.instance),
                timeout_s=30,
                what="the survivor claiming the victim's entries",
            )
            wait_for(
                lambda: load.count(lambda r: r.ok and r.started > killed + 1.5) >= 40,
                timeout_s=60,
                what="load served by the survivor",
            )
        results = load.results
        wait_for(lambda: backlog(client) == 0, timeout_s=30, what="stream drained")
    by_id = {r.rid: r for r in results}
    table = Table(
        "1. SIGKILL one of two classifier replicas (claim timeout 1 s)",
        results,
        killed,
        twice=len(tap.twice()),
        notes=[
            f"{len(orphans)} entries were unacknowledged by the killed replica; each was "
            f"claimed and answered once by the survivor "
            f"(survivor redeliveries: {worker_stats(client, 'chaos-kill-b')['redeliveries']})",
            "orphaned requests answered in "
            + ", ".join(f"{by_id[rid].latency * 1000:.0f}" for rid in orphans if rid in by_id)
            + " ms (claim timeout 1 s + claim interval 0.2 s + run)",
            "recovery = from the kill to the first 2xx after the last non-2xx answer "
            "(0: no client saw an error)",
        ],
    )
    publish(table)
    assert orphans, "the victim held no entries when killed; the scenario proved nothing"
    assert table.lost == 0
    assert not tap.twice(), f"replied twice: {tap.twice()}"
    for rid in orphans:
        assert by_id[rid].outcome == "200", (rid, by_id[rid])
        assert tap.replies[rid] == ["ok"], (rid, tap.replies[rid])
    assert worker_stats(client, "chaos-kill-b")["redeliveries"] >= len(orphans)
    assert set(table.codes) <= {"200"}, table.codes
