"""Scenario 4: the gateway crashes (SIGKILL) mid-load and a new one starts on the same
port with a new instance name (so a new reply list).

Clients see connection errors only for the old process: requests in flight on it
(connection reset) and requests sent while nothing listens (connection refused). Every
request sent once the new gateway is ready is answered 2xx. What the old gateway left
in Redis does not outlive its deadline: its queued entries are still run (or answered
``deadline_exceeded``) by the worker and deleted, and the replies pushed to the dead
gateway's list expire with the list's TTL (``AXON_REPLY_TTL_S``, 60 s in production,
3 s here).
"""

from __future__ import annotations

import time
from pathlib import Path

from services.contract import protocol
from services.runtime.redis_server import free_port
from tests.chaos.common import BODY, INFER, backlog, pending_total
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

DEADLINE_MS = 3000
REPLY_TTL_S = 3


def test_gateway_restart(procs: Procs, chaos_repo: Path, tmp_path: Path) -> None:
    server = ChaosRedis(procs, tmp_path / "redis", persistent=False)
    server.start()
    start_worker(
        procs,
        server,
        chaos_repo,
        NAME,
        "chaos-gwr-w",
        reply_ttl_s=str(REPLY_TTL_S),
        max_batch_rows="4",
    )
    port = free_port()
    old = start_gateway(
        procs, server, chaos_repo, NAME, "chaos-gw-old", port=port, backlog_limit="500"
    )
    client = server.client()
    old_replies = protocol.reply_key("chaos-gw-old", NAME, 1)
    with ReplyTap(server.port) as tap:
        load = Load(
            lambda: old.url, INFER, BODY, prefix="gwr", timeout_ms=DEADLINE_MS, concurrency=8
        )
        with load:
            wait_for(lambda: load.count(lambda r: r.ok) >= 40, timeout_s=60, what="warm load")
            old.process.kill()
            killed = time.monotonic()
            old.process.wait(timeout=10)
            start_gateway(
                procs, server, chaos_repo, NAME, "chaos-gw-new", port=port, backlog_limit="500"
            )
            ready = time.monotonic()
            wait_for(
                lambda: load.count(lambda r: r.ok and r.started > ready) >= 40,
                timeout_s=60,
                what="2xx from the new gateway",
            )
        results = load.results

        def clean() -> bool:
            return (
                backlog(client) == 0
                and pending_total(client) == 0
                and not client.exists(old_replies)
            )

        wait_for(
            clean,
            timeout_s=DEADLINE_MS / 1000 + REPLY_TTL_S + 30,
            what="nothing of the old gateway left in Redis",
        )
        cleaned = time.monotonic()
    errors_after_ready = [r for r in results if not r.ok and r.started >= ready]
    connection_errors = [r for r in results if r.outcome.startswith("conn_")]
    table = Table(
        "4. Gateway SIGKILLed mid-load, new gateway on the same port",
        results,
        killed,
        twice=len(tap.twice()),
        notes=[
            f"new gateway ready {ready - killed:.2f} s after the kill; connection errors "
            f"all on requests sent before that: {len(connection_errors)}",
            f"old gateway's entries and reply list gone from Redis {cleaned - killed:.1f} s "
            f"after the kill (deadline {DEADLINE_MS / 1000:.0f} s + reply TTL {REPLY_TTL_S} s)",
        ],
    )
    publish(table)
    assert table.lost == 0
    assert connection_errors, "the crash was not visible: the scenario proved nothing"
    assert not errors_after_ready, errors_after_ready[:5]
    assert set(table.codes) <= {"200", "conn_refused", "conn_reset"}, table.codes
    assert not tap.twice(), f"replied twice: {tap.twice()}"
