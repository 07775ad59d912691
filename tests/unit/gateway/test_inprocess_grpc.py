"""The OIP gRPC server in-process: the real app's lifespan starts it on its event loop,
real ONNX Runtime workers answer over the memory queue, and a stock
``tritonclient.grpc`` (and raw stubs, for what that client cannot send) talks to it over
a real socket. Results equal the REST JSON path's; every failure is its gRPC status."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from services.contract.errors import SettingsError
from services.gateway.oip_pb import grpc_service_pb2 as pb
from services.gateway.oip_pb import grpc_service_pb2_grpc as pb_grpc
from services.gateway.oip_pb import health_pb2, health_pb2_grpc
from services.runtime.redis_server import free_port
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, infer_image, stack

IMAGES = (np.arange(3 * 4, dtype=np.float32).reshape(3, 1, 2, 2) % 17) / 4


@contextlib.contextmanager
def served(
    tmp_path: Path, env: Mapping[str, str] | None = None, serve: tuple[str, ...] = (CLASSIFIER,)
) -> Iterator[tuple[Stack, str]]:
    """The in-process gateway with its gRPC server on a free port: (stack, address)."""
    port = free_port()
    with stack(tmp_path, {"AXON_GRPC_PORT": str(port), **(env or {})}, serve=serve) as gw:
        yield gw, f"127.0.0.1:{port}"


def infer_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def raw_images() -> pb.ModelInferRequest:
    """A ModelInferRequest for the classifier: ``IMAGES`` as raw_input_contents."""
    request = pb.ModelInferRequest(model_name=CLASSIFIER, raw_input_contents=[IMAGES.tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=IMAGES.shape)
    return request


def rest_outputs(gw: Stack, model: str, doc: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The same request through the REST JSON path."""
    response = gw.client.post(f"/v2/models/{model}/infer", json=doc)
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.asarray(out["data"], np.float32).reshape(out["shape"])
        for out in response.json()["outputs"]
    }


def tensor_json(name: str, array: np.ndarray[Any, Any], datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "data": array.ravel().tolist()}  # fmt: skip


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), error.details()


def test_stock_client_metadata_readiness_statistics_and_index(tmp_path: Path) -> None:
    with served(tmp_path) as (gw, address), triton.InferenceServerClient(address) as client:
        assert client.is_server_live()
        assert not client.is_server_ready()  # forecaster and generator have no worker
        assert client.is_model_ready(CLASSIFIER) and client.is_model_ready(CLASSIFIER, "1")
        assert not client.is_model_ready(FORECASTER)
        server = client.get_server_metadata()
        assert server.name == "axon"
        assert {"binary_tensor_data", "statistics", "model_repository"} <= set(server.extensions)
        meta = client.get_model_metadata(CLASSIFIER)
        assert meta.versions == ["1"] and meta.platform == "onnxruntime_onnx"
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("image", "FP32", [-1, 1, 2, 2])
        ]
        assert [t.name for t in meta.outputs] == ["logits", "probabilities"]
        client.infer(CLASSIFIER, [infer_input("image", IMAGES, "FP32")])
        stats = client.get_inference_statistics(CLASSIFIER).model_stats
        assert [(s.name, s.version) for s in stats] == [(CLASSIFIER, "1")]
        every = client.get_inference_statistics().model_stats
        assert {s.name for s in every} == {CLASSIFIER, FORECASTER, GENERATOR}
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index[CLASSIFIER].state == "READY" and index[CLASSIFIER].reason == ""
        assert index[FORECASTER].state == "UNAVAILABLE"
        assert "no live worker" in index[FORECASTER].reason
        # REST answers the same index.
        rest = gw.client.post("/v2/repository/index").json()
        assert {(m["name"], m["state"]) for m in rest} == {
            (m.name, m.state) for m in index.values()
        }
        ready = gw.client.post("/v2/repository/index", json={"ready": True}).json()
        assert [m["name"] for m in ready] == [CLASSIFIER]
        assert gw.client.post("/v2/repository/index", json={"ready": 1}).status_code == 400


