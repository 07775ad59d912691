"""Requests/s through Redis to one model worker (no HTTP), max batch 1 vs 64.

For each model family: start a private Redis, start one worker *process*
(``python -m services.runtime.standalone``) with ``AXON_MAX_BATCH_ROWS`` = 1 or 64, and
saturate it from this process with a closed loop that keeps ``--concurrency`` one-row
requests in flight (a reply listener BLPOPs the replies; every reply is replaced by a
new XADD, pipelined). Reports completed requests/s over the measuring window, the mean
rows per ONNX Runtime run (from the worker's heartbeat counters), the worker's and
Redis' CPU time per request (``/proc``, ``INFO cpu``), and the ratios.

``--max-batch`` picks other batch sizes (small ones weigh the worker's per-batch cost:
its Redis round trips), ``--tree`` runs the worker from other checkouts, ``--rounds``
repeats every (tree, batch size) alternating the order and reports medians:

    python benchmarks/bench_worker.py --models-dir exported_models
    python benchmarks/bench_worker.py --families classifier --max-batch 4 --concurrency 8 \
        --max-queue-delay-ms 0 --tree /tmp/axon-before --tree . --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_binary import cpu_seconds  # noqa: E402
from services.contract import protocol  # noqa: E402
from services.contract.codec import Scalar, decode_reply, encode_request  # noqa: E402
from services.runtime.redis_server import RedisServer  # noqa: E402
from services.runtime.repository import ModelRepository  # noqa: E402

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
    worker_us: float
    """The worker process's CPU time per request (its whole run: warm-up, window, drain)."""
    redis_us: float
    """Redis' CPU time per request over the same run."""
    tree: str = "."


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
    redis_url: str,
    models_dir: Path,
    model: str,
    max_batch: int,
    instance: str,
    *,
    tree: Path = ROOT,
    max_queue_delay_ms: float = 2.0,
) -> subprocess.Popen[bytes]:
    """The standalone worker process, from the source tree ``tree``."""
    env = {
        **os.environ,
        "AXON_REDIS_URL": redis_url,
        "AXON_MODELS_DIR": str(models_dir),
        "AXON_MODEL": model,
        "AXON_INSTANCE": instance,
        "AXON_MAX_BATCH_ROWS": str(max_batch),
        "AXON_MAX_QUEUE_DELAY_MS": str(max_queue_delay_ms),
        "AXON_PROVIDER": os.environ.get("AXON_PROVIDER", "cpu"),
        "AXON_HEARTBEAT_INTERVAL_MS": "200",
        "AXON_HEARTBEAT_TTL_MS": "2000",
        "AXON_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(tree),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.standalone"], env=env, cwd=tree
    )


async def redis_cpu_s(redis: Redis[bytes]) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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
    server: RedisServer,
    models_dir: Path,
    family: str,
    max_batch: int,
    args: argparse.Namespace,
    tree: Path = ROOT,
) -> Result:
    model = FAMILIES[family]
    body = request_body(models_dir, model)
    redis: Redis[bytes] = Redis.from_url(server.url)
    await redis.delete(protocol.stream_key(model, 1))
    instance = f"bench-{family}-{max_batch}-{uuid.uuid4().hex[:6]}"
    process = start_worker(
        server.url, models_dir, model, max_batch, instance,
        tree=tree, max_queue_delay_ms=args.max_queue_delay_ms,
    )  # fmt: skip
    try:
        await wait_worker(redis, model, instance)
        worker_before, redis_before = cpu_seconds(process.pid), await redis_cpu_s(redis)
        rate, sent = await drive(redis, model, body, args.concurrency, args.warmup, args.duration)
        worker_s = cpu_seconds(process.pid) - worker_before
        redis_s = await redis_cpu_s(redis) - redis_before
        stats = await wait_worker(redis, model, instance, min_rows=sent)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        await redis.aclose()
    mean_rows = stats["inference_count"] / max(1, stats["execution_count"])
    return Result(
        family, model, max_batch, rate, mean_rows, sent,
        1e6 * worker_s / sent, 1e6 * redis_s / sent, str(tree),
    )  # fmt: skip


def median_results(results: list[Result]) -> list[Result]:
    """One result per (tree, family, batch size): the medians over its rounds."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.tree, r.family, r.max_batch), []).append(r)
    medians = []
    for (tree, family, max_batch), rs in groups.items():
        medians.append(
            Result(
                family=family,
                model=rs[0].model,
                max_batch=max_batch,
                requests_per_s=statistics.median(r.requests_per_s for r in rs),
                mean_rows=statistics.median(r.mean_rows for r in rs),
                requests=sum(r.requests for r in rs),
                worker_us=statistics.median(r.worker_us for r in rs),
                redis_us=statistics.median(r.redis_us for r in rs),
                tree=tree,
            )
        )
    return medians


def print_table(results: list[Result]) -> None:
    trees = len({r.tree for r in results}) > 1
    print()
    print(
        ("| tree " if trees else "")
        + "| model | max batch | requests/s | mean rows/run | worker CPU µs/request "
        "| Redis CPU µs/request |"
    )
    print(("|---" if trees else "") + "|---|---|---|---|---|---|")
    for r in results:
        print(
            (f"| {r.tree} " if trees else "")
            + f"| {r.model} | {r.max_batch} | {r.requests_per_s:,.0f} | {r.mean_rows:.1f} "
            f"| {r.worker_us:.0f} | {r.redis_us:.0f} |"
        )
    print()
    for tree in dict.fromkeys(r.tree for r in results):
        for family in dict.fromkeys(r.family for r in results):
            pair = {r.max_batch: r for r in results if r.family == family and r.tree == tree}
            if 1 in pair and 64 in pair:
                ratio = pair[64].requests_per_s / pair[1].requests_per_s
                target = (
                    "  (target >= 3x: " + ("met" if ratio >= 3 else "NOT met") + ")"
                    if family == "forecaster"
                    else ""
                )
                where = f" ({tree})" if trees else ""
                print(f"{pair[1].model}{where}: batched / unbatched = {ratio:.2f}x{target}")


async def main_async(args: argparse.Namespace) -> list[Result]:
    configs = [
        (tree.resolve(), family, max_batch)
        for tree in args.tree or [ROOT]
        for family in args.families
        for max_batch in args.max_batch
    ]
    results = []
    with RedisServer() as server:
        for round_ in range(args.rounds):
            for tree, family, max_batch in configs if round_ % 2 == 0 else configs[::-1]:
                result = await bench_one(server, args.models_dir, family, max_batch, args, tree)
                print(
                    f"{tree} {result.model:<14} max batch {max_batch:>2}: "
                    f"{result.requests_per_s:8,.0f} req/s, {result.mean_rows:5.1f} rows/run, "
                    f"worker {result.worker_us:4.0f} µs/request, redis {result.redis_us:3.0f}",
                    flush=True,
                )
                results.append(result)
    return median_results(results) if args.rounds > 1 else results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=Path("exported_models"))
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured")
    parser.add_argument(
        "--max-batch", type=int, action="append", help="AXON_MAX_BATCH_ROWS (default 1 and 64)"
    )
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="a checkout to run the worker from"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat, alternating the order; report medians"
    )
    args = parser.parse_args()
    args.max_batch = args.max_batch or [1, 64]
    args.models_dir = args.models_dir.resolve()  # the worker runs in its tree
    print(
        f"bench-worker: concurrency {args.concurrency}, {args.duration}s per run, "
        f"models {args.models_dir}"
    )
    print_table(asyncio.run(main_async(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
