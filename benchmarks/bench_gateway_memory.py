"""Gateway memory per request: peak RSS growth per byte of body for N concurrent large
infer requests, this tree's gateway vs another tree's (``--compare-tree``), one Redis
and one worker for both, in one run.

    .venv/bin/python benchmarks/bench_gateway_memory.py --models-dir exported_models \\
        [--compare-tree /tmp/axon-before] [--rows 20000] [--concurrency 4]

(``git worktree add /tmp/axon-before <commit>`` makes a tree to compare with.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.runtime.redis_server import RedisServer, free_port  # noqa: E402
from tests.support.memory import PeakRss, concurrent_posts, digits_infer_body  # noqa: E402

INFER = "/v2/models/digits-cnn/infer"


def measure(tree: Path, env: dict[str, str], body: bytes, concurrency: int) -> dict[str, object]:
    """Start ``tree``'s gateway, send ``concurrency`` copies of ``body`` at once."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.gateway", "--port", str(port)],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree), "AXON_GRPC_PORT": "0"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/models/digits-cnn/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        with PeakRss(process.pid) as rss:
            statuses = concurrent_posts(url, INFER, body, concurrency)
        time.sleep(1.0)
        idle, peak, after = rss.idle, rss.peak, rss.now()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "statuses": statuses,
        "idle_mib": idle >> 20,
        "peak_mib": peak >> 20,
        "after_1s_mib": after >> 20,
        "peak_growth_per_body_byte": round((peak - idle) / (concurrency * len(body)), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--compare-tree", type=Path)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    rows = args.rows
    body = digits_infer_body(rows)
    with RedisServer() as redis:
        env = {
            **os.environ,
            "AXON_REDIS_URL": redis.url,
            "AXON_MODELS_DIR": str(args.models_dir.resolve()),
            "AXON_MODEL": "digits-cnn",
            "AXON_INSTANCE": "bench-memory-worker",
            "AXON_MAX_BATCH_ROWS": str(rows),
            "AXON_MAX_ROWS": str(rows),
            "AXON_MAX_INFLIGHT_BYTES": str(args.concurrency * len(body) * 2),
            "AXON_BACKLOG_BYTES": str(args.concurrency * len(body) * 8),
            "AXON_LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen([sys.executable, "-m", "services.runtime.standalone"], env=env)
        try:
            results = {"this tree": measure(ROOT, env, body, args.concurrency)}
            if args.compare_tree:
                results[str(args.compare_tree)] = measure(
                    args.compare_tree, env, body, args.concurrency
                )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    print(json.dumps({"body_bytes": len(body), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
