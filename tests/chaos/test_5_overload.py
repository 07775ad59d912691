"""Scenario 5: overload at 3× capacity.

Capacity is measured first (closed loop, one worker running one request per ONNX
Runtime run, so capacity is simply 1 / run time). Then an open-loop load at 3× that rate
for a fixed number of requests. The gateway refuses what the backlog cannot hold with
429 + ``Retry-After`` instead of queueing it, so:

- accepted requests wait behind at most ``LIMIT`` entries: their latency is bounded by
  about LIMIT / capacity (0.5 s at 40 req/s). The test allows ``P99_LIMIT_S`` = 3 s, six
  times that, because the load generator, gateway, Redis and worker share 2 cores;
- the stream never holds more than the limit plus the requests admitted concurrently;
- the gateway's RSS and Redis' memory do not grow with the offered load: allowed growth
  ``RSS_GROWTH_LIMIT`` (64 MB; a queue that held every refused request would be far
  past it: each request is a task, a future, a body and a stream entry).
"""

from __future__ import annotations

import time
from pathlib import Path

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
P99_LIMIT_S = 3.0
RSS_GROWTH_LIMIT = 64 * 2**20
REDIS_MEMORY_LIMIT = 64 * 2**20
STREAM_SLACK = 60
"""Requests that passed the backlog check at the same moment (open loop: not bounded by
a client count); the stream's hard cap is the gateway's MAXLEN safety net (1000)."""
OVERLOAD_SECONDS = 8


def test_overload(procs: Procs, chaos_repo: Path, tmp_path: Path) -> None:
    server = ChaosRedis(procs, tmp_path / "redis", persistent=False)
    server.start()
    start_worker(procs, server, chaos_repo, NAME, "chaos-over-w", max_batch_rows="1")
    gw = start_gateway(
        procs,
        server,
        chaos_repo,
        NAME,
        "chaos-over-gw",
        backlog_limit=str(LIMIT),
        retry_after_s="1",
    )
    client = server.client()

    probe = Load(lambda: gw.url, INFER, BODY, prefix="cap", timeout_ms=10_000, concurrency=4)
    with probe:
        wait_for(lambda: probe.count(lambda r: r.ok) >= 120, timeout_s=60, what="capacity")
    done = sorted(r.ended for r in probe.results if r.ok)[20:120]  # skip the warm-up
    capacity = (len(done) - 1) / (done[-1] - done[0])
    rate = 3 * capacity
    gateway_rss, deepest, peak_rss, redis_peak = gw.rss(), 0, 0, 0

    def sample(condition: bool) -> bool:
        nonlocal deepest, peak_rss, redis_peak
        deepest = max(deepest, backlog(client))
        peak_rss = max(peak_rss, gw.rss())
        redis_peak = max(redis_peak, int(client.info("memory")["used_memory"]))
        return condition

    with ReplyTap(server.port) as tap:
        load = Load(lambda: gw.url, INFER, BODY, prefix="over", timeout_ms=10_000, rate=rate)
        with load:
            started = time.monotonic()
            wait_for(
                lambda: sample(load.count() >= rate * OVERLOAD_SECONDS),
                timeout_s=120,
                what="the overload's requests answered",
            )
            stopping = time.monotonic()
        results = load.results
        wait_for(lambda: backlog(client) == 0, timeout_s=30, what="backlog drained")
    offered = len(results) / (stopping - started)
    table = Table(
        f"5. Overload: open loop at 3x capacity ({capacity:.0f} req/s measured, "
        f"{rate:.0f} req/s offered)",
        results,
        started,
        twice=len(tap.twice()),
        recovery=max(r.ended for r in results) - stopping,
        notes=[
            f"offered {offered:.0f} req/s for {stopping - started:.1f} s; backlog limit "
            f"{LIMIT}; deepest stream {deepest}",
            f"gateway RSS {gateway_rss / 2**20:.0f} MB before, peak {peak_rss / 2**20:.0f} MB; "
            f"Redis used_memory peak {redis_peak / 2**20:.1f} MB",
            "recovery = from the last request sent until the last accepted one was answered",
        ],
    )
    publish(table)
    codes = table.codes
    assert table.lost == 0
    assert set(codes) <= {"200", "429"}, codes
    assert codes["429"] > 0 and codes["200"] > 0, codes
    assert all(r.retry_after == "1" for r in results if r.outcome == "429")
    assert table.accepted_p(0.99) <= P99_LIMIT_S, table.accepted_p(0.99)
    assert deepest <= LIMIT + STREAM_SLACK, deepest
    assert peak_rss - gateway_rss <= RSS_GROWTH_LIMIT
    assert redis_peak <= REDIS_MEMORY_LIMIT
    assert not tap.twice(), f"replied twice: {tap.twice()}"