def test_infer_on_all_three_models_equals_the_json_path(tmp_path: Path) -> None:
    models = (CLASSIFIER, FORECASTER, GENERATOR)
    with (
        served(tmp_path, serve=models) as (gw, address),
        triton.InferenceServerClient(address) as client,
    ):
        expected = rest_outputs(gw, CLASSIFIER, {"inputs": [tensor_json("image", IMAGES, "FP32")]})
        result = client.infer(
            CLASSIFIER,
            [infer_input("image", IMAGES, "FP32")],
            outputs=[triton.InferRequestedOutput("probabilities")],
            request_id="g-1",
        )
        response = result.get_response()
        assert response.id == "g-1" and response.model_version == "1"
        assert [o.name for o in response.outputs] == ["probabilities"]
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected["probabilities"], rtol=0, atol=1e-6
        )

        history = np.linspace(0, 1, 2 * 6, dtype=np.float32).reshape(2, 6)
        expected = rest_outputs(
            gw, FORECASTER, {"inputs": [tensor_json("history", history, "FP32")]}
        )
        forecast = client.infer(FORECASTER, [infer_input("history", history, "FP32")])
        np.testing.assert_allclose(forecast.as_numpy("forecast"), expected["forecast"], atol=1e-6)

        latent = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
        labels = np.array([0, 2], np.int64)
        doc = {"inputs": [tensor_json("latent", latent, "FP32"),
                          tensor_json("label", labels, "INT64")]}  # fmt: skip
        expected = rest_outputs(gw, GENERATOR, doc)
        image = client.infer(
            GENERATOR,
            [infer_input("latent", latent, "FP32"), infer_input("label", labels, "INT64")],
        )
        np.testing.assert_allclose(image.as_numpy("image"), expected["image"], atol=1e-6)
        # No tensors, only parameters (Axon's generator form).
        seeded = {"seed": 3, "count": 2, "label": 1}
        expected = rest_outputs(gw, GENERATOR, {"inputs": [], "parameters": seeded})
        drawn = client.infer(GENERATOR, [], parameters=seeded)
        np.testing.assert_allclose(drawn.as_numpy("image"), expected["image"], atol=1e-6)


def test_typed_contents_equal_raw_contents(tmp_path: Path) -> None:
    """``contents.fp32_contents`` (what many gRPC clients send) and
    ``raw_input_contents`` (tritonclient) give the same answer."""
    with served(tmp_path) as (_gw, address), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        typed = pb.ModelInferRequest(model_name=CLASSIFIER)
        tensor = typed.inputs.add(name="image", datatype="FP32", shape=IMAGES.shape)
        tensor.contents.fp32_contents.extend(IMAGES.ravel().tolist())
        raw = pb.ModelInferRequest(model_name=CLASSIFIER, raw_input_contents=[IMAGES.tobytes()])
        raw.inputs.add(name="image", datatype="FP32", shape=IMAGES.shape)
        answers = [stub.ModelInfer(request) for request in (typed, raw)]
        for answer in answers:
            assert [o.name for o in answer.outputs] == ["logits", "probabilities"]
            assert list(answer.outputs[1].shape) == [3, 3]
        assert answers[0].raw_output_contents == answers[1].raw_output_contents
        probabilities = np.frombuffer(answers[0].raw_output_contents[1], np.float32)
        np.testing.assert_allclose(probabilities.reshape(3, 3).sum(1), 1, atol=1e-5)


