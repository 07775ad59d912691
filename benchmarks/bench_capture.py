"""``make bench-capture``: what capture at 100 % costs, and ``axon replay`` on it.

One Redis, two standalone workers (digits-cnn version 1 and version 2, a copy of it in
a temporary repository) and two gateway processes on that Redis: one with
``AXON_CAPTURE_FRACTION=0``, one with ``1``. C closed-loop clients POST one image to
``/v1/models/digits-cnn/classify`` (``"version": 1``) for D seconds per phase, rounds
alternating between the gateways. Prints p50 / p99 per phase, the ratio, and each
gateway's CPU time per answered request; then runs ``axon replay digits-cnn --version 2
--limit K`` on what was captured and prints its summary. Writes
``benchmarks/results/capture.json`` (and the replay's report under
``benchmarks/results/replay``).

    python benchmarks/bench_capture.py --models-dir exported_models [--duration 4]
        [--concurrency 8] [--rounds 3] [--limit 1000]
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
BODY = {"images": [np.full((8, 8), 3.0).tolist()], "top_k": 3, "version": 1}


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
                if response.status_code != 200:
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
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, Any]]] = []
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        repo = _repository(args.models_dir, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AXON_MODELS_DIR": str(repo),
               "AXON_LOG_LEVEL": "WARNING", "AXON_GRPC_PORT": "0",
               "AXON_REDIS_URL": server.url}  # fmt: skip
        workers = [
            {**env, "AXON_MODEL": MODEL, "AXON_MODEL_VERSION": str(v), "AXON_PROVIDER": "cpu",
             "AXON_MAX_BATCH_ROWS": "64", "AXON_INSTANCE": f"bench-capture-v{v}"}
            for v in (1, 2)
        ]  # fmt: skip
        ports = {"off": free_port(), "on": free_port()}
        fractions = {"off": "0", "on": "1"}
        children = [
            *(
                subprocess.Popen([sys.executable, "-m", "services.runtime.standalone"], env=w)
                for w in workers
            ),
            *(
                subprocess.Popen(
                    [sys.executable, "-m", "services.gateway", "--port", str(ports[k])],
                    env={**env, "AXON_CAPTURE_FRACTION": fractions[k]},
                )
                for k in ("off", "on")
            ),
        ]
        gateways = {"off": psutil.Process(children[2].pid), "on": psutil.Process(children[3].pid)}
        try:
            for port in ports.values():
                for version in (1, 2):
                    _wait(f"http://127.0.0.1:{port}/v2/models/{MODEL}/versions/{version}/ready")
                asyncio.run(_load(f"http://127.0.0.1:{port}", args.concurrency, 1.0))
            for _ in range(args.rounds):
                phases: dict[str, dict[str, Any]] = {}
                for kind in ("off", "on"):
                    before = _cpu_s(gateways[kind])
                    latencies = asyncio.run(
                        _load(f"http://127.0.0.1:{ports[kind]}", args.concurrency, args.duration)
                    )
                    phases[kind] = _percentiles(latencies)
                    spent = _cpu_s(gateways[kind]) - before
                    phases[kind]["gateway_cpu_ms_per_request"] = 1000 * spent / len(latencies)
                rounds.append(phases)
                off, on = phases["off"], phases["on"]
                print(
                    f"capture off p50 {off['p50_ms']:6.2f} ms p99 {off['p99_ms']:6.2f} ms, "
                    f"gateway CPU {off['gateway_cpu_ms_per_request']:.3f} ms/request  |  on "
                    f"p50 {on['p50_ms']:6.2f} ms p99 {on['p99_ms']:6.2f} ms, CPU "
                    f"{on['gateway_cpu_ms_per_request']:.3f}: p50 x"
                    f"{on['p50_ms'] / off['p50_ms']:.3f}",
                    flush=True,
                )
            replay_out = out / "replay"
            shutil.rmtree(replay_out, ignore_errors=True)
            started = time.monotonic()
            replayed = subprocess.run(
                [sys.executable, "-m", "services.cli", "replay", MODEL, "--version", "2",
                 "--limit", str(args.limit), "--redis-url", server.url, "--out", str(replay_out)],
                env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            print(replayed.stdout + replayed.stderr)
            print(f"axon replay took {time.monotonic() - started:.1f} s")
            (folder,) = replay_out.iterdir()
            report = json.loads((folder / "report.json").read_text())
            report.pop("requests")
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                child.wait(timeout=30)
    summary: dict[str, Any] = {"rounds": rounds, "concurrency": args.concurrency,
                               "duration_s": args.duration, "replay": report}  # fmt: skip
    for q in ("p50", "p99"):
        ratios = [r["on"][f"{q}_ms"] / r["off"][f"{q}_ms"] for r in rounds]
        summary[f"{q}_ratio_median"] = float(np.median(ratios))
    for kind in ("off", "on"):
        summary[f"{kind}_gateway_cpu_ms_median"] = float(
            np.median([r[kind]["gateway_cpu_ms_per_request"] for r in rounds])
        )
    print(
        f"median ratio capture on/off: p50 x{summary['p50_ratio_median']:.3f}, p99 "
        f"x{summary['p99_ratio_median']:.3f}; gateway CPU ms/request "
        f"{summary['off_gateway_cpu_ms_median']:.3f} -> {summary['on_gateway_cpu_ms_median']:.3f}"
    )
    (out / "capture.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
