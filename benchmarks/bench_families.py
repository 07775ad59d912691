"""``make bench-families`` (``make bench`` runs it): Axon against the hand-written server
for every model family, not only the CNN: rows/s at c=16 and c=64, one run.

Per family (digits-cnn, sunspots-lstm, digits-gan from ``--models-dir``):

- **axon**: a private Redis, the family's BentoML service (``axon serve``'s), one gateway;
  ``POST /v2/models/{m}/infer`` with OIP JSON tensors of ``--rows`` rows (1 by default);
- **starlette**: ``minimal_server.py`` on the same ONNX file, ``POST /infer`` with the same
  tensors as plain JSON lists, ONNX Runtime called inline (one process, no queue, no
  batching).

Inputs: digits-cnn one 8×8 image per row; sunspots-lstm one history of the model's
``window`` values per row; digits-gan one latent of the model's size and a label per
row. Load: ``wrk -t1`` (``bench_gateway.wrk``), a 2 s warm-up, then D seconds per point.
Prints rows/s, p50, p99 and Axon / Starlette per family and concurrency; writes
``benchmarks/results/families.json``.

    python benchmarks/bench_families.py --models-dir exported_models [--duration 10]
        [--rows 1] [--families digits-cnn,sunspots-lstm,digits-gan]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_gateway import Run, spawn, wait_http, wrk  # noqa: E402
from services.client.codec import encode_infer  # noqa: E402
from services.runtime.redis_server import RedisServer, free_port  # noqa: E402

FAMILIES = {"digits-cnn": "classifier", "sunspots-lstm": "forecaster", "digits-gan": "generator"}
SERVICES = {
    "classifier": "services.classifier.service:ClassifierService",
    "forecaster": "services.forecaster.service:ForecasterService",
    "generator": "services.generator.service:GeneratorService",
}
CONCURRENCY = (16, 64)


def tensors(model: str, metadata: dict[str, Any], rows: int) -> dict[str, np.ndarray[Any, Any]]:
    """The inputs of one request of ``rows`` rows for ``model`` (see the module doc)."""
    rng = np.random.default_rng(0)
    if model == "digits-cnn":
        return {"image": rng.integers(0, 17, (rows, 1, 8, 8)).astype(np.float32)}
    if model == "sunspots-lstm":
        return {"history": rng.uniform(0, 200, (rows, int(metadata["window"]))).astype(np.float32)}
    latent = next(i for i in metadata["inputs"] if i["name"] == "latent")["shape"][1]
    return {
        "latent": rng.standard_normal((rows, int(latent))).astype(np.float32),
        "label": rng.integers(0, 10, rows).astype(np.int64),
    }


def _points(name: str, url: str, body: str, rows: int, duration_s: int, tmp: Path) -> list[Run]:
    wrk(url, body, 16, 2, tmp)  # warm-up
    runs = []
    for concurrency in CONCURRENCY:
        run = wrk(url, body, concurrency, duration_s, tmp)
        run.server = name
        runs.append(run)
        print(
            f"  {name:<9} c={concurrency:<3} {run.requests_per_s * rows:9.0f} rows/s  "
            f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  non-2xx "
            f"{run.non_2xx + run.errors}",
            flush=True,
        )
    return runs


def measure_family(
    model: str, models_dir: Path, rows: int, duration_s: int, tmp: Path
) -> dict[str, list[Run]]:
    """Axon's and the plain server's runs for ``model``."""
    family = FAMILIES[model]
    metadata = json.loads((models_dir / model / "1" / "metadata.json").read_text())
    inputs = tensors(model, metadata, rows)
    oip = encode_infer(inputs, binary=False).content.decode()
    plain = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}})
    print(f"{model} ({family}), {rows} row(s) per request", flush=True)
    runs: dict[str, list[Run]] = {}
    quiet = {"AXON_LOG_LEVEL": "WARNING", "AXON_PROVIDER": "cpu", "BENTOML_HOME": str(tmp),
             "AXON_GRPC_PORT": "0", "PYTHONPATH": str(ROOT)}  # fmt: skip
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    with RedisServer() as redis:
        env = {**os.environ, **quiet, "AXON_REDIS_URL": redis.url,
               "AXON_MODELS_DIR": str(models_dir),
               f"AXON_{family.upper()}_MODEL": model}  # fmt: skip
        service_port, gateway_port = free_port(), free_port()
        with spawn(
            [bentoml, "serve", SERVICES[family], "--port", str(service_port)],
            env,
            tmp / f"{model}-service.log",
            cwd=ROOT,
        ) as service:
            wait_http(f"http://127.0.0.1:{service_port}/readyz", 180, service)
            argv = [sys.executable, "-m", "services.gateway", "--port", str(gateway_port)]
            with spawn(argv, env, tmp / f"{model}-gateway.log", cwd=ROOT) as gateway:
                base = f"http://127.0.0.1:{gateway_port}"
                wait_http(f"{base}/v2/models/{model}/ready", 60, gateway)
                runs["axon"] = _points(
                    "axon", f"{base}/v2/models/{model}/infer", oip, rows, duration_s, tmp
                )
    port = free_port()
    onnx = models_dir / model / "1" / "model.onnx"
    argv = [sys.executable, str(ROOT / "benchmarks/minimal_server.py"), str(onnx), "--port",
            str(port)]  # fmt: skip
    with spawn(argv, os.environ, tmp / f"{model}-starlette.log") as minimal:
        wait_http(f"http://127.0.0.1:{port}/ready", 60, minimal)
        runs["starlette"] = _points(
            "starlette", f"http://127.0.0.1:{port}/infer", plain, rows, duration_s, tmp
        )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--duration", type=int, default=10, help="seconds per point")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/families.json")
    args = parser.parse_args()
    models = [m.strip() for m in args.families.split(",") if m.strip()]
    unknown = [m for m in models if m not in FAMILIES]
    if unknown:
        parser.error(f"--families: unknown {unknown}; choose from {', '.join(FAMILIES)}")
    models_dir = args.models_dir.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="axon-bench-families-"))
    results = {m: measure_family(m, models_dir, args.rows, args.duration, tmp) for m in models}
    print(
        "\n| model | c | axon rows/s | starlette rows/s | axon / starlette | p50 axon / starlette |"
    )
    print("|---|---|---|---|---|---|")
    for model, runs in results.items():
        for axon, plain in zip(runs["axon"], runs["starlette"], strict=True):
            print(
                f"| {model} | {axon.concurrency} | {axon.requests_per_s * args.rows:,.0f} | "
                f"{plain.requests_per_s * args.rows:,.0f} | "
                f"{axon.requests_per_s / plain.requests_per_s:.2f}× | "
                f"{axon.p50_ms:.2f} / {plain.p50_ms:.2f} ms |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        m: {k: [asdict(r) for r in v] for k, v in runs.items()} for m, runs in results.items()
    }
    args.out.write_text(json.dumps({"rows": args.rows, "results": document}, indent=2))
    print(f"\nwritten {args.out}; logs in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