def bad_request(**fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=CLASSIFIER, **fields)
    return request


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 3]),
         "axis 3 must be 2"),
        (lambda r: r.inputs.add(name="image", datatype="BYTES", shape=[1, 1, 2, 2]),
         "BYTES (string) tensors are not supported"),
        (lambda r: r.inputs.add(name="image", datatype="FP17", shape=[1]), "'FP17' is not one of"),
        (lambda r: r.inputs.add(name="", datatype="FP32", shape=[1]), "name: required"),
        (lambda r: r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, -2]),
         "non-negative integers"),
        (lambda r: r.inputs.add(name="image", datatype="FP16", shape=[1, 1, 2, 2]),
         "FP16 has no typed contents field"),
        (lambda r: r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2]).contents
         .fp32_contents.extend([1.0] * 3), "3 values, shape [1, 1, 2, 2] needs 4"),
        (lambda r: (r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2]),
                    r.raw_input_contents.append(b"\0" * 15)), "15 bytes, shape [1, 1, 2, 2]"),
        (lambda r: (r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2]),
                    r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2]),
                    r.raw_input_contents.append(b"\0" * 16)), "2 inputs"),
        (lambda r: (r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2])
                    .contents.fp32_contents.extend([0.0] * 4),
                    r.raw_input_contents.append(b"\0" * 16)), "uses raw_input_contents"),
        (lambda r: (r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2])
                    .contents.fp32_contents.extend([0.0] * 4),
                    r.outputs.add(name="nope")), "'nope' is not an output"),
        (lambda r: (r.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2])
                    .contents.fp32_contents.extend([0.0] * 4), r.parameters["timeout_ms"]),
         "no value set"),
        (lambda r: r.inputs.add(name="latent", datatype="FP32", shape=[1, 4]).contents
         .fp32_contents.extend([0.0] * 4), "latent"),
    ],
    ids=["shape", "bytes", "datatype", "no-name", "negative-shape", "fp16-typed", "count",
         "raw-size", "raw-count", "raw-and-typed", "unknown-output", "empty-parameter",
         "wrong-input"],
)  # fmt: skip
def test_bad_inputs_are_invalid_argument_naming_the_field(
    tmp_path: Path, build: Any, message: str
) -> None:
    with served(tmp_path) as (_gw, address), grpc.insecure_channel(address) as channel:
        request = bad_request()
        build(request)
        code, details = status_of(
            lambda: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert message in details
    assert "Traceback" not in details


def test_integer_contents_out_of_range_are_refused(tmp_path: Path) -> None:
    with (
        served(tmp_path, serve=(GENERATOR,)) as (_gw, address),
        grpc.insecure_channel(address) as channel,
    ):
        request = pb.ModelInferRequest(model_name=GENERATOR)
        latent = request.inputs.add(name="latent", datatype="FP32", shape=[1, 4])
        latent.contents.fp32_contents.extend([0.5] * 4)
        label = request.inputs.add(name="label", datatype="INT64", shape=[1])
        label.contents.int64_contents.append(7)  # 3 classes
        code, details = status_of(
            lambda: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "label" in details


def test_unknown_model_and_version_are_not_found(tmp_path: Path) -> None:
    with served(tmp_path) as (_gw, address), triton.InferenceServerClient(address) as client:
        image = infer_input("image", IMAGES, "FP32")
        for call in (
            lambda: client.infer("no-such-model", [image]),
            lambda: client.infer(CLASSIFIER, [image], model_version="9"),
            lambda: client.get_model_metadata("no-such-model"),
            lambda: client.is_model_ready("no-such-model"),
        ):
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert caught.value.status() == "StatusCode.NOT_FOUND", caught.value


def test_no_worker_is_unavailable(tmp_path: Path) -> None:
    env = {"AXON_NO_WORKER_WAIT_MS": "0"}
    with served(tmp_path, env) as (_gw, address), triton.InferenceServerClient(address) as client:
        history = np.zeros((1, 6), np.float32)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(FORECASTER, [infer_input("history", history, "FP32")])
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "no live worker" in caught.value.message()


def test_the_grpc_deadline_is_the_request_deadline(tmp_path: Path) -> None:
    """A worker that never answers: the client's deadline ends the request (and the
    entry stays queued, to expire on its own as with REST)."""
    with (
        served(tmp_path, serve=()) as (gw, address),
        triton.InferenceServerClient(address) as client,
    ):
        gw.register(CLASSIFIER)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(CLASSIFIER, [infer_input("image", IMAGES, "FP32")], client_timeout=0.3)
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        # A timeout_ms parameter shorter than the deadline: the gateway's own 504.
        with pytest.raises(InferenceServerException) as ours:
            client.infer(
                CLASSIFIER,
                [infer_input("image", IMAGES, "FP32")],
                parameters={"timeout_ms": 50},
                client_timeout=30,
            )
        assert ours.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        assert "deadline of 50 ms" in ours.value.message()
        assert gw.queue.backlog(CLASSIFIER, 1) == 2


def test_backlog_full_is_resource_exhausted_with_retry_after(tmp_path: Path) -> None:
    env = {"AXON_BACKLOG_LIMIT": "1", "AXON_RETRY_AFTER_S": "4"}
    with (
        served(tmp_path, env, serve=()) as (gw, address),
        grpc.insecure_channel(address) as channel,
    ):
        gw.register(CLASSIFIER)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = raw_images()
        request.parameters["timeout_ms"].int64_param = 30
        code, _ = status_of(lambda: stub.ModelInfer(request))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED  # queued, never answered
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
        error: Any = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1 requests queued (limit 1)" in error.details()
        assert ("retry-after", "4") in tuple(error.trailing_metadata())
        metrics = gw.client.get("/metrics").text
    assert f'axon_rejected_total{{model="{CLASSIFIER}",reason="backlog"}} 1.0' in metrics


def test_a_message_over_the_body_limit_is_resource_exhausted(tmp_path: Path) -> None:
    with (
        served(tmp_path, {"AXON_MAX_BODY_BYTES": "4096"}) as (_gw, address),
        grpc.insecure_channel(address) as channel,
    ):
        big = np.zeros((300, 1, 2, 2), np.float32)
        request = pb.ModelInferRequest(model_name=CLASSIFIER, raw_input_contents=[big.tobytes()])
        request.inputs.add(name="image", datatype="FP32", shape=big.shape)
        code, _ = status_of(lambda: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_api_keys_via_metadata_and_open_health(tmp_path: Path) -> None:
    env = {"AXON_API_KEYS": "key-one-1,key-two-22"}
    with served(tmp_path, env) as (_gw, address):
        with triton.InferenceServerClient(address) as anonymous:
            assert anonymous.is_server_live()  # health RPCs stay open, as REST's
            with pytest.raises(InferenceServerException) as caught:
                anonymous.get_model_metadata(CLASSIFIER)
            assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as wrong:
                anonymous.infer(
                    CLASSIFIER,
                    [infer_input("image", IMAGES, "FP32")],
                    headers={"authorization": "Bearer nope"},
                )
            assert wrong.value.status() == "StatusCode.UNAUTHENTICATED"
            for header in ({"authorization": "Bearer key-two-22"}, {"x-api-key": "key-one-1"}):
                result = anonymous.infer(
                    CLASSIFIER, [infer_input("image", IMAGES, "FP32")], headers=header
                )
                assert result.as_numpy("logits").shape == (3, 3)
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            code, _ = status_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="x")))
            assert code == grpc.StatusCode.NOT_FOUND


