"""``make bench``: Axon against two baselines, same model, same load generator, one run.

Model: digits-cnn, one 8×8 image per request. Servers (each alone on the machine while
it is measured):

- **axon**: Redis + the classifier BentoML service (queue worker) + the gateway;
  ``POST /v2/models/digits-cnn/infer`` (OIP v2 JSON tensor).
- **bentoml**: the same ONNX model behind BentoML's own adaptive batching — the
  classifier service's ``POST /classify`` (``batchable=True, max_batch_size=64``).
- **starlette**: ``benchmarks/minimal_server.py``, one process, ONNX Runtime inline.

Load: ``wrk -t1 -cC -dDs --latency`` with a Lua script that POSTs the JSON body, for C in
1, 16, 64 after a short warm-up. Prints requests/s, p50, p99 and non-2xx responses and
the ratios, and for Axon what each request cost Redis (commands and CPU, from the
server's own ``INFO``; ``benchmarks/redis_cost.py``) with the request rate one Redis node
could carry at that cost; writes ``benchmarks/results/gateway.json``.

``--pairs N`` measures Axon (and axon-gwN) and Starlette N times, alternating which goes
first, and prints each pair's ratios with their median, against issue 12's targets
(``make bench`` uses 3: on a shared 2-core machine one pair's ratio at c=64 has swung
0.88–1.27× between runs of the same code; the median of pairs moves far less).

``--compare-tree DIR`` also measures Axon from another source tree (say the last commit:
``git archive HEAD | tar -x -C DIR``) as ``axon-before``, in the same run, so that a
change is judged by ratios measured minutes apart on the same (shared) machine.

``--redis-cluster N`` also measures Axon on a local Redis Cluster of N masters
(``axon-cluster``, with its Redis cost summed over the masters).

``--traced`` also measures Axon with OpenTelemetry tracing on (``axon-traced``: every
request sampled, the gateway and the worker exporting OTLP/HTTP to a local sink,
``benchmarks/otlp_sink.py``): what turning tracing on costs. (Tracing off is ``axon``.)

    python benchmarks/bench_gateway.py --models-dir exported_models [--duration 10]
        [--pairs N | --compare-tree DIR [--rounds N]] [--redis-cluster N] [--traced]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.otlp_sink import otlp_sink  # noqa: E402
from benchmarks.redis_cost import RedisCost, RedisMeter  # noqa: E402
from services.client.codec import encode_infer  # noqa: E402
from services.runtime.redis_cluster import LocalRedisCluster  # noqa: E402
from services.runtime.redis_server import RedisServer, free_port  # noqa: E402

CONCURRENCY = (1, 16, 64)


@dataclass
class Run:
    server: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    requests: int
    redis: RedisCost | None = None
    """What the run cost the Redis server (Axon's runs only)."""


def image() -> list[list[list[float]]]:
    pixels: list[list[list[float]]] = (
        np.random.default_rng(0).integers(0, 17, size=(1, 8, 8)).astype(float).tolist()
    )
    return pixels


def bodies() -> dict[str, tuple[str, str]]:
    """server → (path, JSON body) for one image (OIP: the Python client's JSON form)."""
    oip = encode_infer({"image": np.asarray([image()], np.float32)}, binary=False)
    return {
        "axon": ("/v2/models/digits-cnn/infer", oip.content.decode()),
        "bentoml": ("/classify", json.dumps({"images": [image()]})),
        "starlette": ("/classify", json.dumps({"images": [image()]})),
    }


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


@contextmanager
def spawn(
    argv: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wrk(url: str, body: str, concurrency: int, duration_s: int, tmp: Path) -> Run:
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Run(
        server="",
        concurrency=concurrency,
        requests_per_s=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_find(r"50%\s+([\d.]+\w+)", out)),
        p99_ms=_ms(_find(r"99%\s+([\d.]+\w+)", out)),
        non_2xx=int(_find(r"Non-2xx or 3xx responses:\s+(\d+)", out, "0")),
        errors=sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)),
        requests=int(_find(r"(\d+) requests in", out)),
    )


