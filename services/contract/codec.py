"""Tensor and message codec: msgpack, raw little-endian bytes, OIP datatype names.

A tensor travels as ``{"datatype": "FP32", "shape": [2, 1, 8, 8], "data": <bytes>}``
where ``data`` is the C-order little-endian buffer. A request body is
``{"inputs": {name: tensor}, "parameters": {str: scalar}}``; a reply is
``{"id", "ok": true, "outputs": {name: tensor}}`` or
``{"id", "ok": false, "error": {"code", "message"}}``. Nothing is ever pickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from services.contract.errors import BadEntryError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""Open Inference Protocol datatype name → little-endian numpy dtype."""

_KINDS = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}

Scalar = bool | int | float | str | None
"""Type of a request parameter value."""


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """OIP datatype name of ``array``'s dtype; ``BadEntryError`` if it has none."""
    try:
        return _KINDS[(array.dtype.kind, array.dtype.itemsize)]
    except KeyError:
        raise BadEntryError(f"dtype {array.dtype} has no Open Inference Protocol name") from None


def encode_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """``array`` → msgpack-ready mapping with its raw little-endian C-order bytes."""
    datatype = datatype_of(array)
    data = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    return {"datatype": datatype, "shape": [int(d) for d in array.shape], "data": data}


def decode_tensor(obj: object, name: str) -> np.ndarray[Any, Any]:
    """Inverse of ``encode_tensor``; checks the byte count against shape and datatype.

    The returned array is a read-only view on the message bytes.
    """
    if not isinstance(obj, Mapping):
        raise BadEntryError(f"tensor {name!r}: expected a map with datatype, shape, data")
    datatype, shape, data = obj.get("datatype"), obj.get("shape"), obj.get("data")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadEntryError(
            f"tensor {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    if (
        not isinstance(shape, list | tuple)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) > 8
    ):
        raise BadEntryError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if not isinstance(data, bytes):
        raise BadEntryError(f"tensor {name!r}: data must be raw bytes")
    dtype = DATATYPES[datatype]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise BadEntryError(
            f"tensor {name!r}: {len(data)} bytes of data, shape {list(shape)} "
            f"of {datatype} needs {expected}"
        )
    try:
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError):  # e.g. [0, 2**62, 2**62]: no data, impossible shape
        raise BadEntryError(
            f"tensor {name!r}: shape {list(shape)} is too large for an array"
        ) from None


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request body: named input tensors plus scalar parameters."""

    inputs: dict[str, np.ndarray[Any, Any]]
    parameters: dict[str, Scalar] = field(default_factory=dict)


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Scalar] | None = None,
) -> bytes:
    """Encode a request body (the ``body`` field of a stream entry)."""
    message = {
        "inputs": {name: encode_tensor(array) for name, array in inputs.items()},
        "parameters": dict(parameters or {}),
    }
    return _pack(message)


def decode_request(body: bytes) -> InferenceRequest:
    """Decode a request body; ``BadEntryError`` says what is malformed."""
    message = _unpack(body, "request body")
    inputs = message.get("inputs", {})
    parameters = message.get("parameters", {})
    if not isinstance(inputs, Mapping) or not all(isinstance(k, str) for k in inputs):
        raise BadEntryError("request body: 'inputs' must map input names to tensors")
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise BadEntryError("request body: 'parameters' must map names to scalars")
    for key, value in parameters.items():
        if not isinstance(value, bool | int | float | str | type(None)):
            raise BadEntryError(f"request body: parameter {key!r} must be a scalar")
    decoded = {name: decode_tensor(tensor, name) for name, tensor in inputs.items()}
    return InferenceRequest(inputs=decoded, parameters=dict(parameters))


@dataclass(frozen=True)
class ErrorInfo:
    """The ``error`` of a failed reply."""

    code: str
    message: str


@dataclass(frozen=True)
class Reply:
    """One answer on a gateway's reply list."""

    id: str
    ok: bool
    outputs: dict[str, np.ndarray[Any, Any]] | None = None
    error: ErrorInfo | None = None

    @classmethod
    def success(cls, request_id: str, outputs: Mapping[str, np.ndarray[Any, Any]]) -> Reply:
        return cls(id=request_id, ok=True, outputs=dict(outputs))

    @classmethod
    def failure(cls, request_id: str, code: str, message: str) -> Reply:
        return cls(id=request_id, ok=False, error=ErrorInfo(code=str(code), message=message))


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply for RPUSH onto ``axon:r:{gateway_instance}``."""
    message: dict[str, Any] = {"id": reply.id, "ok": reply.ok}
    if reply.ok:
        outputs = reply.outputs or {}
        message["outputs"] = {name: encode_tensor(array) for name, array in outputs.items()}
    else:
        error = reply.error or ErrorInfo(code="internal", message="unknown error")
        message["error"] = {"code": error.code, "message": error.message}
    return _pack(message)


def decode_reply(payload: bytes) -> Reply:
    """Decode a reply popped from a reply list."""
    message = _unpack(payload, "reply")
    request_id, ok = message.get("id"), message.get("ok")
    if not isinstance(request_id, str) or not isinstance(ok, bool):
        raise BadEntryError("reply: 'id' (str) and 'ok' (bool) are required")
    if ok:
        outputs = message.get("outputs")
        if not isinstance(outputs, Mapping):
            raise BadEntryError("reply: 'outputs' must be a map")
        return Reply.success(
            request_id, {str(n): decode_tensor(t, str(n)) for n, t in outputs.items()}
        )
    error = message.get("error")
    if not isinstance(error, Mapping):
        raise BadEntryError("reply: 'error' must be a map")
    return Reply.failure(request_id, str(error.get("code")), str(error.get("message")))


def _pack(message: Mapping[str, Any]) -> bytes:
    packed = msgpack.packb(message, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def _unpack(payload: bytes, what: str) -> Mapping[str, Any]:
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise BadEntryError(f"{what}: not valid msgpack ({exc})") from None
    if not isinstance(message, Mapping):
        raise BadEntryError(f"{what}: expected a map at the top level")
    return message