def test_health_follows_the_queue(tmp_path: Path) -> None:
    with served(tmp_path) as (gw, address), grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        gw.queue.down = True
        down = gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(1))
        assert down.status_code == 503  # the gateway saw the queue fail
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        gw.queue.down = False
        gw.refresh()
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )


def test_request_ids_metrics_and_unimplemented(tmp_path: Path) -> None:
    with served(tmp_path) as (gw, address), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = raw_images()
        _, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "grpc-req-1"),))
        assert ("x-request-id", "grpc-req-1") in tuple(call.trailing_metadata())
        code, _ = status_of(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="nope")))
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = status_of(
            lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="x"))
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED
        metrics = gw.client.get("/metrics").text
    labels = f'code="200",endpoint="infer",model="{CLASSIFIER}",protocol="grpc",version="1"'
    assert f"axon_requests_total{{{labels}}} 1.0" in metrics
    assert 'axon_requests_total{code="404",endpoint="infer",model="",protocol="grpc"' in metrics


def test_a_taken_grpc_port_stops_the_gateway_at_start(tmp_path: Path) -> None:
    with served(tmp_path) as (_gw, address):
        port = address.rsplit(":", 1)[1]
        taken = pytest.raises(SettingsError, match=f"AXON_GRPC_PORT={port}: cannot listen")
        with taken, stack(tmp_path / "second", {"AXON_GRPC_PORT": port}):
            pass


