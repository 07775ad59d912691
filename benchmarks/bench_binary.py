"""JSON vs binary tensor data (the OIP binary tensor data extension) per
``POST /v2/models/{m}/infer``, in-process: the real app (middlewares, router, handler,
codec, dispatcher) driven as an ASGI callable on one event loop, on the memory queue
with a worker that decodes each entry and answers at once with fixed outputs (no ONNX
Runtime, no sockets, no Redis). So the figure is the gateway's own work per request.

    .venv/bin/python benchmarks/bench_binary.py [--requests 2000] [--rows 64]

Two cases, each as JSON and as binary:
- classify: ``--rows`` 8×8 images in (FP32 in 0..16, random), logits and probabilities
  [rows, 10] out; binary = binary input + ``binary_data_output``.
- generate: no tensors in (``seed``, ``count`` = ``--rows``), ``--rows`` 8×8 images out;
  binary = ``binary_data_output``.
Prints µs per request (median over 3 passes of the best of 5 rounds), request and
response body bytes, and the JSON/binary ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.asgi_harness import post, running  # noqa: E402
from services.contract.codec import Reply, decode_request  # noqa: E402
from services.contract.protocol import NewEntry, WorkerInfo  # noqa: E402
from services.gateway.app import create_app  # noqa: E402
from services.gateway.settings import GatewaySettings  # noqa: E402
from services.gateway.transport_memory import MemoryTransport  # noqa: E402
from services.runtime.repository import ModelRepository  # noqa: E402
from tests.support.onnx_models import write_classifier, write_tiny_generator  # noqa: E402

CLASSIFIER, GENERATOR = "bench-cnn", "bench-gan"
SIDE, CLASSES, LATENT = 8, 10, 8


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    body: bytes
    headers: list[tuple[bytes, bytes]]


def write_models(repo: Path) -> None:
    """A classifier of 8×8 images (10 classes) and a generator of 8×8 images, as the
    default models; only their metadata matters here (the worker does not run them)."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(
        rng.standard_normal((SIDE * SIDE, CLASSES)).astype(np.float32), "w"
    )
    flat = numpy_helper.from_array(np.array([-1, SIDE * SIDE], dtype=np.int64), "flat_shape")
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),  # [N, 64]
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),  # [N, 10]
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),  # [N, 10]
    ]
    labels = [str(k) for k in range(CLASSES)]
    write_classifier(repo, CLASSIFIER, 1, nodes, [weights, flat], side=SIDE, labels=labels)
    folder = write_tiny_generator(repo, GENERATOR, latent=LATENT, classes=CLASSES)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["outputs"][0]["shape"] = [-1, 1, SIDE, SIDE]
    meta["image"].update(height=SIDE, width=SIDE)
    meta_path.write_text(json.dumps(meta))


def cases(rows: int) -> list[Case]:
    rng = np.random.default_rng(1)
    pixels = (rng.random((rows, 1, SIDE, SIDE)) * 16).astype(np.float32)
    image = {"name": "image", "shape": list(pixels.shape), "datatype": "FP32"}
    as_json = json.dumps({"inputs": [{**image, "data": pixels.ravel().tolist()}]}).encode()
    header = json.dumps(
        {
            "inputs": [{**image, "parameters": {"binary_data_size": pixels.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    seeded: dict[str, Any] = {"inputs": [], "parameters": {"seed": 7, "count": rows}}
    binary_seeded = {**seeded, "parameters": {**seeded["parameters"], "binary_data_output": True}}
    length = [(b"inference-header-content-length", str(len(header)).encode())]
    return [
        Case("classify json", CLASSIFIER, as_json, []),
        Case("classify binary", CLASSIFIER, header + pixels.tobytes(), length),
        Case("generate json", GENERATOR, json.dumps(seeded).encode(), []),
        Case("generate binary", GENERATOR, json.dumps(binary_seeded).encode(), []),
    ]


def instant_worker(outputs: dict[str, np.ndarray[Any, Any]]) -> Any:
    async def handler(entries: Sequence[NewEntry]) -> list[Reply]:
        for entry in entries:
            decode_request(entry.body)  # a worker decodes every entry
        return [Reply.success(entry.request_id, outputs) for entry in entries]

    return handler


async def measure(repo: Path, case: Case, rows: int, requests: int) -> tuple[float, int]:
    """(µs per request, best of 5 rounds; response body bytes)."""
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": "redis://unused.invalid", "AXON_MODELS_DIR": str(repo),
         "AXON_GATEWAY_INSTANCE": "bench", "AXON_MAX_ROWS": str(max(rows, 256))}
    )  # fmt: skip
    queue = MemoryTransport("bench")
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((rows, CLASSES)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    generated = (rng.random((rows, 1, SIDE, SIDE)) * 16).astype(np.float32)
    replies = {
        CLASSIFIER: {"logits": logits, "probabilities": probabilities},
        GENERATOR: {"image": generated},
    }
    for model in (CLASSIFIER, GENERATOR):
        metadata = ModelRepository(repo).load(model).metadata
        info = WorkerInfo("w-" + model, model, 1, "CPU", 64, metadata.raw, {}, 0, 0)
        queue.serve(info, instant_worker(replies[model]))
    app = create_app(settings, transport=lambda _s: queue)
    path = f"/v2/models/{case.model}/infer"
    statuses: list[int] = []
    sizes: list[int] = []
    rounds = []
    async with running(app):
        for _ in range(5):
            begin = time.perf_counter()
            for _ in range(requests // 5):
                status, size = await post(app, path, case.body, case.headers)
                statuses.append(status)
                sizes.append(size)
            rounds.append((time.perf_counter() - begin) / (requests // 5) * 1e6)
    if set(statuses) != {200}:
        raise SystemExit(f"{case.name}: statuses {sorted(set(statuses))}")
    return min(rounds), sizes[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_models(repo)
        all_cases = cases(args.rows)
        timings: dict[str, list[float]] = {c.name: [] for c in all_cases}
        response_bytes: dict[str, int] = {}
        # Interleave the cases over three passes so that drift spreads over all of them.
        for _ in range(3):
            for case in all_cases:
                us, size = asyncio.run(measure(repo, case, args.rows, args.requests))
                timings[case.name].append(us)
                response_bytes[case.name] = size
    print(f"{args.rows} rows per request, {args.requests} requests per round")
    print(f"{'case':<18} {'µs/request':>10} {'request B':>10} {'response B':>11}")
    for case in all_cases:
        print(
            f"{case.name:<18} {statistics.median(timings[case.name]):>10.1f} "
            f"{len(case.body):>10} {response_bytes[case.name]:>11}"
        )
    print(f"{'JSON / binary':<18} {'time':>10} {'request':>10} {'response':>11}")
    for task in ("classify", "generate"):
        json_case, binary_case = f"{task} json", f"{task} binary"
        by_case = {c.name: c for c in all_cases}
        time_ratio = statistics.median(timings[json_case]) / statistics.median(timings[binary_case])
        request_ratio = len(by_case[json_case].body) / len(by_case[binary_case].body)
        response_ratio = response_bytes[json_case] / response_bytes[binary_case]
        print(f"{task:<18} {time_ratio:>9.2f}x {request_ratio:>9.2f}x {response_ratio:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
