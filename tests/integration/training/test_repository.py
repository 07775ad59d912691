"""The model repository the default pipelines build: layout, metadata schema, sha256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from training.repository import check_metadata, sha256_file

TASKS = {"digits-cnn": "classify", "sunspots-lstm": "forecast", "digits-gan": "generate"}


@pytest.mark.parametrize("name", list(TASKS))
def test_metadata_schema(model_repo: Path, name: str) -> None:
    vdir = model_repo / name / "1"
    meta = json.loads((vdir / "metadata.json").read_text())
    check_metadata(meta)
    assert meta["name"] == name and meta["version"] == 1 and meta["task"] == TASKS[name]
    assert meta["sha256"] == sha256_file(vdir / "model.onnx")
    assert meta["parity"]["max_abs_diff"] <= meta["parity"]["tolerance"] <= 1e-4
    assert list((vdir / "report").glob("*.png")), "training plots missing"
    assert meta["training"]["name"] == name
    sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in meta["inputs"]]
    assert [o.name for o in sess.get_outputs()] == [o["name"] for o in meta["outputs"]]


def test_forecaster_metadata_and_units(model_repo: Path) -> None:
    vdir = model_repo / "sunspots-lstm" / "1"
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "history", "datatype": "FP32", "shape": [-1, -1]}]
    assert meta["outputs"][0]["shape"] == [-1, meta["horizon"]]
    for key in ("test", "persistence", "arima"):
        assert meta["metrics"][key]["rmse"] > 0
    sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    # scaling is inside the graph: a flat history of 80 gives forecasts in sunspot units
    out = sess.run(None, {"history": np.full((1, 30), 80.0, np.float32)})[0]
    assert out.shape == (1, meta["horizon"])
    assert np.all(out > 10.0)


def test_classifier_and_generator_tensors(model_repo: Path) -> None:
    cnn = json.loads((model_repo / "digits-cnn" / "1" / "metadata.json").read_text())
    assert cnn["labels"] == [str(i) for i in range(10)]
    assert cnn["image"] == {"channels": 1, "height": 8, "width": 8, "value_range": [0.0, 16.0]}
    assert set(cnn["metrics"]) >= {"accuracy", "confusion_matrix"}
    gan = json.loads((model_repo / "digits-gan" / "1" / "metadata.json").read_text())
    assert gan["conditional"] is True and gan["num_classes"] == 10
    assert [i["name"] for i in gan["inputs"]] == ["latent", "label"]
    assert gan["inputs"][1]["datatype"] == "INT64"
    for key in ("generated", "real_held_out", "untrained_generator"):
        assert 0.0 <= gan["metrics"][key]["confident_share"] <= 1.0
