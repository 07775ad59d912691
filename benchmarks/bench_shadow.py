"""``make bench-shadow``: what a shadow at 100 % costs the primary's clients.

One Redis, two standalone workers (digits-cnn version 1, and version 2: a copy of it in
a temporary repository), one gateway process. C closed-loop clients POST one image to
``/v1/models/digits-cnn/classify`` for D seconds per phase, rounds alternating:

- **alone**: rule ``{"weights": {"1": 100}}``;
- **shadow**: the same weights with ``"shadow": {"version": 2, "fraction": 1}``: every
  request is copied to version 2's job lane and compared.

Version 2's worker runs at niceness ``--shadow-nice`` (default 19, as
``axon serve --nice digits-cnn:2=19`` or ``AXON_WORKER_NICE`` does); ``make bench-shadow``
runs the bench at 19 and at 0, so the two show what the priority buys. Every client
answer must be 200 from version 1 (else the bench stops). Prints p50 / p99
per phase, the ratio to "alone" per round, the CPU time per answered request of the
gateway and of each worker process (user + system, from ``/proc``: what the shadow adds
to each, independent of how loaded the machine is), the shadow's counters and latency,
and writes
``benchmarks/results/shadow-nice{N}.json``. Both workers and the gateway share this machine's
cores, so the shadow phase also measures the shadow worker's CPU taken from the
primary's (on separate nodes that part goes away).

    python benchmarks/bench_shadow.py --models-dir exported_models [--duration 5]
        [--concurrency 8] [--rounds 3] [--shadow-nice 19]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.runtime.redis_server import RedisServer, free_port  # noqa: E402

MODEL = "digits-cnn"
PATH = f"/v1/models/{MODEL}/classify"
ROUTING = f"/v1/models/{MODEL}/routing"
BODY = {"images": [np.full((8, 8), 3.0).tolist()], "top_k": 3}
RULES = {
    "alone": {"weights": {"1": 100}},
    "shadow": {"weights": {"1": 100}, "shadow": {"version": 2, "fraction": 1.0}},
}


def _wait(url: str, timeout_s: float = 90.0) -> None:
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


def _repository(source: Path, root: Path) -> Path:
    """``root`` with digits-cnn 1 and 2 (a copy of 1, its version changed)."""
    shutil.copytree(source / MODEL / "1", root / MODEL / "1")
    shutil.copytree(source / MODEL / "1", root / MODEL / "2")
    meta_path = root / MODEL / "2" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 2
    meta_path.write_text(json.dumps(meta))
    return root


async def _load(url: str, concurrency: int, duration_s: float) -> list[float]:
    import httpx

    latencies: list[float] = []
    until = time.monotonic() + duration_s

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.post(PATH, json=BODY)  # its connection, not measured
            while time.monotonic() < until:
                started = time.perf_counter()
                response = await http.post(PATH, json=BODY)
                if response.status_code != 200 or response.json()["version"] != 1:
                    raise SystemExit(f"a client got {response.status_code}: {response.text}")
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _cpu_s(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` and its children so far."""
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shadow-nice", type=int, default=19, choices=range(20), metavar="0-19")
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        repo = _repository(args.models_dir, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AXON_MODELS_DIR": str(repo),
               "AXON_LOG_LEVEL": "WARNING", "AXON_GRPC_PORT": "0",
               "AXON_REDIS_URL": server.url}  # fmt: skip
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        workers = [
            {**env, "AXON_MODEL": MODEL, "AXON_MODEL_VERSION": str(v), "AXON_PROVIDER": "cpu",
             "AXON_MAX_BATCH_ROWS": "64", "AXON_INSTANCE": f"bench-shadow-v{v}",
             "AXON_WORKER_NICE": str(args.shadow_nice if v == 2 else 0)}
            for v in (1, 2)
        ]  # fmt: skip
        children = [
            *(
                subprocess.Popen([sys.executable, "-m", "services.runtime.standalone"], env=w)
                for w in workers
            ),
            subprocess.Popen([sys.executable, "-m", "services.gateway", "--port", str(port)],
                             env=env),
        ]  # fmt: skip
        try:
            for version in (1, 2):
                _wait(f"{url}/v2/models/{MODEL}/versions/{version}/ready")
            _http("PUT", url + ROUTING, RULES["shadow"])
            asyncio.run(_load(url, args.concurrency, 1.0))  # warm-up, both paths
            names = ("worker_v1", "worker_v2", "gateway")
            procs = [psutil.Process(child.pid) for child in children]
            for _ in range(args.rounds):
                phases: dict[str, dict[str, Any]] = {}
                for kind in ("alone", "shadow"):
                    _http("PUT", url + ROUTING, RULES[kind])
                    before = [_cpu_s(p) for p in procs]
                    latencies = asyncio.run(_load(url, args.concurrency, args.duration))
                    time.sleep(0.2)  # the phase's last copies finish
                    phases[kind] = _percentiles(latencies)
                    for name, proc, was in zip(names, procs, before, strict=True):
                        spent = _cpu_s(proc) - was
                        phases[kind][f"{name}_cpu_ms_per_request"] = 1000 * spent / len(latencies)
                rounds.append(phases)
                alone, shadow = phases["alone"], phases["shadow"]
                print(
                    f"alone  p50 {alone['p50_ms']:6.2f} ms p99 {alone['p99_ms']:6.2f} ms "
                    f"({alone['n']})  |  shadow p50 {shadow['p50_ms']:6.2f} ms p99 "
                    f"{shadow['p99_ms']:6.2f} ms ({shadow['n']}): p50 x"
                    f"{shadow['p50_ms'] / alone['p50_ms']:.3f}, p99 x"
                    f"{shadow['p99_ms'] / alone['p99_ms']:.3f}",
                    flush=True,
                )
                for kind in ("alone", "shadow"):
                    cpu = ", ".join(
                        f"{n} {phases[kind][f'{n}_cpu_ms_per_request']:.3f}" for n in names
                    )
                    print(f"  CPU ms per request, {kind}: {cpu}", flush=True)
            time.sleep(1.0)  # the last copies finish
            figures = _http("GET", url + ROUTING)["shadow"]["stats"]
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                child.wait(timeout=30)
    summary: dict[str, Any] = {"rounds": rounds, "concurrency": args.concurrency,
                               "duration_s": args.duration, "shadow": figures,
                               "shadow_nice": args.shadow_nice}  # fmt: skip
    for q in ("p50", "p99"):
        ratios = [r["shadow"][f"{q}_ms"] / r["alone"][f"{q}_ms"] for r in rounds]
        summary[f"{q}_ratio_median"] = float(np.median(ratios))
    for name in ("worker_v1", "worker_v2", "gateway"):
        key = f"{name}_cpu_ms_per_request"
        for kind in ("alone", "shadow"):
            summary[f"{kind}_{key}_median"] = float(np.median([r[kind][key] for r in rounds]))
        print(
            f"{name:9} CPU ms/request median: alone {summary[f'alone_{key}_median']:.3f}, "
            f"shadow {summary[f'shadow_{key}_median']:.3f}"
        )
    print(
        f"version 2 at niceness {args.shadow_nice}: "
        f"median ratio shadow/alone: p50 x{summary['p50_ratio_median']:.3f}, "
        f"p99 x{summary['p99_ratio_median']:.3f}"
    )
    print(f"shadow outcomes {figures['outcomes']}; top-1 agreement {figures['top1_agreement']}")
    print(f"shadow latency {figures['latency_ms']}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"shadow-nice{args.shadow_nice}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
