"""Property-based fuzzing (hypothesis) of the codecs that parse untrusted bytes and JSON:
``services.contract.codec`` (msgpack entries and replies off Redis) and
``services.gateway.oip_codec`` (OIP JSON from clients). Each function either returns a
value or raises its own domain error (``BadEntryError`` / ``BadRequestError`` or
``InvalidInputError``): never
another exception, never a hang (hypothesis' deadline is generous but set)."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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
from services.contract.errors import BadEntryError, InvalidInputError
from services.contract.metadata import ModelMetadata
from services.gateway.errors import BadRequestError
from services.gateway.fields import request_id, timeout_ms
from services.gateway.oip_codec import parse_infer, to_array
from services.runtime.repository import ModelRepository

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
)
msgpack_values = st.recursive(
    msgpack_scalars | st.binary(max_size=64),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)
datatype_names = st.sampled_from([*DATATYPES, "STRING", "", "FP8"])
shapes = st.lists(st.integers(min_value=-2, max_value=2**64 - 1), max_size=10)


def tensor_maps() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "datatype": datatype_names | msgpack_values,
            "shape": shapes | msgpack_values,
            "data": st.binary(max_size=256) | msgpack_values,
        },
    )


def _pack(value: object) -> bytes:
    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


@FUZZ
@given(st.binary(max_size=512))
def test_decode_request_random_bytes(payload: bytes) -> None:
    with contextlib.suppress(BadEntryError):
        decode_request(payload)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "inputs": st.dictionaries(st.text(max_size=6), tensor_maps(), max_size=3)
            | msgpack_values,
            "parameters": st.dictionaries(st.text(max_size=6), msgpack_values, max_size=3)
            | msgpack_values,
        },
    )
)
def test_decode_request_structured(message: dict[str, Any]) -> None:
    try:
        request = decode_request(_pack(message))
    except BadEntryError:
        return
    for array in request.inputs.values():
        assert array.dtype in DATATYPES.values()


@FUZZ
@given(st.binary(max_size=512) | msgpack_values.map(_pack))
def test_decode_reply_random(payload: bytes) -> None:
    with contextlib.suppress(BadEntryError):
        decode_reply(payload)


@FUZZ
@given(tensor_maps())
def test_decode_tensor_structured(obj: dict[str, Any]) -> None:
    try:
        array = decode_tensor(obj, "x")
    except BadEntryError:
        return
    assert array.nbytes == len(obj["data"])


all_dtypes = st.sampled_from(list(DATATYPES.values()))


@FUZZ
@given(
    all_dtypes.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
    )
)
def test_tensor_round_trip(array: np.ndarray[Any, Any]) -> None:
    decoded = decode_tensor(encode_tensor(array), "x")
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == np.ascontiguousarray(array).tobytes()
    request = decode_request(encode_request({"x": array}, {"seed": 1, "note": "n"}))
    assert request.inputs["x"].tobytes() == decoded.tobytes()
    reply = decode_reply(encode_reply(Reply.success("id-1", {"y": array})))
    assert reply.ok and reply.outputs is not None
    assert reply.outputs["y"].tobytes() == decoded.tobytes()


@FUZZ
@given(json_values, datatype_names.filter(lambda d: d in DATATYPES))
def test_to_array(data: Any, datatype: str) -> None:
    if not isinstance(data, list):
        data = [data]
    try:
        array = to_array(data, datatype, "x")
    except BadRequestError:
        return
    assert array.dtype == DATATYPES[datatype]


@FUZZ
@given(st.text(max_size=40) | st.none(), st.dictionaries(st.just("timeout_ms"), scalars))
def test_timeout_and_request_id(header: str | None, parameters: dict[str, Any]) -> None:
    try:
        value = timeout_ms(header, parameters, default=1000, maximum=60_000)
    except BadRequestError:
        pass
    else:
        assert 1 <= value <= 60_000
    rid = request_id(header)
    assert rid is None or rid == header


def _metadata(model_repo: Path, name: str) -> ModelMetadata:
    return ModelRepository(model_repo).load(name).metadata


tensor_json = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["image", "history", "latent", "label", ""]) | json_values,
        "datatype": datatype_names | json_values,
        "shape": st.lists(st.integers(min_value=-1, max_value=9), max_size=5) | json_values,
        "data": st.lists(st.floats(width=32) | st.integers(-300, 300), max_size=70) | json_values,
    },
)
infer_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor_json, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)}), max_size=3)
        | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["seed", "count", "label", "timeout_ms", "x"]),
            json_values,
            max_size=4,
        ),
    },
)


@pytest.mark.parametrize("model", ["digits-cnn", "sunspots-lstm", "digits-gan"])
def test_parse_infer(model_repo: Path, model: str) -> None:
    metadata = _metadata(model_repo, model)

    @FUZZ
    @given(infer_docs | json_values)
    def check(doc: Any) -> None:
        # Through JSON and back: exactly what a client can send.
        doc = json.loads(json.dumps(doc))
        try:
            parsed = parse_infer(doc, metadata, max_rows=16)
        except (BadRequestError, InvalidInputError):
            return
        for array in parsed.inputs.values():
            assert array.shape[0] <= 16 if array.ndim else True

    check()


# Regressions found by the fuzzers above (fixed in codec.py / oip_codec.py).


def test_zero_size_tensor_with_huge_dimensions_is_refused() -> None:
    with pytest.raises(BadEntryError, match="too large"):
        decode_tensor({"datatype": "UINT32", "data": b"", "shape": [0, 2**31, 2**31]}, "x")
    with pytest.raises(BadEntryError, match="too large"):
        decode_tensor({"datatype": "FP32", "data": b"", "shape": [0, 2**64 - 1]}, "x")


def test_zero_size_json_tensor_with_huge_dimensions_is_refused(model_repo: Path) -> None:
    metadata = _metadata(model_repo, "sunspots-lstm")
    doc = {
        "inputs": [{"name": "history", "datatype": "FP32", "shape": [0, 2**62, 2**62], "data": []}]
    }
    with pytest.raises(BadRequestError, match="too large"):
        parse_infer(doc, metadata, max_rows=16)


@pytest.mark.parametrize("data", [[False], [True, 3], [2**63]])
def test_unsigned_64_bit_range_check(data: list[Any]) -> None:
    try:
        array = to_array(data, "UINT64", "x")
    except BadRequestError:
        return
    assert array.dtype == np.dtype("<u8")
