"""Every Open Inference Protocol v2 endpoint of the gateway, over HTTP, against
``axon serve`` (Redis + three BentoML services + gateway)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import MODELS, SPARE, Stack
from tests.e2e.payloads import history, infer_image
from tests.support.redis import wait_for


def test_server_metadata_live_ready(stack: Stack) -> None:
    with stack.client() as http:
        meta = http.get("/v2")
        assert meta.status_code == 200
        assert meta.json()["name"] == "axon"
        assert "statistics" in meta.json()["extensions"]
        assert http.get("/v2/health/live").status_code == 200
        # OIP server readiness needs every known model ready: the spare model (in the
        # repository, no worker) keeps it false; the gateway itself is ready.
        spare_ready = http.get(f"/v2/models/{SPARE}/ready").status_code
        ready = http.get("/v2/health/ready")
        assert (spare_ready, ready.status_code, ready.json()) == (503, 503, {"ready": False})
        assert http.get("/healthz/ready").json() == {"ready": True}


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_and_ready(stack: Stack, model: str) -> None:
    with stack.client() as http:
        meta = http.get(f"/v2/models/{model}").json()
        assert meta["name"] == model
        assert meta["versions"] == ["1"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert all(t["shape"][0] == -1 for t in meta["inputs"] + meta["outputs"])
        assert http.get(f"/v2/models/{model}/versions/1").json()["inputs"] == meta["inputs"]
        for path in (f"/v2/models/{model}/ready", f"/v2/models/{model}/versions/1/ready"):
            ready = http.get(path)
            assert ready.status_code == 200
            assert ready.json()["ready"] is True


def test_infer_nested_and_flat_data_agree(stack: Stack) -> None:
    with stack.client() as http:
        nested = http.post("/v2/models/digits-cnn/infer", json=infer_image(3))
        flat = http.post("/v2/models/digits-cnn/versions/1/infer", json=infer_image(3, flat=True))
    assert nested.status_code == 200, nested.text
    assert flat.status_code == 200, flat.text
    body = nested.json()
    assert body["model_name"] == "digits-cnn"
    assert body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"logits", "probabilities"}
    probs = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert flat.json()["outputs"] == body["outputs"]


def test_infer_output_selection_and_ids(stack: Stack) -> None:
    with stack.client(**{"X-Request-ID": "client-id-42"}) as http:
        response = http.post(
            "/v2/models/digits-cnn/infer",
            json=infer_image(1, id="oip-7", outputs=[{"name": "logits"}]),
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-id-42"
    assert response.json()["id"] == "oip-7"
    assert [o["name"] for o in response.json()["outputs"]] == ["logits"]
    with stack.client() as http:
        generated = http.get("/v2/health/live").headers["x-request-id"]
    assert len(generated) >= 16


def test_infer_forecaster_and_generator_tensors(stack: Stack) -> None:
    tensor = {
        "name": "history",
        "shape": [2, 12],
        "datatype": "FP32",
        "data": [history(), history()],
    }
    with stack.client() as http:
        forecast = http.post("/v2/models/sunspots-lstm/infer", json={"inputs": [tensor]})
        generated = http.post(
            "/v2/models/digits-gan/infer",
            json={"inputs": [], "parameters": {"seed": 3, "count": 2, "label": 5}},
        )
    assert forecast.status_code == 200, forecast.text
    out = forecast.json()["outputs"][0]
    assert out["name"] == "forecast"
    assert out["shape"][0] == 2
    assert generated.status_code == 200, generated.text
    assert generated.json()["outputs"][0]["shape"] == [2, 1, 8, 8]


def test_statistics_sum_worker_counters(stack: Stack) -> None:
    with stack.client() as http:
        before = http.get("/v2/models/digits-cnn/stats").json()["model_stats"][0]
        assert http.post("/v2/models/digits-cnn/infer", json=infer_image(4)).status_code == 200

        def counted() -> dict[str, object] | None:
            stats = http.get("/v2/models/digits-cnn/versions/1/stats").json()["model_stats"][0]
            return stats if stats["inference_count"] >= before["inference_count"] + 4 else None

        stats = wait_for(counted, timeout_s=30, what="worker heartbeat counting the rows")
        all_models = http.get("/v2/models/stats").json()["model_stats"]
    assert stats["name"] == "digits-cnn"
    assert stats["version"] == "1"
    assert stats["execution_count"] >= 1
    assert stats["inference_stats"]["success"]["count"] >= 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    assert {s["name"] for s in all_models} >= {*MODELS, SPARE}


def test_known_model_without_worker_is_503(stack: Stack) -> None:
    with stack.client() as http:
        assert http.get(f"/v2/models/{SPARE}").status_code == 200
        ready = http.get(f"/v2/models/{SPARE}/ready")
        infer = http.post(f"/v2/models/{SPARE}/infer", json=infer_image(1))
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        still_fine = http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert infer.status_code == 503
    assert "no live worker" in infer.json()["error"]
    assert listed[SPARE]["versions"][0]["ready"] is False
    assert still_fine.status_code == 200


def test_metrics_and_docs(stack: Stack) -> None:
    with stack.client() as http:
        http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
        http.post("/v2/models/nope/infer", json=infer_image(1))
        text = http.get("/metrics").text
        openapi = http.get("/openapi.json").json()
        assert http.get("/docs").status_code == 200
    assert (
        'axon_requests_total{code="200",endpoint="infer",model="digits-cnn",'
        'protocol="http",version="1"}'
    ) in text
    assert 'axon_rejected_total{model="",reason="not_found"}' in text
    for name in (
        "axon_request_duration_seconds_bucket",
        "axon_queue_wait_seconds_bucket",
        "axon_inflight_requests",
    ):
        assert name in text
    assert "/v2/models/{model}/infer" in openapi["paths"]
    assert "/v1/models/{model}/classify" in openapi["paths"]
