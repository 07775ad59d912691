"""Measuring a process' memory under a burst of large requests (shared by chaos
scenario 6i and ``benchmarks/bench_gateway_memory.py``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import TracebackType

import httpx
import psutil


def digits_infer_body(rows: int) -> bytes:
    """An OIP infer body of ``rows`` 8x8 digit images ([rows, 1, 8, 8] FP32, ~320 B/row)."""
    tensor = {"name": "image", "datatype": "FP32", "shape": [rows, 1, 8, 8],
              "data": [3.5] * (rows * 64)}  # fmt: skip
    return json.dumps({"inputs": [tensor]}).encode()


def concurrent_posts(url: str, path: str, body: bytes, count: int) -> list[int]:
    """POST ``body`` ``count`` times at once; the status codes in order."""

    async def burst() -> list[int]:
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            answers = await asyncio.gather(
                *(http.post(path, content=body, headers=headers) for _ in range(count))
            )
        return [answer.status_code for answer in answers]

    return asyncio.run(burst())


class PeakRss:
    """``with PeakRss(pid) as rss:`` samples the RSS of ``pid`` every 10 ms from a thread;
    ``rss.idle`` (at entry) and ``rss.peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.idle = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.idle = self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)
