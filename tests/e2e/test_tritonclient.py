"""Stock ``tritonclient`` clients with their defaults against ``axon serve``:
``tritonclient.http`` (binary inputs, outputs requested as binary data) and
``tritonclient.grpc`` (raw tensor contents) on the gateway's gRPC port: metadata,
readiness, inference on every model, statistics and the repository index; each result
equals what the JSON path answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import MODELS, SPARE, Stack
from tests.e2e.payloads import history, images


@pytest.fixture
def client(stack: Stack) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=stack.url.removeprefix("http://")) as tc:
        yield tc


def json_outputs(stack: Stack, model: str, doc: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The same request through the JSON path, its outputs as arrays."""
    with stack.client() as http:
        response = http.post(f"/v2/models/{model}/infer", json=doc)
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.asarray(out["data"], np.float32).reshape(out["shape"])
        for out in response.json()["outputs"]
    }


def tensor_json(name: str, array: np.ndarray[Any, Any], datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "data": array.ravel().tolist()}  # fmt: skip


def infer_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # default: binary_data=True
    return tensor


def test_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    server = client.get_server_metadata()
    assert server["name"] == "axon"
    assert {"binary_tensor_data", "statistics"} <= set(server["extensions"])
    for model in MODELS:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, "1")
        meta = client.get_model_metadata(model)
        assert meta["name"] == model and meta["versions"] == ["1"]


def test_classifier_with_defaults_equals_json(
    client: triton.InferenceServerClient, stack: Stack
) -> None:
    pixels = np.asarray(images(5, seed=11), np.float32)
    expected = json_outputs(stack, "digits-cnn", {"inputs": [tensor_json("image", pixels, "FP32")]})
    tensor = infer_input("image", pixels, "FP32")
    # Outputs requested one by one (binary_data=True each) …
    chosen = client.infer(
        "digits-cnn",
        [tensor],
        outputs=[
            triton.InferRequestedOutput("probabilities"),
            triton.InferRequestedOutput("logits"),
        ],
        request_id="tc-1",
    )
    assert chosen.get_response()["id"] == "tc-1"
    assert [o["name"] for o in chosen.get_response()["outputs"]] == ["probabilities", "logits"]
    # … or none named: the client asks for all with binary_data_output.
    everything = client.infer("digits-cnn", [tensor], model_version="1")
    for result in (chosen, everything):
        for name in ("logits", "probabilities"):
            got = result.as_numpy(name)
            assert got.dtype == np.float32 and got.shape == expected[name].shape
            np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-6)
            assert "binary_data_size" in result.get_output(name)["parameters"]


def test_forecaster_and_generator_with_defaults_equal_json(
    client: triton.InferenceServerClient, stack: Stack
) -> None:
    histories = np.asarray([history(12), history(20)[-12:]], np.float32)
    expected = json_outputs(
        stack, "sunspots-lstm", {"inputs": [tensor_json("history", histories, "FP32")]}
    )
    forecast = client.infer("sunspots-lstm", [infer_input("history", histories, "FP32")])
    np.testing.assert_allclose(forecast.as_numpy("forecast"), expected["forecast"], atol=1e-6)

    latent = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    labels = np.array([1, 4, 9], np.int64)
    doc = {"inputs": [tensor_json("latent", latent, "FP32"), tensor_json("label", labels, "INT64")]}
    expected = json_outputs(stack, "digits-gan", doc)
    generated = client.infer(
        "digits-gan",
        [infer_input("latent", latent, "FP32"), infer_input("label", labels, "INT64")],
        outputs=[triton.InferRequestedOutput("image")],
    )
    assert generated.as_numpy("image").shape == (3, 1, 8, 8)
    np.testing.assert_allclose(generated.as_numpy("image"), expected["image"], atol=1e-6)

    # No tensors, only parameters (Axon's generator form), still answered in binary.
    seeded = {"seed": 3, "count": 2, "label": 5}
    expected = json_outputs(stack, "digits-gan", {"inputs": [], "parameters": seeded})
    result = client.infer("digits-gan", [], parameters=seeded)
    np.testing.assert_allclose(result.as_numpy("image"), expected["image"], atol=1e-6)


