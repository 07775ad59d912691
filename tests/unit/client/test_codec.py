"""The client's codec (services/client/codec.py) against the gateway's own parser and
encoder: every datatype both ways, JSON and binary, pure (no app, no I/O)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from services.client.codec import (
    DATATYPES,
    HEADER_LENGTH,
    ResponseFormatError,
    decode_infer,
    encode_infer,
)
from services.contract.codec import DATATYPES as CONTRACT_DATATYPES
from services.gateway.oip_binary import BinarySection, split_body
from services.gateway.oip_codec import encode_outputs, parse_tensor
from services.gateway.responses import BinaryTensors


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype]
    values = np.arange(int(np.prod(shape))).reshape(shape)
    if dtype.kind == "b":
        return np.asarray(values % 2 == 1)
    if dtype.kind == "f":
        return (values * 0.25 - 0.5).astype(dtype)
    return values.astype(dtype)


def gateway_parse(
    content: bytes, headers: dict[str, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """The request as the gateway reads it: (its JSON, arrays by input name)."""
    head, data = split_body(content, headers.get(HEADER_LENGTH))
    doc = json.loads(head)
    section = BinarySection(data or b"", framed=data is not None)
    arrays = dict(
        parse_tensor(t, f"inputs[{i}]", None, section) for i, t in enumerate(doc["inputs"])
    )
    section.finish()
    return doc, arrays


def test_the_datatype_table_is_the_gateways() -> None:
    assert DATATYPES == CONTRACT_DATATYPES


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_reaches_the_gateway_unchanged(datatype: str, binary: bool) -> None:
    inputs = {"a": sample(datatype), "b": sample(datatype, (1, 2, 2))}
    body = encode_infer(inputs, binary=binary)
    doc, arrays = gateway_parse(body.content, body.headers)
    assert [t["datatype"] for t in doc["inputs"]] == [datatype, datatype]
    for name, array in inputs.items():
        assert arrays[name].dtype == DATATYPES[datatype]
        np.testing.assert_array_equal(arrays[name], array)


def test_binary_body_layout_and_request_fields() -> None:
    image = np.ones((2, 1, 2, 2), np.float32)
    body = encode_infer(
        {"image": image}, id="r-1", parameters={"seed": 3}, outputs=["probabilities"]
    )
    length = int(body.headers[HEADER_LENGTH])
    doc = json.loads(body.content[:length])
    assert body.headers["content-type"] == "application/octet-stream"
    assert doc == {
        "id": "r-1",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 1, 2, 2],
                    "parameters": {"binary_data_size": 32}}],
        "parameters": {"seed": 3, "binary_data_output": True},
        "outputs": [{"name": "probabilities"}],
    }  # fmt: skip
    assert body.content[length:] == image.tobytes()


def test_json_body_is_flat_data_without_binary_fields() -> None:
    body = encode_infer({"x": np.arange(4, dtype=np.int64).reshape(2, 2)}, binary=False)
    assert HEADER_LENGTH not in body.headers
    assert json.loads(body.content) == {
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [0, 1, 2, 3]}]
    }


def test_views_big_endian_and_empty_inputs_are_sent_as_they_read() -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)  # big-endian, sliced: not contiguous
    view = base[::2, 1::2]
    body = encode_infer({"v": view})
    _, arrays = gateway_parse(body.content, body.headers)
    np.testing.assert_array_equal(arrays["v"], view)
    assert arrays["v"].dtype == np.dtype("<f4")
    generator = encode_infer({}, parameters={"count": 2})  # a generator takes no tensor
    doc, arrays = gateway_parse(generator.content, generator.headers)
    assert arrays == {} and doc["parameters"] == {"count": 2, "binary_data_output": True}


def test_a_dtype_without_an_oip_datatype_is_refused_naming_the_input() -> None:
    with pytest.raises(TypeError, match=r"inputs\['text'\]: dtype <U1"):
        encode_infer({"text": np.array(["a"])})
    with pytest.raises(TypeError, match="complex"):
        encode_infer({"z": np.zeros(2, np.complex64)})


def gateway_response(
    outputs: dict[str, np.ndarray[Any, Any]], raw: frozenset[str]
) -> tuple[bytes, str | None]:
    """(body, Inference-Header-Content-Length or None) as the gateway answers."""
    metadata = SimpleNamespace(
        outputs=[SimpleNamespace(name=n, datatype=_name(a)) for n, a in outputs.items()]
    )
    tensors, arrays = encode_outputs(outputs, metadata, None, raw)  # type: ignore[arg-type]
    header = {"model_name": "m", "model_version": "2", "id": "r9", "outputs": tensors}
    if arrays:
        response = BinaryTensors(header, arrays)
        return bytes(response.body), response.headers[HEADER_LENGTH]
    return json.dumps(header).encode(), None


def _name(array: np.ndarray[Any, Any]) -> str:
    return next(n for n, d in DATATYPES.items() if d == array.dtype.newbyteorder("<"))


@pytest.mark.parametrize("binary", ["none", "some", "all"])
def test_responses_decode_from_json_binary_or_both(binary: str) -> None:
    outputs = {
        "logits": sample("FP32", (2, 3)),
        "mask": sample("BOOL", (2, 2)),
        "ids": sample("INT64", (3,)),
    }
    raw = {"none": frozenset(), "some": frozenset({"mask"}), "all": frozenset(outputs)}[binary]
    content, length = gateway_response(outputs, raw)
    result = decode_infer(content, length)
    assert (result.model_name, result.model_version, result.id) == ("m", "2", "r9")
    assert list(result.outputs) == list(outputs)
    for name, array in outputs.items():
        assert result[name].dtype == array.dtype and result[name].shape == array.shape
        np.testing.assert_array_equal(result[name], array)


def test_binary_outputs_may_hold_nan_and_a_zero_header_means_json_only() -> None:
    values = np.array([np.nan, np.inf, 1.0], np.float32)
    content, length = gateway_response({"y": values}, frozenset({"y"}))
    np.testing.assert_array_equal(decode_infer(content, length)["y"], values)
    plain = json.dumps({"model_name": "m", "model_version": "1", "outputs": []}).encode()
    assert decode_infer(plain, "0").outputs == {}


def framed(head: bytes, tail: bytes) -> tuple[bytes, str]:
    return head + tail, str(len(head))


@pytest.mark.parametrize(
    ("content", "length", "message"),
    [
        (b"not json", None, "not valid JSON"),
        (b"{}", None, "'outputs'"),
        (*framed(b'{"outputs": []}', b"xx"), "2 bytes of binary data belong to no output"),
        (b'{"outputs": []}', "99", "not a byte count"),
        (b'{"outputs": []}', "-1", "not a byte count"),
        (
            *framed(
                b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], '
                b'"parameters": {"binary_data_size": 4}}]}',
                b"1234",
            ),
            "does not fit shape",
        ),
        (
            *framed(
                b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], '
                b'"parameters": {"binary_data_size": 8}}]}',
                b"1234",
            ),
            "only 4 left",
        ),
        (
            b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}',
            None,
            "data does not fit",
        ),
        (b'{"outputs": [{"name": "y", "datatype": "STR", "shape": [1]}]}', None, "datatype"),
    ],
)
def test_malformed_responses_say_what_is_wrong(
    content: bytes, length: str | None, message: str
) -> None:
    with pytest.raises(ResponseFormatError, match=message):
        decode_infer(content, length)
