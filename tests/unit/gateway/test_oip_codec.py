"""The OIP JSON codec: tensors parsed and checked against model metadata, outputs encoded;
and the request fields outside the tensors (deadline, request id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.contract.errors import InvalidInputError
from services.contract.inputs import check_request
from services.contract.metadata import ModelMetadata, parse_metadata
from services.gateway.errors import BadRequestError, status_for
from services.gateway.fields import request_id, timeout_ms
from services.gateway.oip_codec import outputs_json, parse_infer
from services.gateway.state import parse_json


def metadata(task: str = "classify") -> ModelMetadata:
    docs: dict[str, dict[str, Any]] = {
        "classify": {
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ],
            "labels": ["a", "b", "c"],
            "image": {"channels": 1, "height": 2, "width": 2, "value_range": [0, 16]},
        },
        "generate": {
            "inputs": [
                {"name": "latent", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
            "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 2, 2]}],
            "latent_size": 4,
            "conditional": True,
            "num_classes": 3,
            "image": {"channels": 1, "height": 2, "width": 2, "value_range": [0, 16]},
        },
    }
    document = {
        "schema_version": 1,
        "name": f"m-{task}",
        "version": 1,
        "task": task,
        "architecture": "cnn" if task == "classify" else "dcgan",
        "sha256": "0" * 64,
        "opset": 17,
        "created_at": "2026-11-28T00:00:00Z",
        **docs[task],
    }
    return parse_metadata(document, Path("test"))


def image(shape: list[int], data: Any, datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]}


def test_nested_and_flat_data_give_the_same_tensor() -> None:
    nested = parse_infer(image([2, 1, 2, 2], [[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]]),
                         metadata(), max_rows=4)  # fmt: skip
    flat = parse_infer(image([2, 1, 2, 2], list(range(1, 9))), metadata(), max_rows=4)
    assert nested.inputs["image"].dtype == np.float32
    np.testing.assert_array_equal(nested.inputs["image"], flat.inputs["image"])


def test_outputs_selection_id_and_parameters() -> None:
    doc = {**image([1, 1, 2, 2], [0.0] * 4), "id": "x", "outputs": [{"name": "logits"}],
           "parameters": {"timeout_ms": 50}}  # fmt: skip
    parsed = parse_infer(doc, metadata(), max_rows=4)
    assert parsed.outputs == ("logits",)
    assert parsed.id == "x"
    assert parsed.parameters == {"timeout_ms": 50}
    rows = outputs_json({"logits": np.zeros((1, 3), np.float32)}, metadata(), parsed.outputs)
    assert rows == [{"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [0.0] * 3}]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"inputs": 3}, "must be a list"),
        (image([1, 1, 2, 2], [0.0] * 3), "3 values"),
        (image([1, 1, 2, 2], [[1.0, 2.0], [3.0]]), "rectangular"),
        (image([1, 1, 2, 2], ["a"] * 4), "FP32 needs number values, got str"),
        (image([1, 1, 2, 2], ["1.5"] * 4), "got str"),
        (image([1, 1, 2, 2], [True] * 4), "got bool"),
        (image([1, 1, 2, 2], [[1.0, True], [2.0, 3.0]]), "got bool"),
        (image([1, 1, 2, 2], [1.0, None, 2.0, 3.0]), "got NoneType"),
        (image([1, 1, 2, 2], [1.5] * 4, "INT64"), "INT64 needs integer values"),
        (image([1, 1, 2, 2], [2**70] * 4, "INT64"), "outside the INT64 range"),
        (image([1, 1, 2, 2], [0] * 4, "INT64"), "datatype INT64, expected FP32"),
        (image([1, 4], [0.0] * 4), "rank"),
        (image([1, 1, 2, 3], [0.0] * 6), "axis 3 must be 2"),
        (image([1, 1, 2, 2], [float("nan")] * 4), "NaN"),
        (image([5, 1, 2, 2], [0.0] * 20), "at most 4"),
        (image([1, 1, 2, 2], [0.0] * 4) | {"outputs": [{"name": "zz"}]}, "not an output"),
        ({"inputs": [{"name": "img", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
         "unknown input(s) ['img']"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "FP9", "data": [1.0]}]},
         "not one of"),
        ({"inputs": [image([1, 1, 2, 2], [0.0] * 4)["inputs"][0]] * 2}, "appears twice"),
    ],
)  # fmt: skip
def test_bad_requests_say_what_is_wrong(doc: Any, message: str) -> None:
    with pytest.raises((BadRequestError, InvalidInputError)) as caught:
        parse_infer(doc, metadata(), max_rows=4)
    assert message in str(caught.value)
    assert status_for(caught.value) == 400


def test_an_integer_beyond_64_bits_in_the_body_is_refused() -> None:
    """orjson reads 2**70 as a float (``state.parse_json``); an integer input refuses it."""
    body = b'{"inputs":[{"name":"image","shape":[1,1,2,2],"datatype":"INT64","data":[0,0,0,%d]}]}'
    doc = parse_json(body % 2**70)
    with pytest.raises(BadRequestError, match="INT64 needs integer values"):
        parse_infer(doc, metadata(), max_rows=4)


def test_generate_parameters() -> None:
    meta = metadata("generate")
    assert check_request(meta, {}, {"count": 3, "seed": 1, "label": 2}, max_rows=8) == 3
    for parameters, message in [
        ({"count": 0, "seed": 1}, "count: 0 is outside 1..8"),
        ({"count": 9, "seed": 1}, "count: 9 is outside"),
        ({"count": 1, "seed": -1}, "seed"),
        ({"count": 1}, "seed: required"),
        ({"count": 1, "seed": 1, "label": 3}, "label: 3 is outside 0..2"),
        ({"count": True, "seed": 1}, "must be an integer"),
    ]:
        with pytest.raises(InvalidInputError, match=message) as caught:
            check_request(meta, {}, parameters, max_rows=8)
        assert status_for(caught.value) == 400
    parsed = parse_infer({"inputs": [], "parameters": {"seed": 1, "count": 2}}, meta, max_rows=8)
    assert parsed.inputs == {}


def test_deadline_and_request_id() -> None:
    assert timeout_ms(None, {}, default=100, maximum=1000) == 100
    assert timeout_ms("250", {}, default=100, maximum=1000) == 250
    assert timeout_ms("250", {"timeout_ms": 300}, default=100, maximum=1000) == 300
    for header, parameters in [("x", {}), ("0", {}), (None, {"timeout_ms": 5000})]:
        with pytest.raises(BadRequestError):
            timeout_ms(header, parameters, default=100, maximum=1000)
    assert request_id("abc-123") == "abc-123"
    assert request_id("bad id\n") is None
    assert request_id("x" * 200) is None
