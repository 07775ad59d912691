"""Headless Locust load test against ``axon serve`` (started here) or any URL, with a
report: Locust's CSVs, ``report.png`` (throughput and p50/p95/p99 over time),
``summary.md``; with ``--memory`` also the RSS of every process of the stack
(``memory.csv``, ``memory.png``) and a verdict per process (``report.memory_flat``).

    python -m tests.load.run                         # make loadtest: 2 min, 32 users
    python -m tests.load.run --url http://host:8000  # any running Axon
    python -m tests.load.run --quick                 # CI: 20 s, 8 users
    python -m tests.load.run --soak                  # make soak: 10 min + memory check

Exit status: 0 when every request was answered 2xx (and, with a memory check, every
process stayed flat); 1 otherwise; 2 when the stack did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from services.client import AxonClient, AxonHTTPError
from services.runtime.redis_server import free_port
from tests.load.report import (
    memory_flat,
    plot_history,
    plot_memory,
    read_history,
    read_stats,
    stats_table,
)

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MODELS = ("digits-cnn", "sunspots-lstm", "digits-gan")
SERVE_ENV = {
    # A load test measures throughput, not the refusal path: room for every user's work.
    "AXON_BACKLOG_LIMIT": "5000",
    "AXON_LOG_LEVEL": "WARNING",
}


def _ready(url: str) -> bool:
    try:
        with AxonClient(url, timeout=2) as axon:
            return all(axon.model_ready(m) for m in MODELS)
    except (httpx.HTTPError, AxonHTTPError):  # not listening yet; a model not known yet
        return False


@contextlib.contextmanager
def axon_serve(
    models_dir: Path, log_dir: Path, timeout_s: float = 300
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``axon serve`` on a free port until every model is ready; SIGTERM at the end."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AXON_REDIS_URL"}
    env.update(SERVE_ENV)
    env["PYTHONPATH"] = str(ROOT)
    with (log_dir / "serve.out").open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "serve",
                "--port",
                str(port),
                "--models-dir",
                str(models_dir),
                "--log-dir",
                str(log_dir),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (log_dir / "serve.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"axon serve did not become ready:\n{tail}")
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _label(process: psutil.Process) -> str:
    try:
        cmd = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"?-{process.pid}"
    for needle, name in (
        ("services.gateway", "gateway"),
        ("redis-server", "redis"),
        ("ClassifierService", "classifier"),
        ("ForecasterService", "forecaster"),
        ("GeneratorService", "generator"),
        ("services.cli", "axon-serve"),
    ):
        if needle in cmd:
            return f"{name}-{process.pid}"
    return f"{process.name()}-{process.pid}"


class MemorySampler:
    """Samples the RSS of a process and all its descendants every ``interval_s``."""

    def __init__(self, root_pid: int, interval_s: float) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sample(self) -> None:
        now = time.monotonic() - self._start
        try:
            root = psutil.Process(self.root_pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                self.series[_label(process)].append((now, float(process.memory_info().rss)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


def run_locust(url: str, out: Path, *, users: int, spawn_rate: float, duration_s: int) -> int:
    """Locust headless (ramp-up at ``spawn_rate`` users/s); CSVs under ``out/locust*``."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        f"{duration_s}s",
        "--stop-timeout",
        "30",
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    with (out / "locust.log").open("wb") as log:
        return subprocess.run(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=duration_s + 120,
        ).returncode


def report(out: Path, title: str, sampler: MemorySampler | None, warmup_s: float) -> bool:
    """Write report.png / summary.md (and memory.*); True when every check passed."""
    points = read_history(out / "locust_stats_history.csv")
    stats = read_stats(out / "locust_stats.csv")
    plot_history(points, out / "report.png", title)
    lines = [f"# {title}", "", stats_table(stats), ""]
    ok = all(s.failures == 0 for s in stats) and any(s.requests for s in stats)
    if sampler is not None:
        with (out / "memory.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["process", "seconds", "rss_bytes"])
            for name, samples in sorted(sampler.series.items()):
                writer.writerows((name, f"{t:.1f}", int(v)) for t, v in samples)
        plot_memory(sampler.series, out / "memory.png")
        lines += ["## Memory (RSS) per process", ""]
        for name, samples in sorted(sampler.series.items()):
            try:
                verdict = memory_flat(samples, warmup_s=warmup_s)
            except ValueError as exc:
                lines.append(f"- {name}: not judged ({exc})")
                continue
            ok &= verdict.flat
            lines.append(f"- {name}: {verdict.describe()}")
    lines += ["", f"Result: {'PASS' if ok else 'FAIL'}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.load.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="an Axon gateway to load (default: start axon serve)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("AXON_MODELS_DIR") or "exported_models"),
    )
    parser.add_argument("--out", type=Path, default=Path("runs/loadtest"))
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="ramp-up, users/s")
    parser.add_argument("--duration", type=int, default=120, help="seconds of load")
    parser.add_argument("--memory", action="store_true", help="sample RSS, judge flatness")
    parser.add_argument(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds of RSS samples ignored by the memory check",
    )
    parser.add_argument("--interval", type=float, default=5.0, help="RSS sampling period (s)")
    parser.add_argument("--quick", action="store_true", help="CI: 20 s, 8 users, 1 s samples")
    parser.add_argument("--soak", action="store_true", help="10 minutes, 16 users, memory")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.spawn_rate, args.duration = 8, 4.0, 20
        args.interval, args.warmup = 1.0, 5.0
    if args.soak:
        args.users, args.duration, args.memory = 16, 600, True
    if args.quick and args.url is None:
        args.memory = True
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"Axon load: {args.users} users (ramp {args.spawn_rate}/s), {args.duration} s"

    def load(url: str, sampler: MemorySampler | None) -> bool:
        code = run_locust(
            url, args.out, users=args.users, spawn_rate=args.spawn_rate, duration_s=args.duration
        )
        passed = report(args.out, title, sampler, args.warmup)
        return passed and code == 0

    if args.url:
        return 0 if load(args.url.rstrip("/"), None) else 1
    try:
        stack = axon_serve(args.models_dir, args.out / "serve-logs")
        with stack as (url, process):
            print(f"axon serve ready at {url}; loading for {args.duration} s", flush=True)
            if args.memory:
                with MemorySampler(process.pid, args.interval) as sampler:
                    passed = load(url, sampler)
            else:
                passed = load(url, None)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
