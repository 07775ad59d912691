"""A real, deliberately slow ONNX classifier for fault-injection scenarios.

``write_slow_classifier`` saves ``chaos-cnn/1``: the digits interface (``image`` FP32
[-1, 1, 8, 8] → ``logits`` / ``probabilities`` FP32 [-1, 10], labels "0".."9") with a
dense layer repeated
``steps`` times in between, so one ONNX Runtime run
costs milliseconds instead of microseconds. That makes a worker's capacity small and
known on a 2-core machine: entries really sit in a worker's pending list when it is
killed or stopped, and 3× capacity is a rate a Python load generator can drive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.support.onnx_models import write_classifier

NAME = "chaos-cnn"


def write_slow_classifier(root: Path, *, hidden: int = 512, steps: int = 1500) -> Path:
    """Write ``root/chaos-cnn/1`` (model.onnx + metadata.json with its sha256).

    The hidden layer runs ``steps`` times in an ONNX ``Loop`` (h ← tanh(h·W)): the cost
    is compute, not file size (one [hidden, hidden] weight).
    """
    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(hidden)
    inits = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(
            (rng.standard_normal((64, hidden)) * 0.05).astype(np.float32), "w_in"
        ),
        numpy_helper.from_array(
            (rng.standard_normal((hidden, hidden)) * scale).astype(np.float32), "w_hidden"
        ),
        numpy_helper.from_array(
            (rng.standard_normal((hidden, 10)) * scale).astype(np.float32), "w_out"
        ),
        numpy_helper.from_array(np.array(steps, dtype=np.int64), "steps"),
        numpy_helper.from_array(np.array(True), "keep_going"),
    ]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "w_hidden"], ["m"]),  # [N, hidden]
            helper.make_node("Tanh", ["m"], ["h_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", hidden]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", hidden]),
        ],
    )
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),  # [N, 64]
        helper.make_node("MatMul", ["flat", "w_in"], ["h0"]),  # [N, hidden]
        helper.make_node("Loop", ["steps", "keep_going", "h0"], ["h"], body=body),
        helper.make_node("MatMul", ["h", "w_out"], ["logits"]),  # [N, 10]
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    return write_classifier(root, NAME, 1, nodes, inits, side=8, labels=[str(i) for i in range(10)])
