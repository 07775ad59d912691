"""Requests/s through Redis to one model worker (no HTTP), max batch 1 vs 64.

For each model family: start a private Redis, start one worker *process*
(``python -m services.runtime.standalone``) with ``AXON_MAX_BATCH_ROWS`` = 1 or 64, and
saturate it from this process with a closed loop that keeps ``--concurrency`` one-row
requests in flight (a reply listener BLPOPs the replies; every reply is replaced by a
new XADD, pipelined). Reports completed requests/s over the measuring window, the mean
rows per ONNX Runtime run (from the worker's heartbeat counters), and the ratios.

    python benchmarks/bench_worker.py --models-dir exported_models
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

from services.contract import protocol
from services.contract.codec import Scalar, decode_reply, encode_request
from services.runtime.redis_server import RedisServer
from services.runtime.repository import ModelRepository

FAMILIES = {
    "classifier": "digits-cnn",
    "forecaster": "sunspots-lstm",
    "generator": "digits-gan",
}


@dataclass
class Result:
    family: str
    model: str
    max_batch: int
    requests_per_s: float
    mean_rows: float
    requests: int


def request_body(models_dir: Path, model: str) -> bytes:
    """One representative one-row request for ``model``."""
    metadata = ModelRepository(models_dir).load(model).metadata
    rng = np.random.default_rng(0)
    inputs: dict[str, Any] = {}
    parameters: dict[str, Scalar] = {}
    if metadata.task == "classify":
        image = metadata.raw["image"]
        shape = (1, image["channels"], image["height"], image["width"])
        inputs["image"] = rng.uniform(0, 16, shape).astype(np.float32)
    elif metadata.task == "forecast":
        inputs["history"] = rng.uniform(0, 150, (1, metadata.window or 12)).astype(np.float32)
    else:
        parameters = {"seed": 1, "count": 1}
    return encode_request(inputs, parameters)


async def drive(
    redis: Redis[bytes],
    model: str,
    body: bytes,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> tuple[float, int]:
    """Closed loop at ``concurrency``; returns (requests/s in the window, requests sent)."""
    stream = protocol.stream_key(model, 1)
    reply_to = protocol.reply_key(f"bench-{uuid.uuid4().hex[:8]}", model, 1)
    ids = itertools.count()
    sent = 0

    async def send(n: int) -> None:
        nonlocal sent
        pipe = redis.pipeline(transaction=False)
        for _ in range(n):
            fields = {
                protocol.FIELD_ID: str(next(ids)).encode(),
                protocol.FIELD_REPLY: reply_to.encode(),
                protocol.FIELD_DEADLINE: b"0",
                protocol.FIELD_BODY: body,
            }
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        await pipe.execute()
        sent += n

    await send(concurrency)
    done = 0
    start = time.perf_counter()
    window_start, window_done = 0.0, 0
    measuring = False
    while True:
        payloads = await protocol.pop_replies(redis, reply_to, timeout_s=30, max_count=concurrency)
        if not payloads:
            raise RuntimeError("the worker stopped answering")
        for payload in payloads:
            reply = decode_reply(payload)
            if not reply.ok:
                raise RuntimeError(f"worker answered an error: {reply.error}")
        now = time.perf_counter()
        done += len(payloads)
        if not measuring and now - start >= warmup_s:
            measuring, window_start, window_done = True, now, done
        if measuring and now - window_start >= duration_s:
            rate = (done - window_done) / (now - window_start)
            break
        await send(len(payloads))
    while done < sent:  # let the worker finish what is in flight
        done += len(
            await protocol.pop_replies(redis, reply_to, timeout_s=30, max_count=concurrency)
        )
    return rate, sent


def start_worker(
    redis_url: str, models_dir: Path, model: str, max_batch: int, instance: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AXON_REDIS_URL": redis_url,
        "AXON_MODELS_DIR": str(models_dir),
        "AXON_MODEL": model,
        "AXON_INSTANCE": instance,
        "AXON_MAX_BATCH_ROWS": str(max_batch),
        "AXON_MAX_QUEUE_DELAY_MS": "2",
        "AXON_PROVIDER": os.environ.get("AXON_PROVIDER", "cpu"),
        "AXON_HEARTBEAT_INTERVAL_MS": "200",
        "AXON_HEARTBEAT_TTL_MS": "2000",
        "AXON_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.runtime.standalone"], env=env)


async def wait_worker(
    redis: Redis[bytes], model: str, instance: str, min_rows: int = 0
) -> dict[str, Any]:
    """Heartbeat stats of ``instance`` once it is live with at least ``min_rows`` rows done."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for worker in await protocol.live_workers(redis, model, 1):
            if worker.instance == instance and worker.stats["inference_count"] >= min_rows:
                return dict(worker.stats)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"worker {instance} did not report in time")


async def bench_one(
    server: RedisServer, models_dir: Path, family: str, max_batch: int, args: argparse.Namespace
) -> Result:
    model = FAMILIES[family]
    body = request_body(models_dir, model)
    redis: Redis[bytes] = Redis.from_url(server.url)
    await redis.delete(protocol.stream_key(model, 1))
    instance = f"bench-{family}-{max_batch}"
    process = start_worker(server.url, models_dir, model, max_batch, instance)
    try:
        await wait_worker(redis, model, instance)
        rate, sent = await drive(redis, model, body, args.concurrency, args.warmup, args.duration)
        stats = await wait_worker(redis, model, instance, min_rows=sent)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        await redis.aclose()
    mean_rows = stats["inference_count"] / max(1, stats["execution_count"])
    return Result(family, model, max_batch, rate, mean_rows, sent)


def print_table(results: list[Result]) -> None:
    print()
    print(f"| {'model':<14} | {'max batch':>9} | {'requests/s':>10} | {'mean rows/run':>13} |")
    print(f"|{'-' * 16}|{'-' * 11}|{'-' * 12}|{'-' * 15}|")
    for r in results:
        print(
            f"| {r.model:<14} | {r.max_batch:>9} | {r.requests_per_s:>10,.0f} "
            f"| {r.mean_rows:>13.1f} |"
        )
    print()
    for family in dict.fromkeys(r.family for r in results):
        pair = {r.max_batch: r for r in results if r.family == family}
        if 1 in pair and 64 in pair:
            ratio = pair[64].requests_per_s / pair[1].requests_per_s
            target = (
                "  (target >= 3x: " + ("met" if ratio >= 3 else "NOT met") + ")"
                if family == "forecaster"
                else ""
            )
            print(f"{pair[1].model}: batched / unbatched = {ratio:.2f}x{target}")


async def main_async(args: argparse.Namespace) -> list[Result]:
    results = []
    with RedisServer() as server:
        for family in args.families:
            for max_batch in (1, 64):
                result = await bench_one(server, args.models_dir, family, max_batch, args)
                print(
                    f"{result.model:<14} max batch {max_batch:>2}: "
                    f"{result.requests_per_s:8,.0f} req/s, "
                    f"{result.mean_rows:5.1f} rows/run",
                    flush=True,
                )
                results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=Path("exported_models"))
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured")
    args = parser.parse_args()
    print(
        f"bench-worker: concurrency {args.concurrency}, {args.duration}s per run, "
        f"models {args.models_dir}"
    )
    print_table(asyncio.run(main_async(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