def test_statistics_and_errors(client: triton.InferenceServerClient) -> None:
    stats = client.get_inference_statistics("digits-cnn")
    assert stats["model_stats"][0]["name"] == "digits-cnn"
    assert {s["name"] for s in client.get_inference_statistics()["model_stats"]} >= set(MODELS)
    wrong = np.zeros((1, 1, 8, 7), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits-cnn", [infer_input("image", wrong, "FP32")])
    assert caught.value.status() == "400"
    assert "axis 3 must be 8" in caught.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.infer("no-such-model", [infer_input("image", wrong, "FP32")])
    assert missing.value.status() == "404"


def test_repository_index_over_http(client: triton.InferenceServerClient) -> None:
    assert client.get_model_config("digits-cnn")["input"][0]["dims"] == [1, 8, 8]
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert set(index) >= set(MODELS)
    assert all(index[m]["state"] == "READY" and index[m]["version"] == "1" for m in MODELS)
    assert index[SPARE]["state"] == "UNAVAILABLE"


# --------------------------------------------------------------------------- gRPC


@pytest.fixture
def grpc_client(stack: Stack) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(url=stack.grpc) as tc:
        yield tc


def grpc_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_grpc_metadata_readiness_statistics_and_index(
    grpc_client: triton_grpc.InferenceServerClient, stack: Stack
) -> None:
    assert grpc_client.is_server_live()
    # The repository's spare model has no worker: not ready, as REST says.
    with stack.client() as http:
        rest_ready = http.get("/v2/health/ready").status_code == 200
    assert grpc_client.is_server_ready() is rest_ready is False
    server = grpc_client.get_server_metadata()
    assert server.name == "axon" and "model_repository" in server.extensions
    for model in MODELS:
        assert grpc_client.is_model_ready(model) and grpc_client.is_model_ready(model, "1")
        meta = grpc_client.get_model_metadata(model)
        assert meta.name == model and list(meta.versions) == ["1"]
    stats = grpc_client.get_inference_statistics("digits-cnn").model_stats
    assert [s.name for s in stats] == ["digits-cnn"]
    index = {m.name: m for m in grpc_client.get_model_repository_index().models}
    assert all(index[m].state == "READY" for m in MODELS)
    assert index[SPARE].state == "UNAVAILABLE" and "no live worker" in index[SPARE].reason


def test_grpc_infer_on_every_model_equals_json(
    grpc_client: triton_grpc.InferenceServerClient, stack: Stack
) -> None:
    pixels = np.asarray(images(4, seed=12), np.float32)
    expected = json_outputs(stack, "digits-cnn", {"inputs": [tensor_json("image", pixels, "FP32")]})
    result = grpc_client.infer("digits-cnn", [grpc_input("image", pixels, "FP32")])
    for name in ("logits", "probabilities"):
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=0, atol=1e-6)

    histories = np.asarray([history(12), history(16)[-12:]], np.float32)
    expected = json_outputs(
        stack, "sunspots-lstm", {"inputs": [tensor_json("history", histories, "FP32")]}
    )
    forecast = grpc_client.infer("sunspots-lstm", [grpc_input("history", histories, "FP32")])
    np.testing.assert_allclose(forecast.as_numpy("forecast"), expected["forecast"], atol=1e-6)

    latent = np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)
    labels = np.array([3, 7], np.int64)
    doc = {"inputs": [tensor_json("latent", latent, "FP32"), tensor_json("label", labels, "INT64")]}
    expected = json_outputs(stack, "digits-gan", doc)
    generated = grpc_client.infer(
        "digits-gan", [grpc_input("latent", latent, "FP32"), grpc_input("label", labels, "INT64")]
    )
    np.testing.assert_allclose(generated.as_numpy("image"), expected["image"], atol=1e-6)


def test_grpc_errors_are_status_codes(grpc_client: triton_grpc.InferenceServerClient) -> None:
    wrong = np.zeros((1, 1, 8, 7), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer("digits-cnn", [grpc_input("image", wrong, "FP32")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "axis 3 must be 8" in caught.value.message()
    with pytest.raises(InferenceServerException) as missing:
        grpc_client.infer("no-such-model", [grpc_input("image", wrong, "FP32")])
    assert missing.value.status() == "StatusCode.NOT_FOUND"


def test_the_readme_tritonclient_example_runs(stack: Stack) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Standard OIP clients", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None, "README: no python block in the Standard OIP clients section"
    code = example.group(1)
    assert '"127.0.0.1:8000"' in code and '"127.0.0.1:8001"' in code
    code = code.replace('"127.0.0.1:8000"', repr(stack.url.removeprefix("http://")))
    code = code.replace('"127.0.0.1:8001"', repr(stack.grpc))
    code = code.replace("(64, 1, 8, 8)", "(32, 1, 8, 8)")  # the e2e stack's AXON_MAX_ROWS
    exec(compile(code, "README.md (Standard OIP clients)", "exec"), {})
