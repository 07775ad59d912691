"""Deadlines (504, entry never computed) and the backlog limit (429 + Retry-After),
made real by freezing the classifier service's processes with SIGSTOP: its heartbeat
stays valid (long TTL in the e2e settings) but it reads nothing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from redis import Redis

from services.contract import protocol
from services.contract.protocol import WorkerInfo
from tests.e2e.conftest import STACK_ENV, Stack
from tests.e2e.payloads import infer_image
from tests.support.redis import wait_for

LIMIT = int(STACK_ENV["AXON_BACKLOG_LIMIT"])


@contextlib.contextmanager
def frozen(stack: Stack, service_class: str) -> Iterator[None]:
    processes = stack.family_processes(service_class)
    assert processes, f"no process of {service_class} found"
    for proc in processes:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in processes:
            proc.send_signal(signal.SIGCONT)


def heartbeat(stack: Stack) -> WorkerInfo:
    async def read() -> WorkerInfo:
        client: Any = __import__("redis.asyncio", fromlist=["Redis"]).Redis.from_url(
            stack.redis.url
        )
        try:
            (info,) = await protocol.live_workers(client, "digits-cnn", 1)
            return info
        finally:
            await client.aclose()

    return asyncio.run(read())


def fresh_heartbeat(stack: Stack) -> WorkerInfo:
    """A heartbeat written after now (so its counters include everything done so far)."""
    now_ms = time.time() * 1000
    return wait_for(
        lambda: info if (info := heartbeat(stack)).updated_at_ms > now_ms else None,
        timeout_s=30,
        what="a fresh heartbeat",
    )


def test_deadline_then_backlog_limit(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis.url)
    stream = protocol.stream_key("digits-cnn", 1)
    before = fresh_heartbeat(stack).stats
    assert redis.xlen(stream) == 0
    pool = ThreadPoolExecutor(max_workers=LIMIT)
    try:
        with frozen(stack, "ClassifierService"), stack.client() as http:
            late = http.post(
                "/v2/models/digits-cnn/infer",
                json=infer_image(1),
                headers={"X-Axon-Timeout-Ms": "300"},
            )
            assert late.status_code == 504, late.text
            assert "deadline" in late.json()["error"]
            assert redis.xlen(stream) == 1  # queued, never read: the worker is frozen

            def call(seed: int) -> httpx.Response:
                with stack.client() as client:
                    return client.post(
                        "/v2/models/digits-cnn/infer", json=infer_image(1, seed=seed)
                    )

            waiting = [pool.submit(call, seed) for seed in range(LIMIT - 1)]
            wait_for(lambda: redis.xlen(stream) == LIMIT, timeout_s=30, what="backlog full")
            refused = http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == STACK_ENV.get("AXON_RETRY_AFTER_S", "1")
            assert "limit 6" in refused.json()["error"]
        # Thawed: the waiting requests are answered; the expired one is not computed.
        assert [f.result(timeout=60).status_code for f in waiting] == [200] * (LIMIT - 1)
        wait_for(lambda: redis.xlen(stream) == 0, timeout_s=30, what="backlog drained")
        after = fresh_heartbeat(stack).stats
        assert after["expired"] == before["expired"] + 1
        assert after["inference_count"] == before["inference_count"] + LIMIT - 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        redis.close()
    with stack.client() as http:
        metrics = http.get("/metrics").text
    assert 'axon_rejected_total{model="digits-cnn",reason="backlog"}' in metrics
    assert 'axon_rejected_total{model="digits-cnn",reason="deadline"}' in metrics
