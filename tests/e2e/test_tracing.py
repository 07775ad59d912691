"""OpenTelemetry tracing end to end: a real gateway process and a real worker process,
each exporting OTLP/HTTP to a test receiver (``tests.support.otlp``), on a Redis of
their own.

- one classify request with the client's ``traceparent`` → one trace holding the
  gateway's spans (HTTP SERVER, validate, queue, send) and the worker's (queue wait,
  process), parent to child across both processes; the gateway's ``queue`` span lasts
  exactly the ``axon_queue_wait_seconds`` observation whose exemplar names the trace;
- 16 concurrent requests → one batch span linked from the 16 traces, with its ONNX
  Runtime run of 16 rows;
- a gRPC ModelInfer with ``traceparent`` metadata → a SERVER span with ``rpc.*``;
- the gateway's log lines are JSON objects carrying the request id and trace id;
- a collector that never answers changes nothing for clients, nor for a stop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV, ManagedRedis
from tests.e2e.payloads import images
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.redis import wait_for

BATCH = 16


@dataclass
class TracedStack:
    url: str
    grpc: str
    receiver: OtlpReceiver
    gateway_log: Path


@pytest.fixture(scope="module")
def traced(e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedStack]:
    logs = tmp_path_factory.mktemp("traced")
    redis = ManagedRedis()
    redis.start()
    processes: list[subprocess.Popen[bytes]] = []
    with otlp_receiver() as receiver:
        env = {
            **os.environ,
            **STACK_ENV,
            "AXON_REDIS_URL": redis.url,
            "AXON_MODELS_DIR": str(e2e_repo),
            "AXON_ACCESS_LOG": "true",
            "AXON_BACKLOG_LIMIT": "64",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        for name in ("OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
            env.pop(name, None)
        port, grpc_port = free_port(), free_port()
        gateway_log = logs / "gateway.log"
        # One worker: 16 rows per batch, waiting up to 2 s to fill it, so 16 concurrent
        # requests make one batch.
        worker_env = {
            **env,
            "AXON_MAX_BATCH_ROWS": str(BATCH),
            "AXON_MAX_QUEUE_DELAY_MS": "2000",
        }
        commands = [
            (
                [sys.executable, "-m", "services.gateway", "--port", str(port),
                 "--grpc-port", str(grpc_port)],
                env,
                gateway_log,
            ),
            (
                [sys.executable, "-m", "services.runtime.standalone", "classifier"],
                worker_env,
                logs / "worker.log",
            ),
        ]  # fmt: skip
        for argv, process_env, log_path in commands:
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen(argv, env=process_env, stdout=log, stderr=subprocess.STDOUT)
                )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            for process, (_, _, log_path) in zip(processes, commands, strict=True):
                assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{url}/v2/models/digits-cnn/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, timeout_s=90, what="traced gateway and worker ready")
            yield TracedStack(url, f"127.0.0.1:{grpc_port}", receiver, gateway_log)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            redis.stop()


def _traceparent(n: int) -> tuple[str, str, str]:
    """(header, trace id, parent span id) of a client span of our own."""
    trace_id, span_id = f"{n:08x}" + "a" * 24, f"{n:08x}" + "b" * 8
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _exemplar(metrics: str, metric: str, trace_id: str) -> float:
    """The value of ``metric``'s exemplar for ``trace_id`` in OpenMetrics text."""
    pattern = re.compile(
        rf'^{metric}_bucket{{[^}}]*}} \S+ # {{[^}}]*trace_id="{trace_id}"[^}}]*}} (\S+)', re.M
    )
    found = pattern.findall(metrics)
    assert len(found) == 1, f"no single exemplar of {metric} for {trace_id}"
    return float(found[0])


