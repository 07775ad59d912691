"""Baseline (b) of ``bench_gateway.py``: the smallest honest server for the same model —
one process, Starlette on uvicorn, ONNX Runtime called inline (no queue, no batching).

    python benchmarks/minimal_server.py MODEL.onnx --port 8100
    POST /classify {"images": [N][C][H][W]} → {"probabilities": [N][K]}
    POST /infer {"inputs": {name: nested list}} → {"outputs": {name: nested list}}
        (any model: its inputs' dtypes from the ONNX graph; ``bench_families.py``)
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def create_app(model_path: str) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

    async def classify(request: Request) -> Response:
        images = np.asarray(json.loads(await request.body())["images"], dtype=np.float32)
        (probabilities,) = session.run(["probabilities"], {"image": images})
        body = json.dumps({"probabilities": probabilities.tolist()}, separators=(",", ":"))
        return Response(body, media_type="application/json")

    dtypes = {i.name: _DTYPES[i.type] for i in session.get_inputs()}

    async def infer(request: Request) -> Response:
        given = json.loads(await request.body())["inputs"]
        feeds = {name: np.asarray(given[name], dtype=dtype) for name, dtype in dtypes.items()}
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, feeds), strict=True))
        body = json.dumps(
            {"outputs": {k: v.tolist() for k, v in outputs.items()}}, separators=(",", ":")
        )
        return Response(body, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route("/classify", classify, methods=["POST"]),
            Route("/infer", infer, methods=["POST"]),
            Route("/ready", ready, methods=["GET"]),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
