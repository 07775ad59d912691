"""ONNX export: parity for all architectures, dynamic axes, refusal writes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.errors import ExportError
from training.export import check_parity, export_onnx
from training.models.classifier import ClassifierConfig
from training.models.forecaster import ExportedForecaster, ForecasterConfig, build_forecaster
from training.models.gan import GanConfig, Generator
from training.pipelines import classify, forecast, generate


def _classifier_plan(arch: str):  # type: ignore[no-untyped-def]
    cfg = replace(ClassifierConfig(), arch=arch, conv_channels=(4, 8), hidden=(16,))
    net = classify.ExportedClassifier(
        classify.build_classifier(cfg, (1, 8, 8), 10), classify.Normalize(5.0, 6.0)
    )
    extras = {
        "shape": [1, 8, 8],
        "n_classes": 10,
        "norm": [5.0, 6.0],
        "meta": {"image": {"value_range": [0, 16]}},
    }
    return classify.export_plan(cfg, net.state_dict(), extras)


def _forecaster_plan(cell: str):  # type: ignore[no-untyped-def]
    cfg = replace(ForecasterConfig(), cell=cell, hidden_size=8, window=10, horizon=3)
    net = ExportedForecaster(build_forecaster(cfg), 50.0, 20.0)
    return forecast.export_plan(cfg, net.state_dict(), {"scaler": [50.0, 20.0]})


def _generator_plan(conditional: bool):  # type: ignore[no-untyped-def]
    cfg = replace(GanConfig(), conditional=conditional, latent_size=6, gen_features=8)
    gen = Generator(cfg, (1, 8, 8), 10)
    extras = {"shape": [1, 8, 8], "n_classes": 10, "value_range": [0.0, 16.0]}
    return generate.export_plan(cfg, gen.state_dict(), extras)


PLANS = {
    "cnn": lambda: _classifier_plan("cnn"),
    "mlp": lambda: _classifier_plan("mlp"),
    "perceptron": lambda: _classifier_plan("perceptron"),
    "lstm": lambda: _forecaster_plan("lstm"),
    "gru": lambda: _forecaster_plan("gru"),
    "rnn": lambda: _forecaster_plan("rnn"),
    "generator": lambda: _generator_plan(True),
    "generator-unconditional": lambda: _generator_plan(False),
}


@pytest.mark.parametrize("arch", list(PLANS))
def test_parity_and_dynamic_axes(arch: str, tmp_path: Path) -> None:
    plan = PLANS[arch]()
    path = tmp_path / "model.onnx"
    result = export_onnx(
        plan.module, plan.example, plan.inputs, plan.outputs, path, plan.cases, legacy=plan.legacy
    )
    assert result.parity["max_abs_diff"] <= 1e-4
    assert len(result.parity["checks"]) == len(plan.cases)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no external data
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for spec_, inp in zip(plan.inputs, sess.get_inputs(), strict=True):
        assert inp.name == spec_.name
        assert isinstance(inp.shape[0], str), "batch axis must be dynamic"
        if arch in ("lstm", "gru", "rnn"):
            assert isinstance(inp.shape[1], str), "sequence axis must be dynamic"


def test_two_recurrent_exports_in_one_process_keep_dynamic_time(tmp_path: Path) -> None:
    for i, cell in enumerate(["lstm", "gru", "lstm", "rnn"]):
        plan = _forecaster_plan(cell)
        export_onnx(
            plan.module,
            plan.example,
            plan.inputs,
            plan.outputs,
            tmp_path / f"{i}.onnx",
            plan.cases,
            legacy=plan.legacy,
        )
        sess = ort.InferenceSession(str(tmp_path / f"{i}.onnx"), providers=["CPUExecutionProvider"])
        out = sess.run(None, {"history": np.random.rand(2, 31).astype(np.float32)})[0]
        assert out.shape == (2, 3)


def test_mismatch_is_refused_and_nothing_written(tmp_path: Path) -> None:
    plan = _forecaster_plan("lstm")
    path = tmp_path / "model.onnx"
    export_onnx(plan.module, plan.example, plan.inputs, plan.outputs, path, plan.cases)
    other = _forecaster_plan("lstm").module  # same architecture, other random weights
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_parity(other, path, plan.inputs, plan.outputs, plan.cases)


def test_failed_export_writes_no_file(tmp_path: Path) -> None:
    plan = _forecaster_plan("rnn")
    path = tmp_path / "out" / "model.onnx"
    # The dynamo exporter cannot export nn.RNN with a dynamic time axis (see export.py):
    with pytest.raises(ExportError):
        export_onnx(
            plan.module, plan.example, plan.inputs, plan.outputs, path, plan.cases, legacy=False
        )
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