def _find(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match:
        return match.group(1)
    if default is not None:
        return default
    raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{text}")


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def measure(
    name: str,
    base_url: str,
    duration_s: int,
    tmp: Path,
    path_of: str | None = None,
    meter: RedisMeter | None = None,
) -> list[Run]:
    path, body = bodies()[path_of or name]
    wrk(base_url + path, body, 16, 2, tmp)  # warm-up
    runs = []
    for concurrency in CONCURRENCY:
        if meter is not None:
            meter.start()
        run = wrk(base_url + path, body, concurrency, duration_s, tmp)
        if meter is not None:
            run.redis = meter.stop(run.requests)
        run.server = name
        runs.append(run)
        print(
            f"  {name:<9} c={concurrency:<3} {run.requests_per_s:8.0f} req/s  "
            f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  non-2xx {run.non_2xx}  "
            f"(load {_load()})",
            flush=True,
        )
    return runs


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure_axon(
    name: str,
    source: Path,
    models_dir: Path,
    duration_s: int,
    tmp: Path,
    *,
    with_bentoml: bool = False,
    extra_env: Mapping[str, str] | None = None,
    cluster: int = 0,
    gateways: int = 1,
) -> list[Run]:
    """Redis + the classifier service + the gateway, all from the source tree ``source``;
    then (``with_bentoml``) the same service's own adaptive-batching HTTP API.
    ``cluster`` > 0: on a local Redis Cluster of that many masters instead of one
    server (``redis+cluster://``). ``gateways`` > 1: that many gateway processes on one
    port (``--reuse-port``, as ``axon serve --gateway-workers`` runs them)."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    runs: list[Run] = []
    # No gRPC server (its default port is fixed; this benchmark measures HTTP).
    quiet = {"AXON_LOG_LEVEL": "WARNING", "AXON_PROVIDER": "cpu", "BENTOML_HOME": str(tmp),
             "AXON_GRPC_PORT": "0"}  # fmt: skip
    with _redis(cluster) as (url, ports):
        env = {
            **os.environ,
            **quiet,
            "AXON_REDIS_URL": url,
            "AXON_MODELS_DIR": str(models_dir),
            "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
            **(extra_env or {}),
        }
        service_port, gateway_port = free_port(), free_port()
        with spawn(
            [
                bentoml,
                "serve",
                "services.classifier.service:ClassifierService",
                "--port",
                str(service_port),
            ],
            env,
            tmp / f"{name}-classifier.log",
            cwd=source,
        ) as service:
            wait_http(f"http://127.0.0.1:{service_port}/readyz", 180, service)
            gateway_argv = [sys.executable, "-m", "services.gateway", "--port", str(gateway_port)]
            if gateways > 1:
                gateway_argv.append("--reuse-port")
            with contextlib.ExitStack() as extra:
                for n in range(2, gateways + 1):
                    extra.enter_context(
                        spawn(gateway_argv, env, tmp / f"{name}-gateway-{n}.log", cwd=source)
                    )
                runs += _measure_gateway(
                    name, gateway_argv, env, tmp, source, gateway_port, duration_s, ports,
                    gateways,
                )  # fmt: skip
            if with_bentoml:
                runs += measure("bentoml", f"http://127.0.0.1:{service_port}", duration_s, tmp)
    return runs


def _measure_gateway(
    name: str,
    argv: list[str],
    env: Mapping[str, str],
    tmp: Path,
    source: Path,
    gateway_port: int,
    duration_s: int,
    ports: list[int],
    gateways: int,
) -> list[Run]:
    """Start the (first) gateway, wait until ``gateways`` processes answer on the port,
    measure them with the Redis meter."""
    with spawn(argv, env, tmp / f"{name}-gateway.log", cwd=source) as gateway:
        wait_http(f"http://127.0.0.1:{gateway_port}/v2/models/digits-cnn/ready", 60, gateway)
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while len(seen) < gateways and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/v1/fleet") as answer:
                seen.add(json.loads(answer.read())["gateway"]["instance"])
        meter = RedisMeter(*ports)
        try:
            return measure(
                name, f"http://127.0.0.1:{gateway_port}", duration_s, tmp,
                path_of="axon", meter=meter,
            )  # fmt: skip
        finally:
            meter.close()


@contextmanager
def _redis(masters: int) -> Iterator[tuple[str, list[int]]]:
    """(URL, the ports to meter): one private server, or a cluster of ``masters``."""
    if masters <= 0:
        with RedisServer() as server:
            yield server.url, [server.port]
        return
    with LocalRedisCluster(masters=masters) as cluster:
        seed = cluster.url.replace("redis://", "redis+cluster://").removesuffix("/0")
        yield seed, cluster.master_ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--models-dir", type=Path, default=Path("exported_models"))
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gateway.json")
    parser.add_argument(
        "--compare-tree",
        type=Path,
        help="also measure Axon from this source tree, as 'axon-before' (same run)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --compare-tree: measure before/after this many times, alternating the "
        "order each round (before, after; after, before; …), and report every round's "
        "ratio and their median: drift in the machine's load then hits both trees alike",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        metavar="N",
        help="measure Axon (and axon-gwN) and Starlette N times, alternating which goes "
        "first (axon, starlette; starlette, axon; …), and judge issue 12's targets on the "
        "median of the N ratios: a 2-core machine's drift then hits both servers alike",
    )
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="also measure Axon on a local Redis Cluster of N masters, as 'axon-cluster'",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=1,
        metavar="N",
        help="also measure Axon with N gateway processes on one port, as 'axon-gwN'",
    )
    parser.add_argument(
        "--traced",
        action="store_true",
        help="also measure Axon with tracing on (every request sampled), as 'axon-traced'",
    )
    args = parser.parse_args()
    if args.pairs > 1 and args.compare_tree is not None:
        parser.error("--pairs and --compare-tree: choose one (each alternates its own pair)")
    if shutil.which("wrk") is None:
        print("bench: needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    models_dir = args.models_dir.resolve()
    onnx = models_dir / "digits-cnn" / "1" / "model.onnx"
    if not onnx.is_file():
        print(f"bench: {onnx} missing; run `make models`", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="axon-bench-"))
    runs: list[Run] = []
    print(f"bench: logs in {tmp}; load average {_load()}", flush=True)
    rounds: list[tuple[list[Run], list[Run]]] = []
    if args.compare_tree is not None:
        # The worker setting the earlier bench forced (AXON_MAX_QUEUE_DELAY_MS=0), unless set.
        delay = {"AXON_MAX_QUEUE_DELAY_MS": os.environ.get("AXON_MAX_QUEUE_DELAY_MS", "0")}
        for index in range(max(args.rounds, 1)):

            def before() -> list[Run]:
                return measure_axon(
                    "axon-before",
                    args.compare_tree.resolve(),
                    models_dir,
                    args.duration,
                    tmp,
                    extra_env=delay,
                )

            def after(first: bool = index == 0) -> list[Run]:
                return measure_axon(
                    "axon", ROOT, models_dir, args.duration, tmp, with_bentoml=first
                )

            if index % 2 == 0:
                old, new = before(), after()
            else:
                new, old = after(), before()
            rounds.append((old, new))
            if index == 0:
                runs += old + new
    pairs: list[list[Run]] = []
    for index in range(max(args.pairs, 1)):

        def axon(first: bool = index == 0) -> list[Run]:
            found = []  # with --compare-tree, "axon" was measured in its rounds above
            if args.compare_tree is None:
                found += measure_axon(
                    "axon", ROOT, models_dir, args.duration, tmp, with_bentoml=first
                )
            if args.gateway_workers > 1:
                found += measure_axon(
                    f"axon-gw{args.gateway_workers}", ROOT, models_dir, args.duration, tmp,
                    gateways=args.gateway_workers,
                )  # fmt: skip
            return found

        def plain() -> list[Run]:
            return measure_starlette(onnx, args.duration, tmp)

        found = axon() + plain() if index % 2 == 0 else plain() + axon()
        pairs.append(found)
        if index == 0:
            runs += found
    if args.redis_cluster > 0:
        runs += measure_axon(
            "axon-cluster", ROOT, models_dir, args.duration, tmp, cluster=args.redis_cluster
        )
    if args.traced:
        with otlp_sink() as sink:
            traced = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
            runs += measure_axon(
                "axon-traced", ROOT, models_dir, args.duration, tmp, extra_env=traced
            )
            print(f"  axon-traced exported {sink.requests} OTLP requests, {sink.bytes:,} bytes")
    report(runs)
    if len(rounds) > 1:
        report_rounds(rounds)
    if len(pairs) > 1:
        report_pairs(pairs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    print(f"\nwritten {args.out}")
    return 0


def measure_starlette(onnx: Path, duration_s: int, tmp: Path) -> list[Run]:
    """``benchmarks/minimal_server.py`` on ``onnx``: one process, ONNX Runtime inline."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "benchmarks/minimal_server.py"), str(onnx),
            "--port", str(port)]  # fmt: skip
    with spawn(argv, os.environ, tmp / "starlette.log") as minimal:
        wait_http(f"http://127.0.0.1:{port}/ready", 60, minimal)
        return measure("starlette", f"http://127.0.0.1:{port}", duration_s, tmp)


