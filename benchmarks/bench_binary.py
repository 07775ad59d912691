"""``make bench-protocols``: REST JSON vs REST binary (the OIP binary tensor data
extension) vs OIP gRPC, per inference request, all three over a real local socket to the
same gateway process, measured in one run.

    .venv/bin/python benchmarks/bench_binary.py --models-dir exported_models
        [--duration 1.0] [--passes 3] [--concurrency 1 8] [--worker instant|onnx]
        [--min-ratio 3] [--output benchmarks/results/protocols.json]

Server (a child process): the gateway as deployed, ``services.gateway.server.serve``
(uvicorn + httptools, its guards) with the app's lifespan starting the OIP gRPC server
on the same event loop; its queue is the in-process memory transport (no Redis:
``bench_gateway.py`` measures the full stack) with one worker per model on that loop:

- ``instant`` (default): decodes each entry as a worker does and answers outputs of the
  right shapes at once, so the figures are the gateway's and the protocol's own cost;
- ``onnx``: the real model in ONNX Runtime (check, prepare, batch run: a worker's path).

Client (this process, another core): bodies encoded once in advance; every response read
whole but not decoded (the first of each cell is decoded, and its tensors must equal the
JSON path's). REST: ``http.client`` keep-alive connections, one per client thread. gRPC:
one ``grpc`` channel, calling ``/inference.GRPCInferenceService/ModelInfer`` with the
``ModelInferRequest`` serialized in advance and the response kept as bytes (the generated
stub's method without its per-call protobuf (de)serialization, so no side pays a codec
in the client). ``c`` client threads keep one request each in flight.

Cases, on the models ``digits-cnn`` and ``digits-gan`` of ``--models-dir`` (8×8 images):

- ``classify x1`` / ``classify x64``: 1 or 64 images in (FP32 0..16), logits and
  probabilities [n, 10] out. Binary: binary input + ``binary_data_output``. gRPC:
  ``raw_input_contents`` in, ``raw_output_contents`` out (as Triton answers).
- ``generate x64``: no tensors in (``seed``, ``count`` = 64), 64 images out.

Each cell (case × protocol × concurrency) runs a short warm-up then ``--duration``
seconds, in ``--passes`` interleaved passes; the table gives the median requests/s, µs
per request (1e6 / requests/s: the server's time per request once c > 1), p50 latency,
and the gateway's and the client's CPU µs per request (``/proc``, all threads), with each
protocol's ratio to JSON measured in the same run. Exits 1 with a
FAIL line when binary at ``classify x64`` is below ``--min-ratio`` × JSON's throughput at
the highest concurrency measured: the gateway's capacity. At c=1 the ratio is a lone
request's latency, a fixed round trip plus the parse; since JSON bodies are parsed by
orjson it is ~1.8×, not the 4.2× it was (docs/decisions.md, "make bench-protocols").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.contract.codec import Reply, decode_request  # noqa: E402
from services.contract.protocol import NewEntry, WorkerInfo  # noqa: E402
from services.gateway.oip_pb import grpc_service_pb2 as pb  # noqa: E402
from services.runtime.redis_server import free_port  # noqa: E402

CLASSIFIER, GENERATOR = "digits-cnn", "digits-gan"
PROTOCOLS = ("json", "binary", "grpc")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
WARMUP_S = 0.3

Tensors = dict[str, np.ndarray[Any, Any]]


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Call:
    """One prepared request: REST (``path``, ``headers``) or gRPC (``path`` is None)."""

    case: str
    protocol: str
    body: bytes
    path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def image_shape(models_dir: Path) -> list[int]:
    """The classifier's input shape after the batch axis, from its metadata."""
    meta = json.loads((models_dir / CLASSIFIER / "1" / "metadata.json").read_text())
    (tensor,) = (t for t in meta["inputs"] if t["name"] == "image")
    return [int(d) for d in tensor["shape"][1:]]


def oip_param(value: int) -> pb.InferParameter:
    return pb.InferParameter(int64_param=value)


