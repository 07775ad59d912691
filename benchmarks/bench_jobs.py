"""``make bench-jobs``: what async jobs cost synchronous requests on the same workers.

One Redis, one standalone worker (digits-cnn, batches of up to 64 rows), one gateway
process. Synchronous load: C concurrent clients (closed loop) POSTing one image to
``/v1/models/digits-cnn/classify``, measured three ways per round:

- **alone**: nothing else queued, for D seconds;
- **queued**: 1,000 jobs (``Prefer: respond-async``, one image each) submitted while
  the worker is stopped (SIGSTOP), then the worker continues and the requests are
  measured while any job waits (at most D seconds): what the job lane costs requests
  at the worker (the lane's priority). 1,000 tiny jobs drain in well under a second on
  a CPU, so this phase has few samples (none: NaN);
- **submitted**: the 1,000 jobs POSTed during the D seconds of load, at an even rate
  (1,000 / D per second), by a process of their own (a submitter in the load
  generator's event loop would delay its clients and be measured as the gateway's
  latency): the lane plus the gateway's cost of accepting 1,000 more HTTP calls on the
  same CPUs.

The worker keeps its default ``AXON_JOB_BATCH_ROWS`` (a quarter of its 64-row batches):
a request that arrives while jobs run waits for at most 16 job rows.

Rounds repeat the three phases (the machine is shared; ratios of phases seconds apart
are what counts). Prints p50 / p99 of the synchronous requests per phase with the
ratios to "alone", and how long the jobs took; writes ``benchmarks/results/jobs.json``.

    python benchmarks/bench_jobs.py --models-dir exported_models [--duration 5]
        [--concurrency 8] [--rounds 3] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
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


async def _sync_load(
    url: str, concurrency: int, duration_s: float, busy: Any = None
) -> list[float]:
    """Latencies of closed-loop requests for ``duration_s``, or, with ``busy`` (an async
    predicate), while it holds and at most that long."""
    import httpx

    latencies: list[float] = []
    until = time.monotonic() + duration_s
    going = [True]

    async def watch() -> None:
        while going[0] and time.monotonic() < until:
            going[0] = await busy()
            await asyncio.sleep(0.01)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.post(PATH, json=BODY)  # its connection, not measured
            while going[0] and time.monotonic() < until:
                started = time.perf_counter()
                response = await http.post(PATH, json=BODY)
                if response.status_code != 200:
                    raise SystemExit(f"sync request answered {response.status_code}")
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)), *([watch()] if busy else []))
    return latencies


async def _submit_jobs(url: str, count: int, over_s: float = 0.0) -> list[str]:
    """POST ``count`` jobs (16 at a time), spread evenly over ``over_s`` seconds (0: as
    fast as they are accepted); their ids."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        sem = asyncio.Semaphore(16)
        start = time.monotonic()

        async def one(n: int) -> str:
            if over_s:
                await asyncio.sleep(max(0.0, start + over_s * n / count - time.monotonic()))
            async with sem:
                response = await http.post(PATH, json=BODY, headers={"Prefer": "respond-async"})
                if response.status_code != 202:
                    raise SystemExit(f"job submission answered {response.status_code}")
                job_id: str = response.json()["id"]
                return job_id

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _submitter(url: str, count: int, over_s: float) -> subprocess.Popen[bytes]:
    """A process of its own that submits the jobs (``--submit``)."""
    argv = [sys.executable, __file__, "--submit", url, "--jobs", str(count),
            "--duration", str(over_s)]  # fmt: skip
    return subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    if not len(ms):  # the jobs drained before any request completed
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