TARGETS = {1: "p50 ≤ starlette + 0.7 ms", 16: "≥ 0.85×", 64: "≥ 1.0×"}
"""Issue 12's targets per concurrency (axon against starlette, in one run)."""


def report_pairs(pairs: list[list[Run]]) -> None:
    """Per concurrency and Axon variant: the ratio to Starlette measured in each pair (the
    two servers minutes apart, order alternating), their median, and issue 12's target
    judged on the median (p50 difference at c=1, req/s ratio above)."""
    variants = sorted({r.server for r in pairs[0] if r.server.startswith("axon")})
    print(f"\nAxon against Starlette over {len(pairs)} pairs (order alternates):")
    print("\n| c | server | req/s ratio per pair | median | p50 − starlette per pair | median | "
          "issue 12 target (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for c in CONCURRENCY:
        for server in variants:
            ratios, gaps = [], []
            for found in pairs:
                by = {(r.server, r.concurrency): r for r in found}
                mine, plain = by[(server, c)], by[("starlette", c)]
                ratios.append(mine.requests_per_s / plain.requests_per_s)
                gaps.append(mine.p50_ms - plain.p50_ms)
            ratio, gap = float(np.median(ratios)), float(np.median(gaps))
            met = gap <= 0.7 if c == 1 else ratio >= (0.85 if c == 16 else 1.0)
            print(
                f"| {c} | {server} | {' '.join(f'{r:.2f}×' for r in ratios)} | {ratio:.2f}× | "
                f"{' '.join(f'{g:+.2f}' for g in gaps)} ms | {gap:+.2f} ms | "
                f"{TARGETS[c]}: {'met' if met else 'missed'} |"
            )


def report_rounds(rounds: list[tuple[list[Run], list[Run]]]) -> None:
    """axon / axon-before (req/s) per concurrency for each round, and the median."""
    print("\n| c | axon / axon-before per round (order alternates) | median |")
    print("|---|---|---|")
    for c in CONCURRENCY:
        ratios = []
        for old, new in rounds:
            before = next(r for r in old if r.concurrency == c and r.server == "axon-before")
            after = next(r for r in new if r.concurrency == c and r.server == "axon")
            ratios.append(after.requests_per_s / before.requests_per_s)
        shown = " ".join(f"{r:.2f}×" for r in ratios)
        print(f"| {c} | {shown} | {float(np.median(ratios)):.2f}× |")


def report(runs: list[Run]) -> None:
    by = {(r.server, r.concurrency): r for r in runs}
    several = sorted({r.server for r in runs if r.server.startswith("axon-gw")})
    names = ["axon-before", "axon", *several, "axon-cluster", "axon-traced", "bentoml", "starlette"]
    servers = [s for s in names if (s, 1) in by]
    print("\n| c | server | req/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|")
    for c in CONCURRENCY:
        for server in servers:
            r = by[(server, c)]
            print(
                f"| {c} | {server} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | "
                f"{r.p99_ms:.2f} | {r.non_2xx + r.errors} |"
            )
    before = ("axon-before", 1) in by
    extra = " axon / axon-before (req/s) |" if before else ""
    print(
        "\n| c | axon / bentoml (req/s) | axon / starlette (req/s) | axon p50 − starlette p50 |"
        + extra
    )
    print("|---|---|---|---|" + ("---|" if before else ""))
    for c in CONCURRENCY:
        a, b, s = by[("axon", c)], by[("bentoml", c)], by[("starlette", c)]
        line = (
            f"| {c} | {a.requests_per_s / b.requests_per_s:.2f}× | "
            f"{a.requests_per_s / s.requests_per_s:.2f}× | {a.p50_ms - s.p50_ms:+.2f} ms |"
        )
        if before:
            line += f" {a.requests_per_s / by[('axon-before', c)].requests_per_s:.2f}× |"
        print(line)
    report_redis([by[("axon", c)] for c in CONCURRENCY])
    for server in several:
        ratios = ", ".join(
            f"c={c} {by[(server, c)].requests_per_s / by[('starlette', c)].requests_per_s:.2f}×"
            f" (p50 {by[(server, c)].p50_ms - by[('starlette', c)].p50_ms:+.2f} ms)"
            for c in CONCURRENCY
        )
        print(f"\n{server} / starlette (req/s): {ratios}")
    if ("axon-traced", 1) in by:
        ratios = ", ".join(
            f"c={c} {by[('axon-traced', c)].requests_per_s / by[('axon', c)].requests_per_s:.2f}×"
            for c in CONCURRENCY
        )
        print(f"\nTracing on, every request sampled (axon-traced / axon req/s): {ratios}")
    if ("axon-cluster", 1) in by:
        ratios = ", ".join(
            f"c={c} {by[('axon-cluster', c)].requests_per_s / by[('axon', c)].requests_per_s:.2f}×"
            for c in CONCURRENCY
        )
        print(f"\nOn the Redis Cluster (axon-cluster / axon req/s: {ratios}):")
        report_redis([by[("axon-cluster", c)] for c in CONCURRENCY])


def report_redis(runs: list[Run]) -> None:
    """Redis' cost per answered request in Axon's runs (``INFO commandstats`` / ``INFO
    cpu`` over each window) and the request rate one Redis node could carry."""
    measured = [r for r in runs if r.redis is not None]
    if not measured:
        return
    print("\n| c | Redis commands / request | Redis CPU µs / request | projected req/s per "
          "Redis node | top commands / request |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in measured:
        assert r.redis is not None
        top = ", ".join(f"{name} {n:.2f}" for name, n in list(r.redis.by_command.items())[:5])
        print(
            f"| {r.concurrency} | {r.redis.commands_per_request:.2f} | "
            f"{r.redis.cpu_us_per_request:.1f} | {r.redis.projected_requests_per_s:,.0f} | "
            f"{top} |"
        )


if __name__ == "__main__":
    sys.exit(main())