def test_one_request_is_one_trace_across_gateway_and_worker(traced: TracedStack) -> None:
    header, trace_id, client_span = _traceparent(1)
    request_id = "trace-e2e-1"
    response = httpx.post(
        f"{traced.url}/v1/models/digits-cnn/classify",
        json={"images": images(1, seed=3)},
        headers={"traceparent": header, "X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    expected = {"validate", "queue", "queue wait"}
    spans = traced.receiver.wait(
        lambda all_: (
            expected <= {s.name for s in all_ if s.trace_id == trace_id}
            and any(s.name.startswith("process ") for s in all_ if s.trace_id == trace_id)
            and any(s.kind == "SERVER" for s in all_ if s.trace_id == trace_id)
        )
    )
    mine = [s for s in spans if s.trace_id == trace_id]
    services = {s.service for s in mine}
    assert services == {"axon-gateway", "axon-worker"}, services

    server = next(s for s in mine if s.kind == "SERVER")
    assert server.name == "POST /v1/models/{model}/classify"
    assert server.parent_span_id == client_span  # the client's span is the parent
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/models/{model}/classify"
    assert server.attributes["axon.request_id"] == request_id
    assert server.attributes["axon.model"] == "digits-cnn"

    validate, queue = _one(mine, "validate"), _one(mine, "queue")
    assert validate.parent_span_id == queue.parent_span_id == server.span_id
    send = next(s for s in mine if s.name.startswith("send "))
    stream = "axon:q:{digits-cnn:1}"
    assert send.name == f"send {stream}" and send.kind == "PRODUCER"
    assert send.parent_span_id == queue.span_id
    assert send.attributes["messaging.destination.name"] == stream
    entry_id = send.attributes["messaging.message.id"]

    wait = _one(mine, "queue wait")
    process = next(s for s in mine if s.name.startswith("process "))
    assert wait.service == process.service == "axon-worker"
    assert wait.parent_span_id == process.parent_span_id == send.span_id  # across processes
    assert process.kind == "CONSUMER"
    assert process.attributes["messaging.message.id"] == entry_id
    assert process.attributes["axon.request_id"].endswith(request_id)
    assert process.attributes["axon.deliveries"] == 1
    # The worker's queue wait lies inside the gateway's queue span (one host, one clock;
    # the entry's time is Redis' ms clock). The process span ends once the worker's
    # reply call returned, which may be after the gateway already had the reply.
    assert queue.start_ns - 5_000_000 <= wait.start_ns <= wait.end_ns <= queue.end_ns
    assert wait.end_ns == process.start_ns

    # The queue span lasts exactly the axon_queue_wait_seconds observation that carries
    # this trace as its exemplar.
    metrics = httpx.get(
        f"{traced.url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )
    assert metrics.headers["content-type"].startswith("application/openmetrics-text")
    observed = _exemplar(metrics.text, "axon_queue_wait_seconds", trace_id)
    assert abs(observed - queue.duration_s) < 1e-6, (observed, queue.duration_s)
    duration = _exemplar(metrics.text, "axon_request_duration_seconds", trace_id)
    assert 0 < duration <= server.duration_s

    # The gateway's access log line is one JSON object with both ids.
    def logged() -> dict[str, str] | None:
        for line in traced.gateway_log.read_text().splitlines():
            if request_id in line and '"services.gateway.access"' in line:
                return dict(json.loads(line))
        return None

    line = wait_for(logged, timeout_s=10, what="the access log line")
    assert line["request_id"] == request_id and line["trace_id"] == trace_id
    assert line["level"] == "INFO" and "POST /v1/models/digits-cnn/classify 200" in line["message"]


def test_a_batch_of_16_requests_is_one_span_linked_from_16_traces(traced: TracedStack) -> None:
    parents = [_traceparent(100 + n) for n in range(BATCH)]

    def classify(n: int) -> int:
        response = httpx.post(
            f"{traced.url}/v1/models/digits-cnn/classify",
            json={"images": images(1, seed=n)},
            headers={"traceparent": parents[n][0]},
            timeout=30,
        )
        return response.status_code

    with ThreadPoolExecutor(BATCH) as pool:
        assert list(pool.map(classify, range(BATCH))) == [200] * BATCH
    trace_ids = {trace_id for _, trace_id, _ in parents}

    def batch_of_ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [
            s for s in spans if s.name.startswith("batch ") and {t for t, _ in s.links} & trace_ids
        ]

    def complete(spans: list[ReceivedSpan]) -> bool:
        # every process's spans arrive on their own schedule (each exports in batches):
        # wait for the worker's (process, batch) and the gateway's (send) alike
        ours = [s for s in spans if s.trace_id in trace_ids]
        processes = [s for s in ours if s.name.startswith("process ")]
        sends = [s for s in ours if s.name.startswith("send ")]
        return len(processes) == len(sends) == BATCH and bool(batch_of_ours(spans))

    spans = traced.receiver.wait(complete)
    batches = batch_of_ours(spans)
    assert len(batches) == 1, [len(b.links) for b in batches]
    batch = batches[0]
    assert {t for t, _ in batch.links} == trace_ids and len(batch.links) == BATCH
    assert batch.trace_id not in trace_ids  # a trace of its own
    assert batch.attributes["axon.batch_rows"] == BATCH
    assert batch.attributes["axon.batch_requests"] == BATCH
    # Each request's process span links back to the batch; the links point at each
    # request's send span (its context in the stream entry).
    sends = {s.span_id for s in spans if s.name.startswith("send ") and s.trace_id in trace_ids}
    assert {span for _, span in batch.links} == sends
    for process in (s for s in spans if s.name.startswith("process ") and s.trace_id in trace_ids):
        assert process.links == ((batch.trace_id, batch.span_id),)
        assert process.attributes["axon.batch_rows"] == BATCH
    children = [s for s in spans if s.parent_span_id == batch.span_id]
    run = _one(children, "onnxruntime run")
    assert run.attributes["axon.batch_rows"] == BATCH
    assert batch.start_ns <= run.start_ns and run.end_ns <= batch.end_ns
    reply = _one(children, "reply")
    assert reply.kind == "PRODUCER" and run.end_ns <= reply.start_ns


def test_grpc_infer_continues_the_callers_trace(traced: TracedStack) -> None:
    header, trace_id, client_span = _traceparent(7)
    pixels = np.asarray(images(1, seed=5), np.float32)
    tensor = triton_grpc.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    with triton_grpc.InferenceServerClient(url=traced.grpc) as client:
        result = client.infer("digits-cnn", [tensor], headers={"traceparent": header})
    assert result.as_numpy("probabilities").shape == (1, 10)
    spans = traced.receiver.wait(
        lambda all_: (
            any(s.trace_id == trace_id and s.name == "queue wait" for s in all_)
            and any(s.trace_id == trace_id and s.kind == "SERVER" for s in all_)
        )
    )
    server = next(s for s in spans if s.trace_id == trace_id and s.kind == "SERVER")
    assert server.name == "inference.GRPCInferenceService/ModelInfer"
    assert server.parent_span_id == client_span
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.method"] == "ModelInfer"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["axon.model"] == "digits-cnn"


def test_a_stalled_collector_changes_nothing_for_clients(e2e_repo: Path, tmp_path: Path) -> None:
    """A collector that accepts connections and never answers: requests are answered
    as before (spans are dropped), and SIGTERM still stops the gateway promptly (it
    waits at most 2 s for its last spans; without that bound, 30 s)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    accepted: list[socket.socket] = []
    threading.Thread(
        target=lambda: accepted.extend(iter(lambda: hole.accept()[0], None)), daemon=True
    ).start()
    redis = ManagedRedis()
    redis.start()
    port = free_port()
    env = {
        **os.environ,
        **STACK_ENV,
        "AXON_REDIS_URL": redis.url,
        "AXON_MODELS_DIR": str(e2e_repo),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "20",
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "services.gateway", "--port", str(port), "--grpc-port", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert gateway.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{url}/healthz/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout_s=60, what="gateway up")
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(200):
                header, _, _ = _traceparent(1000 + n)
                assert (
                    client.get("/v2/health/live", headers={"traceparent": header}).status_code
                    == 200
                )
                # No worker serves spare-cnn: answered 503 at once, traced as an error.
                refused = client.post(
                    "/v1/models/spare-cnn/classify",
                    json={"images": images(1)},
                    headers={"traceparent": header},
                )
                assert refused.status_code == 503, refused.text
        assert accepted, "the exporter never tried the collector"
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=15)  # a hang guard, not a speed check: unbounded it took 30 s
        assert "not exported within 2 s" in log_path.read_text()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        redis.stop()
        hole.close()


def test_an_async_job_is_traced_through_its_lane(traced: TracedStack) -> None:
    header, trace_id, client_span = _traceparent(9)
    accepted = httpx.post(
        f"{traced.url}/v1/models/digits-cnn/classify",
        json={"images": images(1, seed=9)},
        headers={"traceparent": header, "Prefer": "respond-async"},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text

    def done() -> bool:
        answer = httpx.get(f"{traced.url}{accepted.headers['Location']}", timeout=10)
        return answer.json()["status"] == "succeeded"

    wait_for(done, timeout_s=30, what="the job to succeed")
    lane = "axon:qj:{digits-cnn:1}"
    spans = traced.receiver.wait(
        lambda all_: any(s.trace_id == trace_id and s.name == f"process {lane}" for s in all_)
    )
    mine = [s for s in spans if s.trace_id == trace_id]
    server = next(s for s in mine if s.kind == "SERVER")
    assert server.parent_span_id == client_span
    assert server.attributes["http.response.status_code"] == 202
    send = _one(mine, f"send {lane}")
    assert send.parent_span_id == server.span_id and send.kind == "PRODUCER"
    process = _one(mine, f"process {lane}")
    wait = _one(mine, "queue wait")
    assert process.parent_span_id == wait.parent_span_id == send.span_id
    assert process.attributes["messaging.destination.name"] == lane
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]


def test_a_trace_the_client_did_not_sample_records_nothing(traced: TracedStack) -> None:
    """``traceparent`` with flags 00: neither the gateway nor the worker records a span
    of it (the worker learns it from the entry), and the request is answered."""
    unsampled, unsampled_id, _ = _traceparent(11)
    unsampled = unsampled.removesuffix("-01") + "-00"
    sampled, sampled_id, _ = _traceparent(12)
    for header in (unsampled, sampled):
        response = httpx.post(
            f"{traced.url}/v1/models/digits-cnn/classify",
            json={"images": images(1, seed=11)},
            headers={"traceparent": header},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    # The sampled request went second; once its worker spans arrived, the first one's
    # would have too (each process exports in order).
    traced.receiver.wait(
        lambda all_: any(s.trace_id == sampled_id and s.name == "queue wait" for s in all_)
    )
    assert traced.receiver.trace(unsampled_id) == []
