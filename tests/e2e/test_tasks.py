"""Task endpoints (classify, forecast, generate) and the model list, over HTTP."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import MODELS, Stack
from tests.e2e.payloads import history, images


def test_model_list(stack: Stack) -> None:
    with stack.client() as http:
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert {listed[m]["task"] for m in MODELS} == {"classify", "forecast", "generate"}
    for model in MODELS:
        assert listed[model]["versions"] == [{"version": 1, "ready": True, "workers": 1}]


def test_classify_arrays_and_png_agree(stack: Stack) -> None:
    # [2, 1, 8, 8] with values 0 or 16: exact in an 8-bit PNG (0 and 255)
    pixels = (np.asarray(images(2, seed=5)) >= 8) * 16.0
    pngs = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray((image[0] * 255 / 16).round().astype(np.uint8)).save(buffer, "PNG")
        pngs.append(base64.b64encode(buffer.getvalue()).decode())
    with stack.client() as http:
        nested = http.post(
            "/v1/models/digits-cnn/classify", json={"images": pixels.tolist(), "top_k": 3}
        )
        no_channel = http.post(
            "/v1/models/digits-cnn/classify", json={"images": pixels[:, 0].tolist(), "top_k": 3}
        )
        png = http.post("/v1/models/digits-cnn/classify", json={"png": pngs, "top_k": 3})
    assert nested.status_code == 200, nested.text
    predictions = nested.json()["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        probabilities = [p["probability"] for p in prediction["top_k"]]
        assert len(probabilities) == 3
        assert probabilities == sorted(probabilities, reverse=True)
        assert prediction["label"] == prediction["top_k"][0]["label"]
        assert prediction["label"] in [str(d) for d in range(10)]
    assert no_channel.json()["predictions"] == predictions
    assert png.status_code == 200, png.text
    for a, b in zip(png.json()["predictions"], predictions, strict=True):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_forecast_one_and_many_with_horizon(stack: Stack) -> None:
    with stack.client() as http:
        meta = http.get("/v2/models/sunspots-lstm").json()["parameters"]
        full = http.post("/v1/models/sunspots-lstm/forecast", json={"history": history()})
        short = http.post(
            "/v1/models/sunspots-lstm/forecast",
            json={"histories": [history(), history()], "horizon": 2},
        )
    assert full.status_code == 200, full.text
    body = full.json()
    assert body["horizon"] == meta["horizon"]
    assert len(body["forecasts"]) == 1
    assert len(body["forecasts"][0]) == meta["horizon"]
    assert all(np.isfinite(body["forecasts"][0]))
    assert short.status_code == 200, short.text
    assert short.json()["forecasts"] == [body["forecasts"][0][:2]] * 2


def test_generate_png_arrays_seeded(stack: Stack) -> None:
    with stack.client() as http:
        first = http.post(
            "/v1/models/digits-gan/generate", json={"count": 3, "seed": 11, "format": "array"}
        )
        again = http.post(
            "/v1/models/digits-gan/generate", json={"count": 3, "seed": 11, "format": "array"}
        )
        png = http.post("/v1/models/digits-gan/generate", json={"count": 2, "seed": 11, "label": 7})
        unseeded = http.post("/v1/models/digits-gan/generate", json={})
    assert first.status_code == 200, first.text
    arrays = np.asarray(first.json()["images"])
    assert arrays.shape == (3, 1, 8, 8)
    assert first.json()["images"] == again.json()["images"]
    assert png.status_code == 200, png.text
    assert png.json()["label"] == 7
    for encoded in png.json()["images"]:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            assert image.size == (8, 8)
            assert image.mode == "L"
    assert unseeded.status_code == 200
    assert isinstance(unseeded.json()["seed"], int)
    assert len(unseeded.json()["images"]) == 1
