"""``Idempotency-Key`` across two gateway processes on one Redis (the session stack's
gateway and a second one): 200 concurrent requests carrying one key, sent to both,
run the model once and all get the same answer; the same key with another body is 422
on either gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from services.contract import protocol
from tests.e2e.conftest import Stack
from tests.support.redis import wait_for

IMAGE = [[[0.5] * 8 for _ in range(8)]]


def _served(stack: Stack, after_ms: int) -> tuple[int] | None:
    """(Requests digits-cnn's workers answered,) per heartbeats written after
    ``after_ms``; None until every worker has written one."""
    client = redis.Redis.from_url(stack.redis.url)
    infos = [
        protocol.WorkerInfo.from_json(client.get(key) or b"")
        for key in client.scan_iter(match=protocol.worker_pattern("digits-cnn", 1))
    ]
    if not infos or any(info.updated_at_ms <= after_ms for info in infos):
        return None
    return (sum(int(info.stats["success"]["count"]) for info in infos),)


def test_two_hundred_concurrent_retries_over_two_gateways_run_once(
    stack: Stack, start_gateway: Callable[[Mapping[str, str]], str]
) -> None:
    second = start_gateway({})
    urls = [stack.url, second]
    (before,) = wait_for(lambda: _served(stack, int(time.time() * 1000)), what="heartbeats")
    body = json.dumps({"images": IMAGE, "top_k": 3})
    headers = {"Idempotency-Key": f"e2e-{time.time_ns()}", "Content-Type": "application/json"}

    def send(n: int) -> httpx.Response:
        return httpx.post(
            f"{urls[n % 2]}/v1/models/digits-cnn/classify",
            content=body,
            headers=headers,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(send, range(200)))
    done_ms = int(time.time() * 1000)
    assert [r.status_code for r in responses] == [200] * 200, {r.text for r in responses}
    assert len({r.text for r in responses}) == 1
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 199
    (after,) = wait_for(lambda: _served(stack, done_ms), what="heartbeats after the burst")
    assert after - before == 1, f"the model ran {after - before} times for one key"
    other = httpx.post(
        f"{second}/v1/models/digits-cnn/classify",
        json={"images": IMAGE, "top_k": 1},
        headers={"Idempotency-Key": headers["Idempotency-Key"]},
        timeout=60,
    )
    assert other.status_code == 422, other.text
