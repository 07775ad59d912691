"""The gateway's behaviour in-process (real app and lifespan on the memory queue, real
ONNX Runtime workers): OIP endpoints, task endpoints, routing to versions, error
mapping, deadlines, backpressure, an unreachable queue, auth, request ids and metrics.
What needs real processes (uvicorn's protocol, Redis faults, supervision) stays in
tests/e2e, tests/chaos and tests/security."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, infer_image, stack
from tests.support.onnx_models import write_poison_classifier

IMAGE = f"/v2/models/{CLASSIFIER}/infer"


def test_server_metadata_health_and_model_metadata(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        http = gw.client
        meta = http.get("/v2").json()
        assert meta["name"] == "axon" and "statistics" in meta["extensions"]
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/healthz/ready").status_code == 200
        # Forecaster and generator are known (repository) but not served.
        assert http.get("/v2/health/ready").status_code == 503
        model = http.get(f"/v2/models/{CLASSIFIER}").json()
        assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
        assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 2, 2]}]
        assert model["parameters"]["labels"] == ["a", "b", "c"]
        assert http.get(f"/v2/models/{CLASSIFIER}/ready").json()["ready"] is True
        assert http.get(f"/v2/models/{FORECASTER}/ready").status_code == 503
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert listed[CLASSIFIER]["versions"] == [{"version": 1, "ready": True, "workers": 1}]
        assert listed[GENERATOR]["versions"][0]["ready"] is False


def test_infer_nested_and_flat_agree_with_ids_outputs_and_versions(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        http = gw.client
        nested = http.post(IMAGE, json=infer_image(3)).json()
        flat = http.post(IMAGE, json=infer_image(3, flat=True)).json()
        assert nested == flat
        assert nested["model_name"] == CLASSIFIER and nested["model_version"] == "1"
        probabilities = next(o for o in nested["outputs"] if o["name"] == "probabilities")
        assert probabilities["shape"] == [3, 3]
        np.testing.assert_allclose(np.asarray(probabilities["data"]).reshape(3, 3).sum(1), 1, 1e-5)
        chosen = http.post(
            f"/v2/models/{CLASSIFIER}/versions/1/infer",
            json=infer_image(1, id="req-7", outputs=[{"name": "logits"}]),
        ).json()
        assert chosen["id"] == "req-7" and [o["name"] for o in chosen["outputs"]] == ["logits"]


def test_unversioned_requests_go_to_the_highest_ready_version(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        write_poison_classifier(tmp_path / "models", CLASSIFIER, version=2)
        gw.serve(CLASSIFIER)  # serves the latest: version 2
        # Version 2 appeared after start: unknown to the registry until a worker says so.
        assert gw.client.post(IMAGE, json=infer_image(1)).json()["model_version"] == "2"
        v1 = gw.client.post(f"/v2/models/{CLASSIFIER}/versions/1/infer", json=infer_image(1))
        assert v1.status_code == 503 and "no live worker" in v1.json()["error"]


def test_task_endpoints_classify_forecast_generate(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER, FORECASTER, GENERATOR]) as gw:
        http = gw.client
        pixels = [[[0.0, 16.0], [8.0, 4.0]]]
        by_array = http.post(
            f"/v1/models/{CLASSIFIER}/classify", json={"images": [pixels[0]], "top_k": 2}
        ).json()
        image = Image.fromarray(np.asarray(pixels[0]) * 255 / 16).convert("L")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        png = base64.b64encode(buffer.getvalue()).decode()
        by_png = http.post(f"/v1/models/{CLASSIFIER}/classify", json={"png": [png]}).json()
        top = by_array["predictions"][0]
        assert len(top["top_k"]) == 2 and top["label"] in ("a", "b", "c")
        assert by_png["predictions"][0]["label"] == top["label"]
        forecast = http.post(
            f"/v1/models/{FORECASTER}/forecast", json={"histories": [[1, 2, 3, 4], [4, 4, 4, 4]],
                                                       "horizon": 1}
        ).json()  # fmt: skip
        assert forecast["forecasts"] == [[2.5], [4.0]] and forecast["window"] == 4
        arrays = http.post(
            f"/v1/models/{GENERATOR}/generate",
            json={"count": 3, "seed": 5, "label": 1, "format": "array"},
        ).json()
        again = http.post(
            f"/v1/models/{GENERATOR}/generate",
            json={"count": 3, "seed": 5, "label": 1, "format": "array"},
        ).json()
        assert arrays["images"] == again["images"]  # same seed, same images
        assert np.asarray(arrays["images"]).shape == (3, 1, 2, 2) and arrays["label"] == 1
        pngs = http.post(f"/v1/models/{GENERATOR}/generate", json={"count": 2, "seed": 5}).json()
        assert len(pngs["images"]) == 2
        assert Image.open(io.BytesIO(base64.b64decode(pngs["images"][0]))).size == (2, 2)


def test_statistics_and_metrics(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        for _ in range(3):
            assert gw.client.post(IMAGE, json=infer_image(1)).status_code == 200
        stats = gw.client.get(f"/v2/models/{CLASSIFIER}/stats").json()["model_stats"]
        assert stats[0]["name"] == CLASSIFIER and stats[0]["axon"]["workers"] == 1
        metrics = gw.client.get("/metrics").text
        labels = f'code="200",endpoint="infer",model="{CLASSIFIER}",protocol="http",version="1"'
        assert f"axon_requests_total{{{labels}}} 3.0" in metrics


def test_request_ids_are_echoed_or_made(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        given = gw.client.post(IMAGE, json=infer_image(1), headers={"X-Request-ID": "abc-1"})
        assert given.headers["x-request-id"] == "abc-1"
        made = gw.client.post(IMAGE, json=infer_image(1), headers={"X-Request-ID": "bad id\t"})
        assert len(made.headers["x-request-id"]) == 32


def test_the_edge_layers_refusals_carry_the_request_id_and_are_counted(tmp_path: Path) -> None:
    """The edge layer (``middleware/edge.py``) answers 401 and 413 itself, through its
    request-id and metrics steps; a chunked body over the limit is refused while read."""
    env = {"AXON_API_KEYS": "key-one-1", "AXON_MAX_BODY_BYTES": "4096"}
    with stack(tmp_path, env, serve=[CLASSIFIER]) as gw:
        http = gw.client
        missing = http.post(IMAGE, json=infer_image(1), headers={"X-Request-ID": "r-401"})
        assert missing.status_code == 401 and missing.headers["x-request-id"] == "r-401"
        key = {"X-API-Key": "key-one-1"}
        big = http.post(IMAGE, content=b" " * 5000, headers={**key, "X-Request-ID": "r-413"})
        assert big.status_code == 413 and big.headers["x-request-id"] == "r-413"
        assert "AXON_MAX_BODY_BYTES" in big.json()["error"]

        def chunked() -> Iterator[bytes]:
            for _ in range(5):
                yield b" " * 1024

        streamed = http.post(IMAGE, content=chunked(), headers=key)
        assert streamed.status_code == 413 and len(streamed.headers["x-request-id"]) == 32
        ok = [http.post(IMAGE, json=infer_image(1), headers=key) for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200]
        made = {r.headers["x-request-id"] for r in [*ok, streamed]}
        assert len(made) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in made)
        metrics = http.get("/metrics").text
        unauthorized = 'axon_requests_total{code="401",endpoint="other",model="",protocol="http",'
        assert unauthorized in metrics
        counted = [line for line in metrics.splitlines() if line.startswith("axon_requests_total")]
        refused = sorted(line for line in counted if 'code="413"' in line)
        # From Content-Length, before any route ran; the chunked one inside the infer route.
        assert refused == [
            f'axon_requests_total{{code="413",endpoint="infer",model="{CLASSIFIER}",'
            'protocol="http",version="1"} 1.0',
            'axon_requests_total{code="413",endpoint="other",model="",protocol="http",'
            'version=""} 1.0',
        ]


def test_a_known_model_without_a_worker_is_503_after_the_wait(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_NO_WORKER_WAIT_MS": "0"}) as gw:
        response = gw.client.post(IMAGE, json=infer_image(1))
    assert response.status_code == 503
    assert "no live worker" in response.json()["error"]


def test_deadline_passes_while_the_worker_holds_the_request(tmp_path: Path) -> None:
    """A worker that never answers: 504 at the deadline (header, or OIP parameter),
    never a computed answer; the entry stays queued for the worker to expire."""
    with stack(tmp_path) as gw:
        gw.register(CLASSIFIER)
        late = gw.client.post(IMAGE, json=infer_image(1), headers={"X-Axon-Timeout-Ms": "50"})
        assert late.status_code == 504, late.text
        assert "deadline of 50 ms" in late.json()["error"]
        by_parameter = gw.client.post(IMAGE, json=infer_image(1, parameters={"timeout_ms": 30}))
        assert by_parameter.status_code == 504
        assert gw.queue.backlog(CLASSIFIER, 1) == 2


def test_backlog_full_is_429_with_retry_after(tmp_path: Path) -> None:
    env = {"AXON_BACKLOG_LIMIT": "2", "AXON_RETRY_AFTER_S": "3"}
    with stack(tmp_path, env) as gw:
        gw.register(CLASSIFIER)
        quick = {"X-Axon-Timeout-Ms": "20"}
        assert [gw.client.post(IMAGE, json=infer_image(1), headers=quick).status_code
                for _ in range(2)] == [504, 504]  # fmt: skip
        full = gw.client.post(IMAGE, json=infer_image(1), headers=quick)
        assert full.status_code == 429 and full.headers["retry-after"] == "3"
        assert "2 requests queued (limit 2)" in full.json()["error"]
        metrics = gw.client.get("/metrics").text
        assert f'axon_rejected_total{{model="{CLASSIFIER}",reason="backlog"}} 1.0' in metrics


def test_a_request_over_the_queued_bytes_limit_is_413(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_BACKLOG_BYTES": "100"}, serve=[CLASSIFIER]) as gw:
        response = gw.client.post(IMAGE, json=infer_image(8))
    assert response.status_code == 413 and "AXON_BACKLOG_BYTES" in response.json()["error"]


def test_an_unreachable_queue_is_503_and_recovers(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_REGISTRY_REFRESH_MS": "20"}, serve=[CLASSIFIER]) as gw:
        assert gw.client.post(IMAGE, json=infer_image(1)).status_code == 200
        gw.queue.down = True
        down = gw.client.post(IMAGE, json=infer_image(1))
        assert down.status_code == 503 and "unreachable" in down.json()["error"]
        assert down.headers["retry-after"] == "1"  # a blip: clients retry, not give up
        assert gw.client.get("/healthz/ready").status_code == 503
        assert gw.client.get("/healthz/live").status_code == 200  # a restart would not help
        gw.queue.down = False
        gw.refresh()
        assert gw.client.get("/healthz/ready").status_code == 200
        assert gw.client.post(IMAGE, json=infer_image(1)).status_code == 200


def test_api_keys(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_API_KEYS": "key-one-1,key-two-22"}, serve=[CLASSIFIER]) as gw:
        http = gw.client
        missing = http.post(IMAGE, json=infer_image(1))
        assert missing.status_code == 401 and "Traceback" not in missing.text
        wrong = http.post(IMAGE, json=infer_image(1), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = http.post(IMAGE, json=infer_image(1), headers={"Authorization": "Bearer key-two-22"})
        assert ok.status_code == 200
        assert http.get("/healthz/ready").status_code == 200  # probes need no key