def test_concurrent_rpcs_over_the_cap_are_resource_exhausted(tmp_path: Path) -> None:
    """``AXON_MAX_CONNECTIONS`` bounds the RPCs running at once, as it bounds HTTP
    connections."""
    env = {"AXON_MAX_CONNECTIONS": "2"}
    with (
        served(tmp_path, env, serve=()) as (gw, address),
        grpc.insecure_channel(address) as channel,
    ):
        gw.register(CLASSIFIER)  # never answers: each RPC holds its slot until its deadline
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = raw_images()
        holding = [stub.ModelInfer.future(request, timeout=3) for _ in range(2)]
        _wait_until(lambda: gw.queue.backlog(CLASSIFIER, 1) == 2)
        code, details = status_of(lambda: stub.ModelInfer(request, timeout=3))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        for future in holding:
            future.cancel()


def test_grpc_requests_share_the_inflight_byte_budget(tmp_path: Path) -> None:
    """A request held at the gateway reserves its bytes; the next one that does not fit
    is UNAVAILABLE with retry-after, and a cancelled RPC gives its bytes back."""
    env = {"AXON_MAX_INFLIGHT_BYTES": "100", "AXON_RETRY_AFTER_S": "2"}
    with (
        served(tmp_path, env, serve=()) as (gw, address),
        grpc.insecure_channel(address) as channel,
    ):
        gw.register(CLASSIFIER)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = raw_images()
        held = stub.ModelInfer.future(request, timeout=5)
        _wait_until(lambda: gw.queue.backlog(CLASSIFIER, 1) == 1)
        state = gw.client.app.state.gateway  # type: ignore[attr-defined]
        assert state.inflight.reserved == request.ByteSize()
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=5)
        error: Any = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "AXON_MAX_INFLIGHT_BYTES" in error.details()
        assert ("retry-after", "2") in tuple(error.trailing_metadata())
        held.cancel()
        _wait_until(lambda: state.inflight.reserved == 0)


