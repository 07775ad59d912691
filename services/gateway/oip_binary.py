"""The binary tensor data extension of OIP v2 REST (Triton's and KServe's
``binary_tensor_data``), pure, no I/O: the body split into its JSON header and the raw
tensor bytes, raw bytes → numpy (``frombuffer``, no JSON or list detour), and the raw
bytes of binary outputs.

A body with header ``Inference-Header-Content-Length: N`` (N > 0) is N bytes of JSON,
then the bytes of every input whose ``parameters`` carry ``binary_data_size``, in input
order, little-endian, row-major, without padding (BOOL: one byte, 0 or 1). Without the
header, or with N = 0 (as Triton), the whole body is JSON. A response that carries a
binary output is framed the same way (``oip_codec.encode_outputs``,
``responses.BinaryTensors``).
BYTES tensors (4-byte length prefix per element) are not part of
``services.contract.codec.DATATYPES``: no Axon model takes or returns strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.contract.codec import DATATYPES
from services.gateway.errors import BadRequestError

HEADER_LENGTH = b"inference-header-content-length"
"""Request and response header: bytes of JSON at the start of the body."""

BINARY_DATA_SIZE = "binary_data_size"
"""Tensor parameter (request input, response output): bytes of its raw data."""

BINARY_DATA = "binary_data"
"""Requested-output parameter: true = return this output as raw bytes."""

BINARY_DATA_OUTPUT = "binary_data_output"
"""Request parameter: true = every output as raw bytes unless it says ``binary_data``."""

_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    """``body`` → (its JSON header, the binary tensor data after it: a view, no copy).

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None when
    absent); absent or 0 means the body is JSON only: no binary data (None)."""
    if header_length is None:
        return body, None
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()):
        raise BadRequestError(
            "header Inference-Header-Content-Length: must be a non-negative integer "
            f"(bytes of JSON at the start of the body), got {header_length[:40]!r}"
        )
    length = int(value)
    if length == 0:
        return body, None
    if length > len(body):
        raise BadRequestError(
            f"header Inference-Header-Content-Length: {length} bytes of JSON, but the "
            f"body has only {len(body)} bytes"
        )
    return body[:length], memoryview(body)[length:]


class BinarySection:
    """The binary tensor data of one request, handed out to the inputs in order."""

    def __init__(self, data: memoryview | bytes, *, framed: bool) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self._framed = framed
        """The request had a positive Inference-Header-Content-Length."""

    def take(self, size: int, where: str) -> memoryview:
        """The next ``size`` bytes, for the input described by ``where``."""
        if size and not self._framed:
            raise BadRequestError(
                f"{where}.parameters.{BINARY_DATA_SIZE}: binary data needs the header "
                "Inference-Header-Content-Length (bytes of JSON before the tensor bytes)"
            )
        left = len(self._data) - self._offset
        if size > left:
            raise BadRequestError(
                f"{where}.parameters.{BINARY_DATA_SIZE}: {size} bytes, but only {left} "
                "bytes of binary data are left after the JSON header and the inputs before"
            )
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def finish(self) -> None:
        """Every byte after the JSON header must belong to an input."""
        extra = len(self._data) - self._offset
        if extra:
            raise BadRequestError(
                f"body: {extra} bytes after the JSON header and the inputs' "
                f"{BINARY_DATA_SIZE} ({self._offset} bytes in all); the sizes must add up "
                "to the binary data exactly"
            )


def input_binary_size(parameters: object, where: str, *, has_data: bool) -> int | None:
    """An input's ``parameters``: its ``binary_data_size`` (None: JSON ``data``)."""
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise BadRequestError(f"{where}.parameters: must be an object")
    for key in _SHARED_MEMORY:
        if key in parameters:
            raise BadRequestError(
                f"{where}.parameters.{key}: the shared memory extension is not supported; "
                f"send the tensor as JSON data or with {BINARY_DATA_SIZE}"
            )
    if BINARY_DATA_SIZE not in parameters:
        return None
    size = parameters[BINARY_DATA_SIZE]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequestError(
            f"{where}.parameters.{BINARY_DATA_SIZE}: must be a non-negative integer "
            f"(bytes), got {size!r}"
        )
    if has_data:
        raise BadRequestError(
            f"{where}: both data and parameters.{BINARY_DATA_SIZE}; an input is sent "
            "either as JSON data or as binary data, not both"
        )
    return size


def expected_size(datatype: str, shape: Sequence[int], size: int, where: str) -> None:
    """``binary_data_size`` must be prod(shape) × the datatype's item size."""
    itemsize = DATATYPES[datatype].itemsize
    needed = math.prod(shape) * itemsize
    if size != needed:
        raise BadRequestError(
            f"{where}.parameters.{BINARY_DATA_SIZE}: {size} bytes, shape {list(shape)} of "
            f"{datatype} needs {needed} ({itemsize} per value)"
        )


def from_bytes(
    raw: memoryview, datatype: str, shape: Sequence[int], where: str
) -> np.ndarray[Any, Any]:
    """Raw little-endian row-major bytes (their count already checked) → array."""
    dtype = DATATYPES[datatype]
    if dtype.kind == "b" and len(raw) and int(np.frombuffer(raw, np.uint8).max()) > 1:
        raise BadRequestError(f"{where}: BOOL binary data must be bytes 0 or 1")
    try:
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError):  # e.g. [0, 2**62, 2**62]: no data, impossible shape
        raise BadRequestError(f"{where}.shape: {list(shape)} is too large for an array") from None


def output_binary(parameters: object, where: str, *, default: bool) -> bool:
    """A requested output's ``parameters``: whether it goes back as raw bytes."""
    if parameters is None:
        return default
    if not isinstance(parameters, Mapping):
        raise BadRequestError(f"{where}.parameters: must be an object")
    for key in (*_SHARED_MEMORY, "classification"):
        if key in parameters:
            extension = "classification" if key == "classification" else "shared memory"
            raise BadRequestError(
                f"{where}.parameters.{key}: the {extension} extension is not supported"
            )
    return flag(parameters, BINARY_DATA, f"{where}.parameters", default=default)


def flag(parameters: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    """A boolean parameter (``binary_data``, ``binary_data_output``) of the
    ``parameters`` object at ``where``."""
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequestError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def raw_output(array: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    """``array`` as the contiguous little-endian array whose buffer is sent as is."""
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype])
