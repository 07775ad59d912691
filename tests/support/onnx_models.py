"""Write real ONNX model versions for tests that need a model with a specific behaviour.

``write_poison_classifier`` builds a tiny classifier (``image`` FP32 [-1, 1, 2, 2] →
``logits`` / ``probabilities`` FP32 [-1, 3]) whose graph really fails in ONNX Runtime
when pixel (0, 0) of a row is 17 or more: that pixel indexes a Gather over a 17-entry
table. Valid pixels (0..16) work. So a request carrying such a pixel is a genuine
"poison" input: it passes schema validation and always fails in the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_version(
    root: Path, name: str, version: int, model: onnx.ModelProto, meta: dict[str, Any]
) -> Path:
    """Save ``model`` and a metadata.json (sha256 filled in) under root/name/version."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    document = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": 17,
        "created_at": "2026-11-28T00:00:00Z",
        **meta,
    }
    (folder / "metadata.json").write_text(json.dumps(document, indent=2))
    return folder


def checked_model(graph: onnx.GraphProto, *, opset: int) -> onnx.ModelProto:
    """``graph`` as a model of ``opset`` (IR 8, loadable by every supported ONNX Runtime),
    passed through ``onnx.checker``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_classifier(
    root: Path,
    name: str,
    version: int,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    *,
    side: int,
    labels: list[str],
) -> Path:
    """Wrap ``nodes`` (``image`` FP32 [N, 1, side, side] → ``logits`` and
    ``probabilities`` FP32 [N, K], K = len(labels)) into a checked opset-17 model with
    classify metadata, written as root/name/version."""
    k = len(labels)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, side, side])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k]),
        ],
        initializer=initializers,
    )
    model = checked_model(graph, opset=17)
    meta = {
        "task": "classify",
        "architecture": "mlp",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, side, side]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
        ],
        "labels": labels,
        "image": {"channels": 1, "height": side, "width": side, "value_range": [0, 16]},
    }
    return write_version(root, name, version, model, meta)


def write_poison_classifier(
    root: Path,
    name: str = "poison-cnn",
    version: int = 1,
    *,
    seed: int = 0,
    poison_from: int = 17,
) -> Path:
    """A classifier whose run fails for rows with image[:, 0, 0, 0] >= ``poison_from``
    (see module doc); ``seed`` draws its weights (another seed: another model)."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    table = numpy_helper.from_array(np.ones(poison_from, dtype=np.float32), "table")
    flat_shape = numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "flat_shape")
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "starts")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "ends")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),  # [N, 4]
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["first"]),  # [N, 1]
        helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),  # [N, 1]
        helper.make_node("Gather", ["table", "index"], ["scale"], axis=0),  # [N, 1]
        helper.make_node("MatMul", ["flat", "w"], ["raw"]),  # [N, 3]
        helper.make_node("Mul", ["raw", "scale"], ["logits"]),  # [N, 3]
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),  # [N, 3]
    ]
    return write_classifier(
        root,
        name,
        version,
        nodes,
        [weights, table, flat_shape, starts, ends, axes],
        side=2,
        labels=["a", "b", "c"],
    )


def write_tiny_forecaster(
    root: Path, name: str = "tiny-lstm", version: int = 1, *, window: int = 4, horizon: int = 2
) -> Path:
    """A forecaster graph, no training: ``history`` FP32 [N, T] → ``forecast`` FP32
    [N, horizon], every step the mean of the history (T variable, at most 64)."""
    ones = numpy_helper.from_array(np.ones((1, horizon), dtype=np.float32), "ones")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["history", "axes"], ["mean"], keepdims=1),  # [N, 1]
        helper.make_node("Mul", ["mean", "ones"], ["forecast"]),  # [N, horizon]
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("history", TensorProto.FLOAT, ["batch", "time"])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon])],
        initializer=[ones, axes],
    )
    model = checked_model(graph, opset=18)
    meta = {
        "task": "forecast",
        "architecture": "lstm",
        "inputs": [{"name": "history", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "forecast", "datatype": "FP32", "shape": [-1, horizon]}],
        "window": window,
        "horizon": horizon,
        "max_history": 64,
    }
    return write_version(root, name, version, model, meta)


def write_tiny_generator(
    root: Path, name: str = "tiny-gan", version: int = 1, *, latent: int = 4, classes: int = 3
) -> Path:
    """A conditional generator graph, no training: ``latent`` FP32 [N, latent] and
    ``label`` INT64 [N] → ``image`` FP32 [N, 1, 2, 2] in 0..16 (sigmoid of a fixed
    projection, scaled; the label shifts it)."""
    rng = np.random.default_rng(1)
    weights = numpy_helper.from_array(rng.standard_normal((latent, 4)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 1, 2, 2], dtype=np.int64), "shape")
    scale = numpy_helper.from_array(np.array(16.0, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("MatMul", ["latent", "w"], ["raw"]),  # [N, 4]
        helper.make_node("Cast", ["label"], ["label_f"], to=TensorProto.FLOAT),  # [N]
        helper.make_node("Unsqueeze", ["label_f", "one"], ["label_col"]),  # [N, 1]
        helper.make_node("Add", ["raw", "label_col"], ["shifted"]),  # [N, 4]
        helper.make_node("Sigmoid", ["shifted"], ["unit"]),  # [N, 4] in 0..1
        helper.make_node("Mul", ["unit", "scale"], ["pixels"]),  # [N, 4] in 0..16
        helper.make_node("Reshape", ["pixels", "shape"], ["image"]),  # [N, 1, 2, 2]
    ]
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", latent]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        initializer=[weights, shape, scale, one],
    )
    model = checked_model(graph, opset=17)
    meta = {
        "task": "generate",
        "architecture": "dcgan",
        "inputs": [
            {"name": "latent", "datatype": "FP32", "shape": [-1, latent]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
        "latent_size": latent,
        "conditional": True,
        "num_classes": classes,
        "image": {"channels": 1, "height": 2, "width": 2, "value_range": [0, 16]},
    }
    return write_version(root, name, version, model, meta)
