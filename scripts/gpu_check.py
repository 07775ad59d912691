"""GPU check for the model services: is CUDA really used, do CUDA and CPU agree, how fast?

    python3 scripts/gpu_check.py MODELS_DIR [--batches 1 64 256] [--seconds 1.0]

For the latest version of every model in MODELS_DIR: builds a CPU session and a CUDA
session with the services' own factory (``services.runtime.session``; ``AXON_PROVIDER``
cuda semantics: fails unless the session really runs on CUDAExecutionProvider),
compares outputs on the same random inputs (max abs diff per output and batch size),
and measures samples/s per provider and batch size. Needs onnxruntime-gpu, numpy and
msgpack importable and the repository on PYTHONPATH. Exit status 0 only if every model
ran on CUDA and every diff is within tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.contract.errors import AxonError
from services.contract.metadata import ModelMetadata
from services.runtime.prepare import generator_inputs
from services.runtime.repository import ModelRepository
from services.runtime.session import CUDA, ModelSession, SessionOptions, create_session

ATOL = 1e-3
RTOL = 1e-3


def inputs_for(
    metadata: ModelMetadata, rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray[Any, Any]]:
    """Realistic random inputs with ``rows`` rows for any of the three tasks."""
    if metadata.task == "generate":
        return generator_inputs(metadata, {"seed": int(rng.integers(0, 2**31)), "count": rows})
    if metadata.task == "forecast":
        return {"history": rng.uniform(0, 150, (rows, metadata.window or 12)).astype(np.float32)}
    image = metadata.raw.get("image", {})
    low, high = image.get("value_range", [0.0, 1.0])
    shape = [rows, *list(metadata.inputs[0].shape[1:])]
    return {"image": rng.uniform(low, high, shape).astype(np.float32)}


def throughput(
    session: ModelSession, feeds: dict[str, np.ndarray[Any, Any]], seconds: float
) -> float:
    rows = next(iter(feeds.values())).shape[0]
    for _ in range(3):
        session.run(feeds)
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(feeds)
        runs += 1
    return runs * rows / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per cell")
    args = parser.parse_args()

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()
    print(
        f"onnxruntime {ort.__version__}, device {ort.get_device()}, "
        f"providers {ort.get_available_providers()}"
    )

    repo = ModelRepository(args.models_dir)
    ok = True
    table: list[tuple[str, int, float, float]] = []
    rng = np.random.default_rng(0)
    for model in repo.models():
        files = repo.load(model)
        cpu = create_session(files, SessionOptions(provider="cpu", intra_op_threads=0))
        try:
            cuda = create_session(files, SessionOptions(provider="cuda"))
        except AxonError as exc:
            print(f"FAIL {model}: {exc}")
            ok = False
            continue
        print(f"{model} v{files.metadata.version}: session provider {cuda.provider}")
        if cuda.provider != CUDA:
            print(f"FAIL {model}: CUDA session runs on {cuda.provider}")
            ok = False
            continue
        cuda.warm_up()
        for rows in args.batches:
            feeds = inputs_for(files.metadata, rows, rng)
            expected, got = cpu.run(feeds), cuda.run(feeds)
            for name, reference in expected.items():
                diff = float(np.max(np.abs(reference - got[name]))) if reference.size else 0.0
                limit = ATOL + RTOL * float(np.max(np.abs(reference)))
                verdict = "ok" if diff <= limit else "FAIL"
                ok &= verdict == "ok"
                print(
                    f"  batch {rows:>4} {name:<14} max abs diff CUDA vs CPU {diff:.3g} "
                    f"(limit {limit:.3g}) {verdict}"
                )
            table.append(
                (
                    model,
                    rows,
                    throughput(cpu, feeds, args.seconds),
                    throughput(cuda, feeds, args.seconds),
                )
            )

    print()
    print(
        f"| {'model':<14} | {'batch':>5} | {'CPU samples/s':>13} "
        f"| {'CUDA samples/s':>14} | {'CUDA/CPU':>8} |"
    )
    print(f"|{'-' * 16}|{'-' * 7}|{'-' * 15}|{'-' * 16}|{'-' * 10}|")
    for model, rows, cpu_rate, cuda_rate in table:
        print(
            f"| {model:<14} | {rows:>5} | {cpu_rate:>13,.0f} | {cuda_rate:>14,.0f} "
            f"| {cuda_rate / cpu_rate:>7.2f}x |"
        )
    print()
    print("GPU CHECK PASSED" if ok and table else "GPU CHECK FAILED")
    return 0 if ok and table else 1


if __name__ == "__main__":
    sys.exit(main())
