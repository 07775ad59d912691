"""Scenario 8: slow clients and a flood of large PNGs against one gateway.

1. Slow clients: ``SILENT`` connections that send nothing, ``HALF_HEADERS`` that stop in
   the middle of their headers, ``HALF_BODIES`` that stop in the middle of their body.
   Measured: when the gateway closed each (header timeout ``HEADER_TIMEOUT_S``, body
   timeout ``BODY_TIMEOUT_S``), what it answered, and the health probe's latency while
   they are connected.
2. PNG flood: ``FLOOD_CLIENTS`` clients, each sending classify requests of ``FLOOD_IMAGES``
   4096×4096 RGB PNGs back to back (the default AXON_MAX_REQUEST_PIXELS exactly) for
   ``FLOOD_SECONDS``, while a prober opens a new connection for ``/v2/health/live``
   every ``PROBE_INTERVAL_S`` (as the kubelet does). Measured: probe latency p50 / p99 /
   max, image request latency, gateway RSS.
3. Decompression bombs (20000² and 10000² all-black PNGs): the status code.

The probes must stay under the liveness probe's 2 s timeout (k8s/base/gateway.yaml).
"""

from __future__ import annotations

import asyncio
import base64
import io
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.chaos.harness import (
    ChaosRedis,
    GatewayProc,
    Procs,
    publish_measures,
    raw_connection,
    start_gateway,
    start_worker,
)
from tests.chaos.slow_model import NAME
from tests.security.test_image_limits import bomb_png

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 4.0
MARGIN_S = 10.0
SILENT, HALF_HEADERS, HALF_BODIES = 10, 20, 20
FLOOD_CLIENTS = 8
FLOOD_IMAGES = 4
FLOOD_SECONDS = 10.0
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 2.0
CLASSIFY = f"/v1/models/{NAME}/classify"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _rgb_png(side: int, seed: int) -> str:
    """A ``side``² RGB PNG of gradients: ~60 KB to send, ~0.3 s to decode."""
    ramp = np.tile(((np.arange(side) + seed) % 256).astype(np.uint8), (side, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp.T, ramp], axis=-1)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Prober:
    """GET /v2/health/live on a new connection every ``PROBE_INTERVAL_S`` (thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=30, limits=no_reuse) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get("/v2/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append(time.monotonic() - started)
                else:
                    self.failures += 1
                self._stop.wait(PROBE_INTERVAL_S)


def slow_clients(gw: GatewayProc) -> tuple[dict[str, list[float]], Counter[str], Prober]:
    """Open the slow clients; return when each was closed (s after opening), what the
    gateway answered them (status line or "nothing"), and the probes taken meanwhile."""
    head = (
        f"POST {CLASSIFY} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    kinds = {
        "silent": b"",
        "half headers": b"GET /v2/health/live HTTP/1.1\r\nHost: g",
        "half body": head + b'{"png": ["',
    }
    counts = {"silent": SILENT, "half headers": HALF_HEADERS, "half body": HALF_BODIES}
    opened: dict[socket.socket, tuple[str, float, bytearray]] = {}
    closed: dict[str, list[float]] = {kind: [] for kind in kinds}
    answers: Counter[str] = Counter()
    with Prober(gw.url) as prober:
        for kind, payload in kinds.items():
            for _ in range(counts[kind]):
                sock = raw_connection(gw.port, payload)
                opened[sock] = (kind, time.monotonic(), bytearray())
        deadline = time.monotonic() + BODY_TIMEOUT_S + MARGIN_S
        while opened and time.monotonic() < deadline:
            readable, _, _ = select.select(list(opened), [], [], 0.1)
            for sock in readable:
                kind, since, data = opened[sock]
                try:
                    chunk = sock.recv(1 << 16)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    data += chunk
                    continue
                closed[kind].append(time.monotonic() - since)
                answers[bytes(data).split(b"\r\n", 1)[0].decode() or "nothing"] += 1
                del opened[sock]
                sock.close()
    for sock in opened:
        sock.close()
    return closed, answers, prober


async def _flood(url: str, body: dict[str, list[str]], until: float) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one_client() -> None:
            while time.monotonic() < until:
                started = time.monotonic()
                response = await client.post(CLASSIFY, json=body)
                results.append((response.status_code, time.monotonic() - started))

        await asyncio.gather(*(one_client() for _ in range(FLOOD_CLIENTS)))
    return results


def test_slow_clients_and_images(procs: Procs, chaos_repo: Path, tmp_path: Path) -> None:
    server = ChaosRedis(procs, tmp_path / "redis", persistent=False)
    server.start()
    start_worker(procs, server, chaos_repo, NAME, "chaos-slow-w")
    gw = start_gateway(
        procs,
        server,
        chaos_repo,
        NAME,
        "chaos-slow-gw",
        header_timeout_s=str(HEADER_TIMEOUT_S),
        body_timeout_s=str(BODY_TIMEOUT_S),
    )

    # 1. Slow clients.
    closed, answers, slow_probes = slow_clients(gw)

    # 2. PNG flood.
    body = {"png": [_rgb_png(4096, seed) for seed in range(FLOOD_IMAGES)]}
    rss_before, rss_peak = gw.rss(), gw.rss()
    with Prober(gw.url) as flood_probes:
        until = time.monotonic() + FLOOD_SECONDS
        holder: dict[str, list[tuple[int, float]]] = {}
        flood = threading.Thread(
            target=lambda: holder.update(results=asyncio.run(_flood(gw.url, body, until)))
        )
        flood.start()
        while flood.is_alive():
            rss_peak = max(rss_peak, gw.rss())
            flood.join(timeout=0.2)
    flood_results = holder["results"]

    # 3. Bombs.
    bombs = {
        side: httpx.post(
            gw.url + CLASSIFY,
            json={"png": [base64.b64encode(bomb_png(side)).decode()]},
            timeout=60,
        ).status_code
        for side in (20_000, 10_000)
    }

    codes = Counter(str(status) for status, _ in flood_results)
    image_latencies = [latency for _, latency in flood_results]
    rows = [
        (
            f"silent / half-headers closed after (timeout {HEADER_TIMEOUT_S:g} s)",
            f"{min(closed['silent'] + closed['half headers']):.2f} - "
            f"{max(closed['silent'] + closed['half headers']):.2f} s "
            f"({len(closed['silent']) + len(closed['half headers'])}/{SILENT + HALF_HEADERS})",
        ),
        (
            f"half-body closed after (timeout {BODY_TIMEOUT_S:g} s)",
            f"{min(closed['half body']):.2f} - {max(closed['half body']):.2f} s "
            f"({len(closed['half body'])}/{HALF_BODIES})",
        ),
        ("answers to slow clients", ", ".join(f"{k}: {n}" for k, n in sorted(answers.items()))),
        (
            "live probe during slow clients p50 / p99 / max",
            f"{_percentile(slow_probes.latencies, 0.5) * 1000:.0f} / "
            f"{_percentile(slow_probes.latencies, 0.99) * 1000:.0f} / "
            f"{max(slow_probes.latencies) * 1000:.0f} ms ({len(slow_probes.latencies)} probes)",
        ),
        (
            f"PNG flood: {FLOOD_CLIENTS} clients x {FLOOD_IMAGES} 4096² RGB, requests",
            f"{len(flood_results)} ({', '.join(f'{k}: {n}' for k, n in sorted(codes.items()))})",
        ),
        (
            "PNG flood request latency p50 / max",
            f"{_percentile(image_latencies, 0.5):.2f} / {max(image_latencies):.2f} s",
        ),
        (
            "live probe during PNG flood p50 / p99 / max",
            f"{_percentile(flood_probes.latencies, 0.5) * 1000:.0f} / "
            f"{_percentile(flood_probes.latencies, 0.99) * 1000:.0f} / "
            f"{max(flood_probes.latencies) * 1000:.0f} ms "
            f"({len(flood_probes.latencies)} probes, {flood_probes.failures} failed)",
        ),
        (
            "gateway RSS before / peak during flood",
            f"{rss_before / 2**20:.0f} / {rss_peak / 2**20:.0f} MB",
        ),
        ("PNG bomb 20000² / 10000² status", f"{bombs[20_000]} / {bombs[10_000]}"),
    ]
    publish_measures(
        "8. Slow clients and PNG floods",
        rows,
        [
            "slow clients hold a socket for at most the header timeout (no headers) or "
            "header + body timeout; probes open a new connection each, like the kubelet",
            "image decoding runs in AXON_IMAGE_THREADS=2 threads, off the event loop",
        ],
    )

    assert len(closed["silent"]) + len(closed["half headers"]) == SILENT + HALF_HEADERS
    assert len(closed["half body"]) == HALF_BODIES
    assert max(closed["silent"] + closed["half headers"]) <= HEADER_TIMEOUT_S + MARGIN_S
    assert max(closed["half body"]) <= BODY_TIMEOUT_S + MARGIN_S
    assert answers["HTTP/1.1 408 Request Timeout"] == HALF_HEADERS + HALF_BODIES, answers
    assert slow_probes.failures == 0 and flood_probes.failures == 0
    assert set(codes) == {"200"}, codes
    assert _percentile(flood_probes.latencies, 0.99) < PROBE_TIMEOUT_S
    assert bombs == {20_000: 413, 10_000: 413}