def test_a_malformed_message_is_refused_and_the_server_goes_on(tmp_path: Path) -> None:
    with served(tmp_path) as (_gw, address), grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        code, details = status_of(lambda: raw(b"\xff\xff\xff\xff not protobuf"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "request: not a valid inference.ModelInferRequest protobuf message"
        huge = pb.ModelInferRequest(model_name=CLASSIFIER, raw_input_contents=[b""])
        huge.inputs.add(name="image", datatype="FP32", shape=[2**62, 2**62, 1, 1])
        code, details = status_of(
            lambda: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(huge)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        with triton.InferenceServerClient(address) as client:
            assert client.infer(CLASSIFIER, [infer_input("image", IMAGES, "FP32")]).as_numpy(
                "logits"
            ).shape == (3, 3)


def _wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` (a real server works concurrently with the test)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_tritonclients_timeout_parameter_is_the_deadline_in_microseconds(tmp_path: Path) -> None:
    """``infer(timeout=µs)`` of both tritonclients sends Triton's ``timeout`` parameter:
    the gateway's own deadline, over gRPC and REST."""
    with served(tmp_path, serve=()) as (gw, address):
        gw.register(CLASSIFIER)
        with (
            triton.InferenceServerClient(address) as client,
            pytest.raises(InferenceServerException) as over_grpc,
        ):
            client.infer(CLASSIFIER, [infer_input("image", IMAGES, "FP32")], timeout=40_000)
        assert "deadline of 40 ms" in over_grpc.value.message()
        late = gw.client.post(
            f"/v2/models/{CLASSIFIER}/infer",
            json={"inputs": [tensor_json("image", IMAGES, "FP32")], "parameters": {"timeout": 1}},
        )
        assert late.status_code == 504 and "deadline of 1 ms" in late.json()["error"]
        bad = gw.client.post(
            f"/v2/models/{CLASSIFIER}/infer",
            json={"inputs": [tensor_json("image", IMAGES, "FP32")], "parameters": {"timeout": 0}},
        )
        assert bad.status_code == 400 and "parameters.timeout" in bad.json()["error"]


def test_model_config_for_triton_tools_over_both_protocols(tmp_path: Path) -> None:
    """perf_analyzer and other Triton tools read the model configuration."""
    with (
        served(tmp_path, {"AXON_MAX_ROWS": "32"}, serve=(CLASSIFIER, GENERATOR)) as (
            gw,
            address,
        ),
        triton.InferenceServerClient(address) as client,
    ):
        config = client.get_model_config(CLASSIFIER).config
        assert (config.name, config.platform, config.max_batch_size) == (
            CLASSIFIER, "onnxruntime_onnx", 32,
        )  # fmt: skip
        assert [(t.name, list(t.dims)) for t in config.input] == [("image", [1, 2, 2])]
        assert config.input[0].data_type == triton.model_config_pb2.TYPE_FP32
        assert [t.name for t in config.output] == ["logits", "probabilities"]
        label = next(
            t for t in client.get_model_config(GENERATOR).config.input if t.name == "label"
        )
        assert list(label.dims) == [1] and list(label.reshape.shape) == []
        assert label.data_type == triton.model_config_pb2.TYPE_INT64
        rest = gw.client.get(f"/v2/models/{CLASSIFIER}/versions/1/config").json()
        assert rest["max_batch_size"] == 32 and rest["input"][0]["dims"] == [1, 2, 2]
        assert rest["input"][0]["data_type"] == "TYPE_FP32"
        assert gw.client.get("/v2/models/nope/config").status_code == 404


def test_a_stop_signal_ends_new_grpc_calls_and_lets_running_ones_finish(tmp_path: Path) -> None:
    """``begin_drain`` (what SIGTERM calls, before uvicorn drains HTTP): new RPCs are
    refused at once, the one in flight still gets its answer, HTTP goes on serving."""
    import asyncio

    from services.gateway.app import begin_drain
    from tests.support.inprocess import OnnxHandler

    with served(tmp_path, serve=()) as (gw, address), grpc.insecure_channel(address) as channel:
        compute = OnnxHandler(gw.repository.load(CLASSIFIER))

        async def slow(entries: Any) -> Any:
            await asyncio.sleep(0.6)
            return await compute(entries)

        gw._on_loop(lambda: gw.queue.serve(gw.info(CLASSIFIER), slow))
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = raw_images()
        running = stub.ModelInfer.future(request, timeout=10)
        state = gw.client.app.state.gateway  # type: ignore[attr-defined]
        _wait_until(lambda: state.inflight.reserved > 0)
        begin_drain(gw.client.app)  # type: ignore[arg-type]
        _wait_until(lambda: state.draining.is_set())
        code, _ = status_of(lambda: stub.ModelInfer(request, timeout=5))
        # Refused by the handler (UNAVAILABLE + retry-after) while the stop is pending; a
        # call that races gRPC core's own stop is cancelled by it (CANCELLED). Neither ran.
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        answer = running.result()
        assert list(answer.outputs[0].shape) == [3, 3]
        http = gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(1))
        assert http.status_code == 200
