"""CPU time per request of each process of Axon's request path, per source tree.

Redis, the BentoML classifier service (digits-cnn) and one gateway, all from a source
tree, loaded by ``wrk -t1 -c64`` for ``--duration`` s; each process's CPU time (user +
system, from ``/proc/<pid>/stat``; the service's whole process tree) over the run,
divided by the requests answered. On a shared 2-core machine this moves much less with
the load than req/s does, so it is how two trees compare (docs/decisions.md, "Where the
gateway's CPU per request went"). Trees are measured in turn, ``--rounds`` times,
alternating the order each round.

    python benchmarks/bench_gateway_cpu.py --models-dir DIR [--tree PATH ...]
        [--variant AXON_X=V ...] [--rounds 2]

``--variant`` adds each tree run again with that setting in every process's environment
(e.g. ``AXON_GC_THRESHOLD=0`` against the default), measured in the same alternation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_binary import cpu_seconds  # noqa: E402
from benchmarks.bench_gateway import bodies, spawn, wait_http, wrk  # noqa: E402
from services.runtime.redis_server import RedisServer, free_port  # noqa: E402


@dataclass
class Sample:
    tree: str
    """The tree, and the variant's setting if any."""
    requests_per_s: float
    p50_ms: float
    non_2xx: int
    gateway_us: float
    worker_us: float
    redis_us: float


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the BentoML server forks its worker)."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found += process_tree(int(child))
    return found


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (those gone count 0)."""
    return sum(cpu_seconds(pid) for pid in pids)


def measure_tree(
    tree: Path,
    variant: str,
    models_dir: Path,
    duration_s: int,
    concurrency: int,
    tmp: Path,
) -> Sample:
    """One stack from ``tree`` with ``variant`` ("" or ``NAME=VALUE``) in its
    environment, one measured run (after a warm-up)."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    with RedisServer() as redis:
        env = {**os.environ, "AXON_LOG_LEVEL": "WARNING", "AXON_PROVIDER": "cpu",
               "BENTOML_HOME": str(tmp), "AXON_GRPC_PORT": "0", "AXON_REDIS_URL": redis.url,
               "AXON_MODELS_DIR": str(models_dir), "PYTHONPATH": str(tree)}  # fmt: skip
        if variant:
            name, _, value = variant.partition("=")
            env[name] = value
        service_port, gateway_port = free_port(), free_port()
        service_argv = [bentoml, "serve", "services.classifier.service:ClassifierService",
                        "--port", str(service_port)]  # fmt: skip
        with spawn(service_argv, env, tmp / "service.log", cwd=tree) as service:
            wait_http(f"http://127.0.0.1:{service_port}/readyz", 180, service)
            gateway_argv = [sys.executable, "-m", "services.gateway", "--port", str(gateway_port)]
            with spawn(gateway_argv, env, tmp / "gateway.log", cwd=tree) as gateway:
                base = f"http://127.0.0.1:{gateway_port}"
                wait_http(base + "/v2/models/digits-cnn/ready", 60, gateway)
                path, body = bodies()["axon"]
                wrk(base + path, body, 16, 2, tmp)  # warm-up
                redis_pid = redis.pid
                assert redis_pid is not None
                groups = [[gateway.pid], process_tree(service.pid), [redis_pid]]
                before = [cpu_s(pids) for pids in groups]
                run = wrk(base + path, body, concurrency, duration_s, tmp)
                spent = [cpu_s(pids) - b for pids, b in zip(groups, before, strict=True)]
    per = [1e6 * s / max(run.requests, 1) for s in spent]
    label = f"{tree} {variant}".rstrip()
    print(
        f"  {label}: {run.requests_per_s:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
        f"non-2xx {run.non_2xx}  µs/request: gateway {per[0]:5.0f}  "
        f"worker {per[1]:4.0f}  redis {per[2]:3.0f}",
        flush=True,
    )
    return Sample(label, run.requests_per_s, run.p50_ms, run.non_2xx, *per)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="a tree to measure (repeatable)"
    )
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=VALUE: each tree again with it"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    for variant in args.variant:
        if not variant.startswith("AXON_") or "=" not in variant:
            parser.error(f"--variant {variant!r}: expected AXON_NAME=VALUE")
    configs = [(tree.resolve(), v) for tree in args.tree or [ROOT] for v in ["", *args.variant]]
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="axon-cpu-") as tmp:
        for round_ in range(args.rounds):
            order = configs if round_ % 2 == 0 else configs[::-1]
            for n, (tree, variant) in enumerate(order):
                work = Path(tmp) / f"{round_}-{n}"
                work.mkdir()
                samples.append(
                    measure_tree(
                        tree,
                        variant,
                        args.models_dir.resolve(),
                        args.duration,
                        args.concurrency,
                        work,
                    )
                )
    print(f"\nmedians over {args.rounds} rounds, c={args.concurrency}:")
    for label in dict.fromkeys(s.tree for s in samples):
        mine = [s for s in samples if s.tree == label]
        print(
            f"  {label}: gateway {statistics.median(s.gateway_us for s in mine):.0f} µs/request, "
            f"worker {statistics.median(s.worker_us for s in mine):.0f}, "
            f"redis {statistics.median(s.redis_us for s in mine):.0f}, "
            f"{statistics.median(s.requests_per_s for s in mine):.0f} req/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
