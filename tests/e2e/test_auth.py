"""API keys on (a gateway started with AXON_API_KEYS; HTTP and gRPC) and off (the
``axon serve`` stack)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from services.runtime.redis_server import free_port
from tests.e2e.conftest import Stack
from tests.e2e.payloads import infer_image

KEYS = "first-key-0123,second-key-4567"


def test_keys_required_when_configured(
    stack: Stack, start_gateway: Callable[[Mapping[str, str]], str]
) -> None:
    url = start_gateway({"AXON_API_KEYS": KEYS})
    with httpx.Client(base_url=url, timeout=60) as http:
        missing = http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
        wrong = http.get("/v1/models", headers={"Authorization": "Bearer first-key-0124"})
        bearer = http.post(
            "/v2/models/digits-cnn/infer",
            json=infer_image(1),
            headers={"Authorization": "Bearer second-key-4567"},
        )
        header = http.get("/v2/models/digits-cnn", headers={"X-API-Key": "first-key-0123"})
        open_paths = [
            http.get(p).status_code for p in ("/v2/health/live", "/healthz/ready", "/metrics")
        ]
    assert missing.status_code == 401
    assert "API key" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert bearer.status_code == 200, bearer.text
    assert header.status_code == 200
    assert open_paths == [200, 200, 200]


def test_no_keys_needed_when_not_configured(stack: Stack) -> None:
    with stack.client() as http:
        assert http.post("/v2/models/digits-cnn/infer", json=infer_image(1)).status_code == 200


def test_grpc_keys_via_metadata_on_a_real_gateway(
    stack: Stack, start_gateway: Callable[[Mapping[str, str]], str]
) -> None:
    """The gateway process's gRPC port with keys on: UNAUTHENTICATED without one, served
    with ``authorization`` or ``x-api-key`` metadata; the health RPCs stay open."""
    port = free_port()
    start_gateway({"AXON_API_KEYS": KEYS, "AXON_GRPC_PORT": str(port)})
    image = np.asarray(infer_image(1)["inputs"][0]["data"], np.float32).reshape(1, 1, 8, 8)
    tensor = triton_grpc.InferInput("image", [1, 1, 8, 8], "FP32")
    tensor.set_data_from_numpy(image)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as missing:
            client.infer("digits-cnn", [tensor])
        assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
        assert "API key" in missing.value.message()
        for header in ({"authorization": "Bearer second-key-4567"}, {"x-api-key": KEYS[:14]}):
            result = client.infer("digits-cnn", [tensor], headers=header)
            assert result.as_numpy("probabilities").shape == (1, 10)
