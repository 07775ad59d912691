"""Scenario 3: the only worker hangs (SIGSTOP) for a while, then continues (SIGCONT).

Its heartbeat TTL (60 s here) outlives the hang, so the gateway still routes to it:
requests wait until their deadline (1 s) and get 504; once the stream holds the backlog
limit (20), new requests get 429 at once. Nothing piles up: the stream never grows past
the limit plus the requests admitted concurrently, the gateway forgets every request at
its deadline (inflight back to 0), and when the worker continues it answers the expired
entries with ``deadline_exceeded`` without computing them, so the stream drains to 0.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx

from tests.chaos.common import BODY, INFER, backlog
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

LIMIT = 20
CONCURRENCY = 8
BATCH = 4
STREAM_BOUND = LIMIT + CONCURRENCY
"""The backlog check and the XADD are two commands: requests admitted at the same time
can each pass the check, so the stream may exceed the limit by the requests in flight."""


def _inflight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    match = re.search(rf'axon_inflight_requests{{model="{NAME}"}} ([0-9.e+-]+)', text)
    return float(match.group(1)) if match else 0.0


def test_hung_worker(procs: Procs, chaos_repo: Path, tmp_path: Path) -> None:
    server = ChaosRedis(procs, tmp_path / "redis", persistent=False)
    server.start()
    worker = start_worker(
        procs,
        server,
        chaos_repo,
        NAME,
        "chaos-hang-w",
        heartbeat_ttl_ms="60000",
        claim_timeout_ms="60000",
        max_batch_rows=str(BATCH),
    )
    gw = start_gateway(
        procs,
        server,
        chaos_repo,
        NAME,
        "chaos-hang-gw",
        backlog_limit=str(LIMIT),
        retry_after_s="1",
    )
    client = server.client()
    deepest = 0

    def sample(condition: bool) -> bool:
        nonlocal deepest
        deepest = max(deepest, backlog(client))
        return condition

    with ReplyTap(server.port) as tap:
        load = Load(
            lambda: gw.url, INFER, BODY, prefix="hang", timeout_ms=1000, concurrency=CONCURRENCY
        )
        with load:
            wait_for(lambda: load.count(lambda r: r.ok) >= 30, timeout_s=60, what="warm load")
            worker.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            wait_for(
                lambda: sample(
                    load.count(lambda r: r.outcome == "504") >= CONCURRENCY
                    and load.count(lambda r: r.outcome == "429") >= 20
                ),
                timeout_s=60,
                what="504s and 429s while the worker hangs",
            )
            worker.signal(signal.SIGCONT)
            resumed = time.monotonic()
            wait_for(
                lambda: load.count(lambda r: r.ok and r.started > resumed) >= 30,
                timeout_s=60,
                what="2xx after the worker continues",
            )
        results = load.results
        wait_for(lambda: backlog(client) == 0, timeout_s=30, what="stream drained")
        wait_for(lambda: _inflight(gw.url) == 0, timeout_s=30, what="gateway inflight 0")
    timed_out = [r for r in results if r.outcome == "504"]
    computed_late = [r.rid for r in timed_out if "ok" in tap.replies.get(r.rid, [])]
    expired = sum(1 for r in timed_out if tap.replies.get(r.rid) == ["deadline_exceeded"])
    table = Table(
        "3. Only worker hung: SIGSTOP until >= 8 504s and 20 429s were seen, then SIGCONT",
        results,
        resumed,
        twice=len(tap.twice()),
        notes=[
            f"hung for {resumed - stopped:.1f} s; deepest stream seen {deepest} "
            f"(limit {LIMIT}); stream 0 and gateway inflight 0 afterwards",
            f"504 requests whose entry the worker answered deadline_exceeded (never "
            f"computed): {expired}; computed anyway (already running at SIGSTOP): "
            f"{len(computed_late)}",
            "recovery = from SIGCONT to the first 2xx after the last error",
        ],
    )
    publish(table)
    assert table.lost == 0
    assert set(table.codes) <= {"200", "429", "504"}, table.codes
    assert all(r.retry_after == "1" for r in results if r.outcome == "429")
    assert deepest <= STREAM_BOUND, deepest
    assert len(computed_late) <= BATCH, computed_late
    assert expired > 0
    assert not tap.twice(), f"replied twice: {tap.twice()}"
