"""The gateway's own cost per ``POST /v2/models/{m}/infer``, in-process: the real app
(middlewares, router, handler, JSON codec, dispatcher) driven as an ASGI callable on one
event loop, on the memory queue with a worker that answers at once (no ONNX Runtime, no
sockets, no Redis). So the figure is the gateway's Python work per request, and two
variants of the app compare exactly.

    python benchmarks/bench_router.py [--requests 20000] [--variant NAME ...]

Variants: ``as-built`` (the app as ``create_app`` builds it); with ``--variant
no-<MiddlewareClass>`` the named middleware is left out (e.g. to price one); ``traced``:
OpenTelemetry tracing on, every request sampled, spans exported over OTLP/HTTP to a local
sink (``otlp_sink``); ``traced-10``: the same with 10 % of the traces sampled.
Prints µs per request (best of 5 rounds) and the ratio to ``as-built``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.asgi_harness import post, running  # noqa: E402
from benchmarks.otlp_sink import otlp_sink  # noqa: E402
from services.client.codec import encode_infer  # noqa: E402
from services.contract.codec import Reply, decode_request  # noqa: E402
from services.contract.protocol import NewEntry, WorkerInfo  # noqa: E402
from services.gateway.app import create_app  # noqa: E402
from services.gateway.settings import GatewaySettings  # noqa: E402
from services.gateway.transport_memory import MemoryTransport  # noqa: E402
from services.runtime.repository import ModelRepository  # noqa: E402
from tests.support.onnx_models import write_poison_classifier  # noqa: E402

MODEL = "bench-cnn"
SINK: list[str] = []
"""The OTLP sink's endpoint, once started (``main``)."""
BODY = encode_infer(
    {"image": np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)}, binary=False
).content
OUTPUTS = {
    "logits": np.zeros((1, 3), np.float32),
    "probabilities": np.full((1, 3), 1 / 3, np.float32),
}


async def instant(entries: Sequence[NewEntry]) -> list[Reply]:
    for entry in entries:
        decode_request(entry.body)  # a worker decodes every entry
    return [Reply.success(entry.request_id, OUTPUTS) for entry in entries]


TRACED = {
    "traced": {"OTEL_TRACES_SAMPLER": "always_on"},
    "traced-10": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "traced-0": {"OTEL_TRACES_SAMPLER": "always_off"},
}


async def measure(variant: str, repo: Path, requests: int) -> float:
    env = {"AXON_REDIS_URL": "redis://unused.invalid", "AXON_MODELS_DIR": str(repo),
           "AXON_GATEWAY_INSTANCE": "bench"}  # fmt: skip
    if variant in TRACED:
        # The SDK reads the exporter and sampler settings from the process environment.
        os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": SINK[0], **TRACED[variant]})
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = SINK[0]
    else:
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
        ):
            os.environ.pop(name, None)
    settings = GatewaySettings.from_env(env)
    queue = MemoryTransport("bench")
    metadata = ModelRepository(repo).load(MODEL).metadata
    queue.serve(WorkerInfo("w", MODEL, 1, "CPU", 64, metadata.raw, {}, 0, 0), instant)
    app = create_app(settings, transport=lambda _s: queue)
    if variant.startswith("no-"):
        name = variant[3:]
        kept = [m for m in app.user_middleware if getattr(m.cls, "__name__", "") != name]
        if len(kept) == len(app.user_middleware):
            raise SystemExit(f"--variant {variant}: no middleware named {name}")
        app.user_middleware = kept
    path = f"/v2/models/{MODEL}/infer"
    headers = [(b"content-type", b"application/json")]
    statuses: list[int] = []
    rounds = []
    async with running(app):
        for _ in range(5):
            begin = time.perf_counter()
            for _ in range(requests // 5):
                statuses.append((await post(app, path, BODY, headers))[0])
            rounds.append((time.perf_counter() - begin) / (requests // 5) * 1e6)
    if set(statuses) != {200}:
        raise SystemExit(f"variant {variant}: statuses {sorted(set(statuses))}")
    return min(rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--variant", action="append", default=[])
    args = parser.parse_args(argv)
    variants = ["as-built", *args.variant]
    with tempfile.TemporaryDirectory() as tmp, otlp_sink() as sink:
        SINK.append(sink.endpoint)
        repo = Path(tmp)
        write_poison_classifier(repo, MODEL)
        # Interleave variants over three passes so that drift on a shared machine
        # spreads over all of them.
        results: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(3):
            for variant in variants:
                results[variant].append(asyncio.run(measure(variant, repo, args.requests)))
    base = statistics.median(results["as-built"])
    print(f"{'variant':<36} {'µs/request':>10} {'ratio':>7}")
    for variant, values in results.items():
        value = statistics.median(values)
        print(f"{variant:<36} {value:>10.1f} {value / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
