"""OIP v2 infer bodies ↔ numpy, both forms, pure (no I/O): requests as JSON tensors or
with the binary tensor data extension, responses back to arrays by output name.

Binary form (as Triton's and KServe's clients send it): the header
``Inference-Header-Content-Length: N`` says the body starts with N bytes of JSON, in
which each binary tensor carries ``parameters.binary_data_size`` instead of ``data``;
the raw bytes of those tensors follow, in tensor order, little-endian, row-major, no
padding (BOOL one byte 0 or 1). A response with binary outputs is framed the same way.

Only numpy and the standard library: the package can be copied into another project.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
"""OIP datatype name → little-endian numpy dtype (the gateway's own table; a unit test
keeps the two equal)."""

_BY_KIND = {(dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items()}

HEADER_LENGTH = "inference-header-content-length"
"""Request and response header: bytes of JSON at the start of the body."""

Scalar = bool | int | float | str
"""A request parameter value."""


class ResponseFormatError(ValueError):
    """A response body that is not what the protocol says (the server's fault, or a
    proxy's: never the caller's)."""


@dataclass(frozen=True)
class Body:
    """An encoded request: what to send and the headers that describe it."""

    content: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class InferResult:
    """An OIP infer response: ``result["probabilities"]`` is that output as an array.

    Arrays of binary outputs are read-only views on the response body (``.copy()`` to
    change one); JSON outputs are fresh arrays. Either way dtype and shape are the
    output's OIP datatype and shape."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.outputs[name]


def datatype_of(array: np.ndarray[Any, Any], where: str = "array") -> str:
    """The OIP datatype name of ``array``'s dtype (``TypeError`` for strings, objects,
    complex numbers: no OIP numeric type holds them)."""
    try:
        return _BY_KIND[(array.dtype.kind, array.dtype.itemsize)]
    except KeyError:
        raise TypeError(
            f"{where}: dtype {array.dtype} has no Open Inference Protocol datatype "
            f"(use one of {', '.join(DATATYPES)}, e.g. np.float32)"
        ) from None


def _wire_array(array: np.ndarray[Any, Any], where: str) -> tuple[str, np.ndarray[Any, Any]]:
    """(datatype, ``array`` as the contiguous little-endian array that is sent)."""
    array = np.asarray(array)
    datatype = datatype_of(array, where)
    return datatype, np.ascontiguousarray(array, dtype=DATATYPES[datatype])


def encode_infer(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    binary: bool = True,
    id: str | None = None,
    parameters: Mapping[str, Scalar] | None = None,
    outputs: Sequence[str] | None = None,
) -> Body:
    """An OIP infer request body for ``inputs`` (name → array; the datatype comes from
    the dtype). ``binary``: tensors as raw bytes after a JSON header, and every output
    asked back as raw bytes (``binary_data_output``); else all JSON (flat ``data``).
    ``outputs``: the output names to return (None: all)."""
    tensors: list[dict[str, Any]] = []
    raw: list[np.ndarray[Any, Any]] = []
    for name, value in inputs.items():
        datatype, array = _wire_array(value, f"inputs[{name!r}]")
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": [int(d) for d in array.shape],
        }
        if binary:
            tensor["parameters"] = {"binary_data_size": array.nbytes}
            raw.append(array)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {}
    if id is not None:
        doc["id"] = id
    doc["inputs"] = tensors
    request_parameters = dict(parameters or {})
    if binary:
        request_parameters["binary_data_output"] = True
    if request_parameters:
        doc["parameters"] = request_parameters
    if outputs is not None:
        doc["outputs"] = [{"name": name} for name in outputs]
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not binary:
        return Body(head, {"content-type": "application/json"})
    return Body(
        b"".join([head, *(array.data for array in raw)]),
        {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))},
    )


def split_body(content: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """A response body → (its JSON, the binary data after it: a view, no copy)."""
    if header_length is None:
        return content, memoryview(b"")
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > len(content):
        raise ResponseFormatError(
            f"header Inference-Header-Content-Length: {header_length[:40]!r} is not a "
            f"byte count within the {len(content)}-byte body"
        )
    length = int(value) or len(content)  # 0: JSON only, as Triton
    return content[:length], memoryview(content)[length:]


def decode_infer(content: bytes, header_length: str | None = None) -> InferResult:
    """An OIP infer response body (and its ``Inference-Header-Content-Length`` header,
    None when absent) → arrays by output name."""
    head, data = split_body(content, header_length)
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResponseFormatError(f"infer response: not valid JSON ({exc})") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("outputs"), list):
        raise ResponseFormatError("infer response: expected a JSON object with 'outputs'")
    offset = 0
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(doc["outputs"]):
        name, array, offset = _decode_tensor(tensor, f"outputs[{index}]", data, offset)
        outputs[name] = array
    if offset != len(data):
        raise ResponseFormatError(
            f"infer response: {len(data) - offset} bytes of binary data belong to no output"
        )
    model_id = doc.get("id")
    return InferResult(
        model_name=str(doc.get("model_name", "")),
        model_version=str(doc.get("model_version", "")),
        outputs=outputs,
        id=model_id if isinstance(model_id, str) else None,
        parameters=dict(doc.get("parameters") or {}),
    )


def _decode_tensor(
    tensor: object, where: str, data: memoryview, offset: int
) -> tuple[str, np.ndarray[Any, Any], int]:
    """One output tensor → (name, array, the offset of the next binary tensor)."""
    if not isinstance(tensor, Mapping):
        raise ResponseFormatError(f"{where}: expected an object")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or datatype not in DATATYPES or not isinstance(shape, list):
        raise ResponseFormatError(f"{where}: needs a name, a known datatype and a shape")
    dtype = DATATYPES[str(datatype)]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    try:
        if size is None:
            values = np.asarray(tensor.get("data", []), dtype=dtype)
            return name, values.reshape(shape), offset
        if not isinstance(size, int) or size != math.prod(shape) * dtype.itemsize:
            raise ResponseFormatError(
                f"{where} ({name}): binary_data_size {size!r} does not fit shape {shape} "
                f"of {datatype}"
            )
        if offset + size > len(data):
            raise ResponseFormatError(
                f"{where} ({name}): {size} bytes, only {len(data) - offset} left in the body"
            )
        raw = data[offset : offset + size]
        return name, np.frombuffer(raw, dtype=dtype).reshape(shape), offset + size
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ResponseFormatError):
            raise
        raise ResponseFormatError(f"{where} ({name}): data does not fit {shape} ({exc})") from None
