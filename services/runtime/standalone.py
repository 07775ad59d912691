"""Run one queue worker without BentoML: ``python -m services.runtime.standalone [family]``.

Settings come from ``AXON_*`` variables (``AXON_MODEL`` is required without a family).
SIGTERM or SIGINT stops it gracefully (drain, acknowledge, deregister). Used by the
worker benchmark and the crash-recovery tests; production runs the BentoML services.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import prometheus_client

from services.contract import logs, redis_client
from services.runtime.metrics import WorkerMetrics, prometheus_backend
from services.runtime.settings import WorkerSettings
from services.runtime.worker import load_model, start_tracing
from services.runtime.worker_group import WorkerGroup


async def serve(settings: WorkerSettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    redis = redis_client.connect(
        settings.redis_url,
        mode=settings.redis_mode,
        fast=settings.redis_fast,
        socket_timeout_s=settings.read_block_ms / 1000 + 10.0,
        connect_timeout_s=10.0,
    )
    metrics = WorkerMetrics.create(prometheus_backend(prometheus_client.CollectorRegistry()))
    tracing = start_tracing(settings, "axon-worker")
    worker = WorkerGroup(redis, load_model(settings), settings, metrics=metrics, tracing=tracing)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await worker.run()
    finally:
        await redis_client.close(redis)
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    family = args[0] if args else None
    logs.configure(os.environ)
    asyncio.run(serve(WorkerSettings.from_env(os.environ, family)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
