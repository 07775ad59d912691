"""``make bench-jobs``: what async jobs cost synchronous requests on the same workers.

One Redis, one standalone worker (digits-cnn, batches of up to 64 rows), one gateway
process. Synchronous load: C concurrent clients (closed loop) POSTing one image to
``/v1/models/digits-cnn/classify`` for D seconds, measured twice per round:

- **sync alone**: nothing else queued;
- **sync + jobs**: 1,000 jobs (``Prefer: respond-async``, one image each) submitted at
  the start of the phase, so the job lane is full while the requests are measured.

Rounds alternate the two phases (the machine is shared; ratios of phases minutes apart
are what counts). Prints p50 / p99 of the synchronous requests per phase, the p99 ratio
(sync + jobs / sync alone), and how long the 1,000 jobs took to complete; writes
``benchmarks/results/jobs.json``.

    python benchmarks/bench_jobs.py --models-dir exported_models [--duration 5]
        [--concurrency 8] [--rounds 3] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.contract import jobs  # noqa: E402
from services.runtime.redis_server import RedisServer, free_port  # noqa: E402

MODEL = "digits-cnn"
PATH = f"/v1/models/{MODEL}/classify"
BODY = {"images": [np.full((8, 8), 3.0).tolist()], "top_k": 3}


def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


async def _sync_load(url: str, concurrency: int, duration_s: float) -> list[float]:
    import httpx

    latencies: list[float] = []
    until = time.monotonic() + duration_s

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.monotonic() < until:
                started = time.perf_counter()
                response = await http.post(PATH, json=BODY)
                if response.status_code != 200:
                    raise SystemExit(f"sync request answered {response.status_code}")
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def _submit_jobs(url: str, count: int) -> list[str]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        sem = asyncio.Semaphore(16)

        async def one() -> str:
            async with sem:
                response = await http.post(PATH, json=BODY, headers={"Prefer": "respond-async"})
                if response.status_code != 202:
                    raise SystemExit(f"job submission answered {response.status_code}")
                job_id: str = response.json()["id"]
                return job_id

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


async def _phase(
    url: str, redis_url: str, args: argparse.Namespace, with_jobs: bool
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(redis_url)
    result: dict[str, Any] = {}
    submitted = time.monotonic()
    if with_jobs:
        await _submit_jobs(url, args.jobs)
        result["jobs_queued_s"] = time.monotonic() - submitted
    latencies = await _sync_load(url, args.concurrency, args.duration)
    result.update(_percentiles(latencies))
    if with_jobs:
        while await redis.xlen(jobs.job_stream_key(MODEL, 1)) > 0:
            await asyncio.sleep(0.05)
        result["jobs_done_s"] = time.monotonic() - submitted
    await redis.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AXON_MODELS_DIR": str(args.models_dir),
           "AXON_LOG_LEVEL": "WARNING", "AXON_GRPC_PORT": "0"}  # fmt: skip
    with RedisServer() as server:
        env["AXON_REDIS_URL"] = server.url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "services.runtime.standalone"],
                env={
                    **env,
                    "AXON_MODEL": MODEL,
                    "AXON_PROVIDER": "cpu",
                    "AXON_MAX_BATCH_ROWS": "64",
                    "AXON_INSTANCE": "bench-jobs-w",
                },
            ),
            subprocess.Popen(
                [sys.executable, "-m", "services.gateway", "--port", str(port)],
                env={**env, "AXON_JOB_BACKLOG_LIMIT": str(max(args.jobs, 1000))},
            ),
        ]
        try:
            _wait(f"{url}/v2/models/{MODEL}/ready")
            asyncio.run(_sync_load(url, args.concurrency, 1.0))  # warm-up
            rounds = []
            for _ in range(args.rounds):
                alone = asyncio.run(_phase(url, server.url, args, with_jobs=False))
                loaded = asyncio.run(_phase(url, server.url, args, with_jobs=True))
                rounds.append({"sync_alone": alone, "sync_with_jobs": loaded})
                print(
                    f"sync alone   p50 {alone['p50_ms']:7.2f} ms  p99 {alone['p99_ms']:7.2f} ms"
                    f"  ({alone['n']} requests)\n"
                    f"sync + jobs  p50 {loaded['p50_ms']:7.2f} ms  p99 {loaded['p99_ms']:7.2f} ms"
                    f"  ({loaded['n']} requests); {args.jobs} jobs queued in "
                    f"{loaded['jobs_queued_s']:.1f} s, all done after {loaded['jobs_done_s']:.1f} s"
                    f"\np99 ratio {loaded['p99_ms'] / alone['p99_ms']:.2f}, "
                    f"p50 ratio {loaded['p50_ms'] / alone['p50_ms']:.2f}",
                    flush=True,
                )
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(timeout=30)
    p99 = [r["sync_with_jobs"]["p99_ms"] / r["sync_alone"]["p99_ms"] for r in rounds]
    p50 = [r["sync_with_jobs"]["p50_ms"] / r["sync_alone"]["p50_ms"] for r in rounds]
    summary = {"rounds": rounds, "p99_ratio_median": float(np.median(p99)),
               "p50_ratio_median": float(np.median(p50)), "concurrency": args.concurrency,
               "duration_s": args.duration, "jobs": args.jobs}  # fmt: skip
    print(
        f"median p99 ratio {summary['p99_ratio_median']:.2f}, p50 {summary['p50_ratio_median']:.2f}"
    )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "jobs.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
