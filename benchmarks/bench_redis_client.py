"""CPU and wall time per command: redis-py's asyncio client against ``FastRedis``'s own
connections (``services/contract/fast_redis.py``), on a private Redis, in one run.

Each client (``redis_client.connect`` with ``fast`` off, then on; alternated ``--rounds``
times) sends ``--commands`` commands one after the other: ``LPOP`` of a missing key
(a round trip with almost no server work) and ``EVALSHA`` of a one-line script.
CPU time is the process's (``time.process_time``); ratios, not absolutes, carry over
between machines.

    python benchmarks/bench_redis_client.py [--commands 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.contract import redis_client  # noqa: E402
from services.runtime.redis_server import RedisServer  # noqa: E402

SCRIPT = "return ARGV[1]"


async def per_command(client: Any, command: list[Any], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per command over ``n`` sequential calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await client.execute_command(*command)
    return (
        1e6 * (time.process_time() - cpu) / n,
        1e6 * (time.perf_counter() - wall) / n,
    )


async def measure(url: str, commands: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    for round_ in range(rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for fast in order:
            client = redis_client.connect(
                url, socket_timeout_s=5.0, connect_timeout_s=5.0, fast=fast
            )
            sha = await client.script_load(SCRIPT)
            for name, command in (
                ("LPOP", ["LPOP", "missing"]),
                ("EVALSHA", ["EVALSHA", sha, 0, "x"]),
            ):
                await per_command(client, command, 200)  # warm-up
                cpu, wall = await per_command(client, command, commands)
                row = results.setdefault(f"{name} {'fast' if fast else 'redis-py'}", {})
                row.setdefault("cpu", []).append(cpu)
                row.setdefault("wall", []).append(wall)
            await client.aclose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--commands", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with RedisServer() as server:
        results = uvloop.run(measure(server.url, args.commands, args.rounds))
    print(f"µs per command, medians of {args.rounds} rounds of {args.commands}:")
    for label, row in sorted(results.items()):
        cpu, wall = statistics.median(row["cpu"]), statistics.median(row["wall"])
        print(f"  {label:18s} CPU {cpu:6.1f}  wall {wall:6.1f}")
    for name in ("LPOP", "EVALSHA"):
        slow, fast = results[f"{name} redis-py"], results[f"{name} fast"]
        ratio = statistics.median(slow["cpu"]) / statistics.median(fast["cpu"])
        print(f"  {name}: redis-py / fast CPU per command {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
