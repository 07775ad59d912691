"""Tensor and message codec: round trips, byte layout, and refusal of malformed input."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from services.contract.codec import (
    DATATYPES,
    Reply,
    decode_reply,
    decode_request,
    decode_tensor,
    encode_reply,
    encode_request,
    encode_tensor,
)
from services.contract.errors import BadEntryError


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips(datatype: str) -> None:
    array = (np.arange(24) % 7).reshape(2, 3, 4).astype(DATATYPES[datatype])
    encoded = encode_tensor(array)
    assert encoded["datatype"] == datatype
    assert encoded["shape"] == [2, 3, 4]
    decoded = decode_tensor(encoded, "x")
    assert decoded.dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded, array)


def test_data_is_raw_little_endian_c_order() -> None:
    big_endian_fortran = np.asfortranarray(np.array([[1, 2], [3, 4]], dtype=">i4"))
    encoded = encode_tensor(big_endian_fortran)
    assert encoded["datatype"] == "INT32"
    assert encoded["data"] == np.array([1, 2, 3, 4], dtype="<i4").tobytes()


def test_request_round_trip_with_parameters() -> None:
    image = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    body = encode_request({"image": image}, {"seed": 7, "note": "x", "flag": True})
    request = decode_request(body)
    np.testing.assert_array_equal(request.inputs["image"], image)
    assert request.parameters == {"seed": 7, "note": "x", "flag": True}


def test_body_is_plain_msgpack_without_pickle() -> None:
    body = encode_request({"x": np.zeros((1, 2), np.float32)})
    message = msgpack.unpackb(body, raw=False)
    assert message["inputs"]["x"] == {"datatype": "FP32", "shape": [1, 2], "data": bytes(8)}


def test_reply_round_trips() -> None:
    ok = Reply.success("r1", {"y": np.ones((2, 3), np.float32)})
    decoded = decode_reply(encode_reply(ok))
    assert decoded.id == "r1" and decoded.ok
    assert decoded.outputs is not None
    np.testing.assert_array_equal(decoded.outputs["y"], np.ones((2, 3), np.float32))
    failed = decode_reply(encode_reply(Reply.failure("r2", "invalid_input", "bad 'x'")))
    assert (
        failed.ok,
        failed.error and failed.error.code,
        failed.error and failed.error.message,
    ) == (
        False,
        "invalid_input",
        "bad 'x'",
    )


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"datatype": "FP32", "shape": [2], "data": bytes(4)}, "4 bytes of data"),
        ({"datatype": "BYTES", "shape": [1], "data": b"a"}, "datatype 'BYTES'"),
        ({"datatype": "FP32", "shape": [-1], "data": b""}, "shape"),
        ({"datatype": "FP32", "shape": [1], "data": "text"}, "raw bytes"),
        ([1, 2], "expected a map"),
    ],
)
def test_malformed_tensors_are_refused(tensor: object, message: str) -> None:
    with pytest.raises(BadEntryError, match=message):
        decode_tensor(tensor, "x")


def test_garbage_body_is_refused() -> None:
    with pytest.raises(BadEntryError, match="not valid msgpack"):
        decode_request(b"\xc1\xc1")
    with pytest.raises(BadEntryError, match="map at the top level"):
        decode_request(msgpack.packb([1, 2]))
    with pytest.raises(BadEntryError, match="must be a scalar"):
        decode_request(msgpack.packb({"inputs": {}, "parameters": {"a": [1]}}))


def test_unsupported_dtype_cannot_be_encoded() -> None:
    with pytest.raises(BadEntryError, match="no Open Inference Protocol name"):
        encode_tensor(np.array(["a"]))