async def _phase(
    url: str, redis_url: str, args: argparse.Namespace, kind: str, worker: subprocess.Popen[bytes]
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(redis_url)
    lane = jobs.job_stream_key(MODEL, 1)

    async def waiting() -> bool:
        return bool(await redis.xlen(lane))

    result: dict[str, Any] = {}
    if kind == "alone":
        latencies = await _sync_load(url, args.concurrency, args.duration)
    elif kind == "queued":
        worker.send_signal(signal.SIGSTOP)
        try:
            await _submit_jobs(url, args.jobs)
        finally:
            worker.send_signal(signal.SIGCONT)
        started = time.monotonic()
        latencies = await _sync_load(url, args.concurrency, args.duration, busy=waiting)
        result["jobs_done_s"] = time.monotonic() - started
    else:
        started = time.monotonic()
        submitter = _submitter(url, args.jobs, args.duration)
        latencies = await _sync_load(url, args.concurrency, args.duration)
        if await asyncio.to_thread(submitter.wait) != 0:
            raise SystemExit("the job submitter failed")
        while await waiting():
            await asyncio.sleep(0.05)
        result["jobs_done_s"] = time.monotonic() - started
    result.update(_percentiles(latencies))
    await redis.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--submit", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.submit:  # the submitter process of the "submitted" phase
        asyncio.run(_submit_jobs(args.submit, args.jobs, args.duration))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AXON_MODELS_DIR": str(args.models_dir),
           "AXON_LOG_LEVEL": "WARNING", "AXON_GRPC_PORT": "0"}  # fmt: skip
    rounds: list[dict[str, dict[str, Any]]] = []
    with RedisServer() as server:
        env["AXON_REDIS_URL"] = server.url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        worker_env = {**env, "AXON_MODEL": MODEL, "AXON_PROVIDER": "cpu",
                      "AXON_MAX_BATCH_ROWS": "64", "AXON_INSTANCE": "bench-jobs-w",
                      # a SIGSTOPped worker stays registered and keeps its entries
                      "AXON_HEARTBEAT_TTL_MS": "60000",
                      "AXON_CLAIM_TIMEOUT_MS": "60000"}  # fmt: skip
        children = [
            subprocess.Popen([sys.executable, "-m", "services.runtime.standalone"], env=worker_env),
            subprocess.Popen(
                [sys.executable, "-m", "services.gateway", "--port", str(port)],
                env={**env, "AXON_JOB_BACKLOG_LIMIT": str(max(args.jobs, 1000))},
            ),
        ]
        try:
            _wait(f"{url}/v2/models/{MODEL}/ready")
            asyncio.run(_sync_load(url, args.concurrency, 1.0))  # warm-up
            for _ in range(args.rounds):
                phases = {
                    kind: asyncio.run(_phase(url, server.url, args, kind, children[0]))
                    for kind in ("alone", "queued", "submitted")
                }
                rounds.append(phases)
                alone = phases["alone"]
                for kind, got in phases.items():
                    took = got.get("jobs_done_s")
                    print(
                        f"{kind:9} p50 {got['p50_ms']:7.2f} ms  p99 {got['p99_ms']:7.2f} ms  "
                        f"({got['n']} requests; p50 x{got['p50_ms'] / alone['p50_ms']:.2f}, "
                        f"p99 x{got['p99_ms'] / alone['p99_ms']:.2f})"
                        + ("" if took is None else f"; jobs done in {took:.1f} s"),
                        flush=True,
                    )
        finally:
            for child in children:
                child.send_signal(signal.SIGCONT)
                child.terminate()
            for child in children:
                child.wait(timeout=30)
    summary: dict[str, Any] = {"rounds": rounds, "concurrency": args.concurrency,
                               "duration_s": args.duration, "jobs": args.jobs}  # fmt: skip
    for kind in ("queued", "submitted"):
        for q in ("p50", "p99"):
            ratio = [r[kind][f"{q}_ms"] / r["alone"][f"{q}_ms"] for r in rounds]
            summary[f"{kind}_{q}_ratio_median"] = float(np.nanmedian(ratio))
        print(
            f"median ratio to alone, {kind}: p50 x{summary[f'{kind}_p50_ratio_median']:.2f}, "
            f"p99 x{summary[f'{kind}_p99_ratio_median']:.2f}"
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "jobs.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