def calls(models_dir: Path, rows: int) -> list[Call]:
    """The nine prepared requests: (classify x1, classify x64, generate x64) × protocols."""
    shape = image_shape(models_dir)
    result: list[Call] = []
    rng = np.random.default_rng(1)
    for count in (1, rows):
        case = f"classify x{count}"
        path = f"/v2/models/{CLASSIFIER}/infer"
        pixels = (rng.random((count, *shape)) * 16).astype(np.float32)
        image = {"name": "image", "shape": list(pixels.shape), "datatype": "FP32"}
        as_json = json.dumps({"inputs": [{**image, "data": pixels.ravel().tolist()}]}).encode()
        header = json.dumps(
            {
                "inputs": [{**image, "parameters": {"binary_data_size": pixels.nbytes}}],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        length = (("Inference-Header-Content-Length", str(len(header))),)
        request = pb.ModelInferRequest(model_name=CLASSIFIER)
        request.inputs.add(name="image", datatype="FP32", shape=list(pixels.shape))
        request.raw_input_contents.append(pixels.tobytes())
        result += [
            Call(case, "json", as_json, path, (("Content-Type", "application/json"),)),
            Call(case, "binary", header + pixels.tobytes(), path, length),
            Call(case, "grpc", request.SerializeToString()),
        ]
    case, path = f"generate x{rows}", f"/v2/models/{GENERATOR}/infer"
    seeded: dict[str, Any] = {"inputs": [], "parameters": {"seed": 7, "count": rows}}
    binary = {**seeded, "parameters": {**seeded["parameters"], "binary_data_output": True}}
    request = pb.ModelInferRequest(model_name=GENERATOR)
    request.parameters["seed"].CopyFrom(oip_param(7))
    request.parameters["count"].CopyFrom(oip_param(rows))
    json_type = (("Content-Type", "application/json"),)
    result += [
        Call(case, "json", json.dumps(seeded).encode(), path, json_type),
        Call(case, "binary", json.dumps(binary).encode(), path, json_type),
        Call(case, "grpc", request.SerializeToString()),
    ]
    return result


# ---------------------------------------------------------------------------- decoding

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def decode_rest(headers: http.client.HTTPMessage, body: bytes) -> Tensors:
    """A REST infer response (JSON, or JSON header + binary outputs) → its tensors."""
    length = headers.get("Inference-Header-Content-Length")
    split = int(length) if length is not None else len(body)
    doc, offset, out = json.loads(body[:split]), split, {}
    for tensor in doc["outputs"]:
        dtype = DTYPES[tensor["datatype"]]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(tensor["data"], dtype=dtype)
        else:
            array = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
        out[tensor["name"]] = array.reshape(tensor["shape"])
    return out


def decode_grpc(body: bytes) -> Tensors:
    response = pb.ModelInferResponse.FromString(body)
    return {
        tensor.name: np.frombuffer(raw, dtype=DTYPES[tensor.datatype]).reshape(tensor.shape)
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


# ---------------------------------------------------------------------------- client


class Client:
    """One client thread's connection: ``send(call)`` → response bytes (status 200)."""

    def __init__(self, port: int, channel: grpc.Channel) -> None:
        self._port = port
        self._http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._infer: Callable[..., bytes] = channel.unary_unary(MODEL_INFER)

    def reconnect(self) -> None:
        """A fresh HTTP connection (the server closes idle keep-alive ones)."""
        self._http.close()
        self._http = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)

    def send(self, call: Call) -> bytes:
        if call.path is None:
            return self._infer(call.body, timeout=30)
        return self._post(call)[1]

    def tensors(self, call: Call) -> Tensors:
        """``call``'s response decoded (once per cell: not timed)."""
        if call.path is None:
            return decode_grpc(self.send(call))
        return decode_rest(*self._post(call))

    def _post(self, call: Call) -> tuple[http.client.HTTPMessage, bytes]:
        assert call.path is not None
        self._http.request("POST", call.path, body=call.body, headers=dict(call.headers))
        response = self._http.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{call.case} {call.protocol}: {response.status} {body[:300]!r}")
        return response.headers, body

    def close(self) -> None:
        self._http.close()


@dataclass
class Cell:
    requests_per_s: float
    p50_us: float
    requests: int
    server_cpu_us: float
    """The gateway process's CPU time (user + system, all threads) per request."""
    client_cpu_us: float
    """This (client) process's CPU time per request: when it nears 1e6 / (req/s), the
    client used a whole core and set the pace, not the gateway."""


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(clients: Sequence[Client], call: Call, duration_s: float, server: int) -> Cell:
    """``len(clients)`` threads sending ``call`` back to back for ``duration_s`` (after a
    warm-up): completed requests per second, the median latency and the ``server``
    process's CPU time per request."""
    latencies: list[list[float]] = [[] for _ in clients]
    window = [0.0, 0.0]  # (start, stop), set by the barrier before any thread goes on
    cpu = [0.0, 0.0]  # (server, client) CPU seconds at the start

    def open_window() -> None:
        cpu[0], cpu[1] = cpu_seconds(server), time.process_time()
        window[0] = time.perf_counter()
        window[1] = window[0] + duration_s

    start = threading.Barrier(len(clients) + 1, action=open_window)
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        client, mine = clients[index], latencies[index]
        clock = time.perf_counter
        try:
            client.reconnect()
            warm_until = clock() + WARMUP_S
            while clock() < warm_until:
                client.send(call)
            start.wait()
            while True:
                began = clock()
                if began >= window[1]:
                    return
                client.send(call)
                mine.append(clock() - began)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                start.abort()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window[0]
    used, client_used = cpu_seconds(server) - cpu[0], time.process_time() - cpu[1]
    if errors:
        raise errors[0]
    every = [x for mine in latencies for x in mine]
    if not every:
        raise RuntimeError(f"{call.case} {call.protocol}: no request completed")
    n = len(every)
    return Cell(n / elapsed, statistics.median(every) * 1e6, n, used / n * 1e6,
                client_used / n * 1e6)  # fmt: skip


# ---------------------------------------------------------------------------- server


def instant_worker(classes: int, side: Sequence[int]) -> Any:
    """A worker answering at once with outputs of the request's row count."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4096, classes)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    images = (rng.random((4096, *side)) * 16).astype(np.float32)

    async def handler(entries: Sequence[NewEntry]) -> list[Reply]:
        replies = []
        for entry in entries:
            request = decode_request(entry.body)  # a worker decodes every entry
            if "image" in request.inputs:
                n = len(request.inputs["image"])
                outputs = {"logits": logits[:n], "probabilities": probabilities[:n]}
            else:
                outputs = {"image": images[: int(request.parameters.get("count") or 1)]}
            replies.append(Reply.success(entry.request_id, outputs))
        return replies

    return handler


def serve_child(models_dir: Path, port: int, grpc_port: int, worker: str) -> None:
    """The child process: the gateway on ``port`` (REST) and ``grpc_port`` (gRPC)."""
    from services.gateway.app import create_app
    from services.gateway.server import serve
    from services.gateway.settings import GatewaySettings
    from services.gateway.transport_memory import MemoryTransport
    from services.runtime.repository import ModelRepository

    logging.basicConfig(level=logging.WARNING)
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": "redis://unused.invalid", "AXON_MODELS_DIR": str(models_dir),
         "AXON_GATEWAY_INSTANCE": "bench", "AXON_GRPC_PORT": str(grpc_port)}
    )  # fmt: skip
    settings = dataclasses.replace(settings, grpc_host="127.0.0.1")
    queue = MemoryTransport("bench")
    repository = ModelRepository(models_dir)
    classifier = repository.load(CLASSIFIER).metadata.raw
    image = classifier["image"]
    side = (image["channels"], image["height"], image["width"])
    for model in (CLASSIFIER, GENERATOR):
        files = repository.load(model)
        metadata = files.metadata
        info = WorkerInfo(f"w-{model}", model, metadata.version, "CPUExecutionProvider", 64,
                          metadata.raw, {}, 0, 0)  # fmt: skip
        if worker == "onnx":
            from tests.support.inprocess import OnnxHandler

            queue.serve(info, OnnxHandler(files))
        else:
            queue.serve(info, instant_worker(len(classifier["labels"]), side))
    serve(
        create_app(settings, transport=lambda _settings: queue),
        settings,
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )


@contextlib.contextmanager
def gateway(models_dir: Path, worker: str) -> Iterator[tuple[int, int, int]]:
    """The child gateway, ready: (REST port, gRPC port, process id)."""
    port = grpc_port = free_port()
    while grpc_port == port:
        grpc_port = free_port()
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(grpc_port),
             "--models-dir", str(models_dir), "--worker", worker],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_ready(child, port, grpc_port, log)
            yield port, grpc_port, child.pid
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_ready(child: subprocess.Popen[bytes], port: int, grpc_port: int, log: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            log.seek(0)
            raise SystemExit(f"gateway exited ({child.returncode}):\n{log.read().decode()[-3000:]}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            ready = []
            for model in (CLASSIFIER, GENERATOR):
                conn.request("GET", f"/v2/models/{model}/ready")
                response = conn.getresponse()
                response.read()
                ready.append(response.status == 200)
            conn.close()
            if all(ready):
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    grpc.channel_ready_future(channel).result(timeout=10)
                return
        time.sleep(0.1)
    raise SystemExit("gateway not ready after 60 s")


# ---------------------------------------------------------------------------- report


def check_equal(tensors: dict[str, dict[str, Tensors]]) -> None:
    """Every protocol's decoded outputs equal the JSON path's, per case."""
    for case, by_protocol in tensors.items():
        reference = by_protocol["json"]
        for protocol, got in by_protocol.items():
            if set(got) != set(reference):
                raise SystemExit(f"{case} {protocol}: outputs {sorted(got)} != {sorted(reference)}")
            for name, array in got.items():
                if array.shape != reference[name].shape or not np.allclose(
                    array, reference[name], rtol=1e-6, atol=1e-6
                ):
                    raise SystemExit(f"{case} {protocol}: output {name!r} differs from JSON's")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per cell and pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rows", type=int, default=64, help="images per batched request")
    parser.add_argument("--worker", choices=("instant", "onnx"), default="instant")
    parser.add_argument("--min-ratio", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/protocols.json")
    parser.add_argument("--serve", type=int, nargs=2, metavar=("PORT", "GRPC_PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    models_dir = args.models_dir.resolve()
    if args.serve:
        serve_child(models_dir, args.serve[0], args.serve[1], args.worker)
        return 0
    for model in (CLASSIFIER, GENERATOR):
        if not (models_dir / model / "1" / "metadata.json").is_file():
            raise SystemExit(f"{models_dir}/{model}/1 missing: `make models` builds it")
    prepared = calls(models_dir, args.rows)
    cases = list(dict.fromkeys(c.case for c in prepared))
    samples: dict[tuple[str, str, int], list[Cell]] = {}
    with gateway(models_dir, args.worker) as (port, grpc_port, pid):
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        pool = [Client(port, channel) for _ in range(max(args.concurrency))]
        try:
            decoded: dict[str, dict[str, Tensors]] = {}
            for call in prepared:
                decoded.setdefault(call.case, {})[call.protocol] = pool[0].tensors(call)
            check_equal(decoded)
            # Interleave the cells over the passes so that drift spreads over all of them.
            for _ in range(args.passes):
                for concurrency in args.concurrency:
                    for call in prepared:
                        cell = measure(pool[:concurrency], call, args.duration, pid)
                        key = (call.case, call.protocol, concurrency)
                        samples.setdefault(key, []).append(cell)
        finally:
            for client in pool:
                client.close()
            channel.close()
    return report(args, prepared, cases, samples)


def report(
    args: argparse.Namespace,
    prepared: Sequence[Call],
    cases: Sequence[str],
    samples: dict[tuple[str, str, int], list[Cell]],
) -> int:
    """Print the table (medians over the passes, ratios to JSON), write ``--output``;
    1 when binary misses ``--min-ratio`` × JSON's throughput at the batched case."""
    sizes = {(c.case, c.protocol): len(c.body) for c in prepared}

    def median(field: str) -> dict[tuple[str, str, int], float]:
        return {k: statistics.median(getattr(s, field) for s in v) for k, v in samples.items()}

    rate, p50, cpu = median("requests_per_s"), median("p50_us"), median("server_cpu_us")
    client = median("client_cpu_us")
    print(
        f"Every protocol over 127.0.0.1 TCP to one gateway process (REST: uvicorn, "
        f"http.client; gRPC: grpc.aio on the same loop, grpc channel); worker {args.worker}; "
        f"median of {args.passes} passes x {args.duration:g} s per cell. µs/req = 1e6 / "
        f"req/s; gw CPU / cl CPU = the gateway's / the client's CPU µs per request."
    )
    print(
        f"{'case':<14} {'c':>2} {'protocol':<8} {'req/s':>7} {'vs JSON':>7} {'µs/req':>8} "
        f"{'p50 µs':>8} {'gw CPU':>7} {'vs JSON':>7} {'cl CPU':>7} {'request B':>9}"
    )
    gated, failures = f"classify x{args.rows}", []
    for concurrency in args.concurrency:
        for case in cases:
            base = (case, "json", concurrency)
            for protocol in PROTOCOLS:
                key = (case, protocol, concurrency)
                ratio = rate[key] / rate[base]
                cpu_ratio = cpu[base] / cpu[key] if cpu[key] else 0.0
                print(
                    f"{case:<14} {concurrency:>2} {protocol:<8} {rate[key]:>7.0f} "
                    f"{ratio:>6.2f}x {1e6 / rate[key]:>8.1f} {p50[key]:>8.1f} "
                    f"{cpu[key]:>7.1f} {cpu_ratio:>6.2f}x {client[key]:>7.1f} "
                    f"{sizes[(case, protocol)]:>9}"
                )
                gate = concurrency == max(args.concurrency)
                if case == gated and protocol == "binary" and gate and ratio < args.min_ratio:
                    failures.append(f"c={concurrency}: {ratio:.2f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"case": case, "protocol": protocol, "concurrency": c, "requests_per_s": rate[key],
         "p50_us": p50[key], "server_cpu_us": cpu[key], "client_cpu_us": client[key],
         "passes": [dataclasses.asdict(s) for s in samples[key]]}
        for key in samples for case, protocol, c in [key]
    ]  # fmt: skip
    args.output.write_text(json.dumps({"worker": args.worker, "results": rows}, indent=1))
    if failures:
        print(f"FAIL: binary at {gated} below {args.min_ratio:g}x JSON: {', '.join(failures)}")
        return 1
    print(
        f"ok: binary at {gated} >= {args.min_ratio:g}x JSON's throughput at "
        f"c={max(args.concurrency)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
